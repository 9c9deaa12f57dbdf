//! The `spendgate` library's integration tests: the services on memory, on
//! SQLite and on real Redis + PostgreSQL, with faults injected at every
//! step of a settlement.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod config_sync;
mod crash;
mod dead_letters;
mod facade;
mod fallback;
mod idempotency;
mod memory;
mod pg_outage;
mod reconciliation;
mod redis_lost;
mod redis_options;
mod redis_postgres;
mod scenarios;
mod sqlite;
mod support;
mod tiers;
mod workers;
