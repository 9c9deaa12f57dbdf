//! The Redis BudgetStore against real servers: the shared contract suite on
//! standalone Redis and on a 3-master Cluster, plus the adapter's own laws
//! (layout, recovery, concurrency, bad input).
//!
//! Servers: `SPENDGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`)
//! and `SPENDGATE_TEST_REDIS_CLUSTER_URLS` (comma-separated, default
//! `redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103`).
//! A test that cannot connect fails, naming the URL it tried; none skips.
//! Some tests start their own `redis-server` on a free port, and
//! `resharding` a 3-master cluster of its own.
//!
//! `tls` (with the `tls` feature) speaks `rediss://` to TLS-only servers
//! with certificates it makes with the `openssl` command; `replica_wait`
//! starts a primary and its replica.
//!
//! `tier_cache` runs the Redis `TierCache` adapter through the same
//! servers, and `idempotency` the shared idempotency suite on the Redis
//! `IdempotencyStore`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

mod all_or_nothing;
mod bad_input;
mod contract;
mod due_index;
mod fixture;
mod header;
mod idempotency;
mod layout;
mod lease;
mod lifecycle;
mod own_cluster;
mod own_redis;
mod reap_split;
mod recovery;
mod replica_wait;
mod resharding;
mod server_check;
mod stress;
mod support;
mod tier_cache;
#[cfg(feature = "tls")]
mod tls;
mod users;
