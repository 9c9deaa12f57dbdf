//! spendgate's durable record on PostgreSQL, and on SQLite as the embedded
//! default, through SeaORM.
//!
//! # Place in the workspace
//!
//! An adapter: `app -> adapters -> ports -> domain`. It implements the
//! ports of [`spendgate_ports`] with SQL and speaks only
//! [`spendgate_domain`] types through them; no `DbErr` crosses a port (every
//! database failure becomes a [`RepoError`](spendgate_ports::RepoError) or
//! [`StoreError`](spendgate_ports::StoreError)).
//!
//! # What is here
//!
//! * [`Migrator`], the schema, one migration set for both backends
//!   (`community_agent_config`, `agent_usage_log`, `finalize_outbox`,
//!   row-level security on PostgreSQL, the budget store's `budget_*`
//!   tables, `worker_lease`, `reconciliation_queue` and
//!   `idempotency_record`). Run it with [`connect_and_migrate`] or
//!   `Migrator::up`.
//! * [`entity`], SeaORM entities of the first three tables and of
//!   `reconciliation_queue` (the budget store reads and writes its tables
//!   with hand-written SQL that runs on both backends).
//! * [`SqlConfigRepo`], the [`ConfigProvider`](spendgate_ports::ConfigProvider)
//!   and [`TierOverrideRepo`](spendgate_ports::TierOverrideRepo), with
//!   strict parsing of the override JSON ([`overrides`] documents the
//!   shapes).
//! * [`SqlUsageLog`], the idempotent [`UsageLog`](spendgate_ports::UsageLog),
//!   with look-up of one logged cost per (community, user, key).
//! * [`SqlBudgetStore`], the [`BudgetStore`](spendgate_ports::BudgetStore)
//!   on SQL: the same budget laws as Redis, without Redis.
//! * [`FinalizeOutbox`], the finalize queue
//!   ([`WorkQueue<PendingSettlement>`](spendgate_ports::WorkQueue)):
//!   settlements kept durably until they reach the budget store and the
//!   usage log.
//! * [`SqlReconciliationQueue`], the reconciliation queue
//!   ([`WorkQueue<Handover>`](spendgate_ports::WorkQueue)) on
//!   `reconciliation_queue`: holds whose guard was dropped, kept until the
//!   provider's word on their cost; it shares every queue rule with
//!   [`FinalizeOutbox`].
//! * [`SqlLease`], the [`Lease`](spendgate_ports::Lease) of the singleton
//!   background jobs on `worker_lease`: one upsert takes or renews a lease,
//!   a compare-and-delete gives it up.
//! * [`SqlIdempotency`], the
//!   [`IdempotencyStore`](spendgate_ports::IdempotencyStore) on
//!   `idempotency_record`: one upsert claims a request (a second statement
//!   reads a live record), one update completes it, one delete purges.
//!
//! # Backends
//!
//! The same code runs on PostgreSQL and SQLite; [`connect`] opens either.
//! Timestamps are `BIGINT` milliseconds since the Unix epoch and money is
//! `BIGINT` micro-USD on both. Differences, all inside this crate:
//!
//! * **Row-level security** exists on PostgreSQL only: policies on
//!   `community_agent_config` and `agent_usage_log` restrict a non-owner
//!   session to the rows of `current_setting('app.community_id')`.
//!   **SQLite has no row-level security**; an embedded deployment is one
//!   process trusted with every community, and isolation rests on the
//!   repositories filtering by community.
//! * **Claiming** queue rows (outbox, reconciliation queue) uses `FOR UPDATE SKIP LOCKED` on PostgreSQL
//!   and an `UPDATE … RETURNING` in a `BEGIN IMMEDIATE` transaction on
//!   SQLite.
//! * **Budget store writes** lock the community's row and then read the
//!   hold, marker and counters they concern. On PostgreSQL each write is
//!   one call of its PL/pgSQL function (migration `m20261129_000012`,
//!   with `lock_timeout` from [`StoreTimeouts`]), which applies the
//!   budget rules and writes in the same statement; on SQLite they take an
//!   in-process turn and a `BEGIN IMMEDIATE` transaction applying the
//!   rules in Rust (see [`SqlBudgetStore`]).
//! * **Write transactions** are `BEGIN IMMEDIATE` on SQLite (writers queue
//!   on the busy timeout instead of failing a lock upgrade).

mod budget_store;
mod config_repo;
mod connection;
pub mod entity;
mod error;
mod idempotency;
mod lease;
pub mod migration;
mod outbox;
pub mod overrides;
mod reconciliation;
mod transaction;
mod usage_log;
mod work_queue;

pub use budget_store::{MARKER_CLEANUP_BATCH, REAP_BATCH, SqlBudgetStore, StoreTimeouts};
pub use config_repo::SqlConfigRepo;
pub use connection::{
    ConnectSettings, SQLITE_BUSY_TIMEOUT, connect, connect_and_migrate,
    connect_and_migrate_with_settings, connect_with_settings,
};
pub use idempotency::{CLAIM_ATTEMPTS, SqlIdempotency};
pub use lease::SqlLease;
pub use migration::Migrator;
pub use outbox::FinalizeOutbox;
pub use reconciliation::SqlReconciliationQueue;
pub use usage_log::{MAX_TRACE_ID_LEN, ROWS_PER_STATEMENT, SqlUsageLog};
pub use work_queue::MAX_ERROR_LEN;

/// Re-exported so callers can run [`Migrator`] without depending on
/// `sea-orm-migration` themselves.
pub use sea_orm_migration::MigratorTrait;
