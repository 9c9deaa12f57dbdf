//! spendgate's [`BudgetStore`](spendgate_ports::BudgetStore) on Redis and
//! Redis Cluster.
//!
//! This crate is an adapter: `app -> adapters -> ports -> domain`. It
//! implements the port with one Lua script per operation (the scripts live
//! in `lua/` at the repository root and are composed from the parts in
//! `lua/include/` and `lua/inline/` and embedded at build time), so
//! every reserve and every finalize is one atomic round trip on one Cluster
//! slot. It behaves exactly like
//! [`CommunityBudget`](spendgate_domain::CommunityBudget) run per community;
//! time is always the `now` the caller passes, never Redis' clock or key
//! TTLs.
//!
//! * [`RedisBudgetStore`] is generic over the connection: use
//!   [`RedisBudgetStore::connect`] (standalone, reconnecting
//!   `ConnectionManager`) or [`RedisBudgetStore::connect_cluster`]. Both
//!   refuse a server whose `maxmemory-policy` may evict a key without a
//!   TTL (`allkeys-*`), and load the scripts on every master.
//!   [`RedisBudgetStore::connect_with`] and
//!   [`RedisBudgetStore::connect_cluster_with`] take [`ConnectOptions`]:
//!   CA and client certificate files for `rediss://` ([`TlsFiles`]; TLS
//!   through rustls needs the `tls` feature, off by default), and an
//!   optional wait for replicas after each budget write ([`ReplicaWait`],
//!   off by default; its design, failure outcome and cost are documented
//!   on [`ReplicaWait`]).
//! * [`RedisTierCache`] implements the
//!   [`TierCache`](spendgate_ports::TierCache) port on one string per
//!   community (`SET … PX`, `GET`, `DEL`), over the same connections; its
//!   entries expire by their Redis TTL.
//! * [`RedisLease`] implements the [`Lease`](spendgate_ports::Lease) port
//!   (singleton background jobs) on one string per lease, expiring by its
//!   Redis TTL, over the same connections.
//! * [`RedisIdempotency`] implements the
//!   [`IdempotencyStore`](spendgate_ports::IdempotencyStore) port (the
//!   Cycles protocol's per-request records) on one hash per request on the
//!   tenant's tag, over the same connections; its records expire by their
//!   Redis TTL.
//! * [`keys`] documents the key layout and builds the keys and digests.
//! * [`script`] holds the embedded scripts and their error protocol.

mod codec;
mod connect;
mod connection;
mod error;
mod idempotency;
pub mod keys;
mod lease;
mod replicas;
pub mod script;
mod server_check;
mod store;
mod tier_cache;
mod tls;

pub use connection::ConnectOptions;
pub use replicas::ReplicaWait;
pub use tls::{ClientIdentity, TlsFiles};

pub use idempotency::RedisIdempotency;
pub use lease::RedisLease;
pub use store::{DEFAULT_TIMEOUT, RedisBudgetStore};
pub use tier_cache::RedisTierCache;
