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
mod connection;
mod error;
mod idempotency;
pub mod keys;
mod lease;
pub mod script;
mod server_check;
mod store;
mod tier_cache;

pub use idempotency::RedisIdempotency;
pub use lease::RedisLease;
pub use store::{DEFAULT_TIMEOUT, RedisBudgetStore};
pub use tier_cache::RedisTierCache;
