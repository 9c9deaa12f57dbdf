//! SeaORM entities of the tables the migrations create.
//!
//! Timestamps are `i64` milliseconds since the Unix epoch (UTC); money is
//! `i64` micro-USD; JSON override columns are `JSONB` on PostgreSQL and
//! JSON text on SQLite. The repositories turn rows into domain types and
//! validate every value read back.

pub mod agent_usage_log;
pub mod community_agent_config;
pub mod finalize_outbox;
pub mod reconciliation_queue;
