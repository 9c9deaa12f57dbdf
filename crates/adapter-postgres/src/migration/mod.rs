//! The schema, as SeaORM migrations.
//!
//! Every migration runs unchanged on PostgreSQL and SQLite: tables, CHECK
//! constraints and indexes are written with SeaQuery's schema builder, which
//! renders each backend's dialect. The only backend-specific step is
//! [`m20261127_000004_row_level_security`], which enables row-level security
//! on PostgreSQL and does nothing on SQLite (SQLite has no RLS).
//!
//! Timestamps are `BIGINT` milliseconds since the Unix epoch (UTC), the
//! domain's [`spendgate_domain::Timestamp`]: the same type and arithmetic on
//! both backends, compared against the caller's `now`.

use sea_orm_migration::prelude::*;

mod m20261127_000001_create_community_agent_config;
mod m20261127_000002_create_agent_usage_log;
mod m20261127_000003_create_finalize_outbox;
pub mod m20261127_000004_row_level_security;
mod m20261127_000005_create_budget_store;
mod m20261128_000006_finalize_outbox_estimate;
mod m20261128_000007_create_worker_lease;
mod m20261128_000008_create_reconciliation_queue;
mod m20261128_000009_budget_lookup_function;
mod m20261128_000010_budget_hold_due_index;
mod m20261129_000011_create_idempotency_record;
pub(crate) mod m20261129_000012_budget_operation_functions;
mod m20261130_000013_queue_dead_letters;
mod m20261207_000014_usage_log_hold_instance;
mod m20261207_000015_config_versions;
mod m20261207_000016_no_row_for_zero_user_sums;
mod m20261208_000017_queue_item_per_use;

/// All of spendgate's SQL migrations, in order. Run with
/// `Migrator::up(&db, None)`; `Migrator::down(&db, None)` undoes them all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_community_agent_config::Migration),
            Box::new(m20261127_000002_create_agent_usage_log::Migration),
            Box::new(m20261127_000003_create_finalize_outbox::Migration),
            Box::new(m20261127_000004_row_level_security::Migration),
            Box::new(m20261127_000005_create_budget_store::Migration),
            Box::new(m20261128_000006_finalize_outbox_estimate::Migration),
            Box::new(m20261128_000007_create_worker_lease::Migration),
            Box::new(m20261128_000008_create_reconciliation_queue::Migration),
            Box::new(m20261128_000009_budget_lookup_function::Migration),
            Box::new(m20261128_000010_budget_hold_due_index::Migration),
            Box::new(m20261129_000011_create_idempotency_record::Migration),
            Box::new(m20261129_000012_budget_operation_functions::Migration),
            Box::new(m20261130_000013_queue_dead_letters::Migration),
            Box::new(m20261207_000014_usage_log_hold_instance::Migration),
            Box::new(m20261207_000015_config_versions::Migration),
            Box::new(m20261207_000016_no_row_for_zero_user_sums::Migration),
            Box::new(m20261208_000017_queue_item_per_use::Migration),
        ]
    }
}

/// `column >= 0`, as a named CHECK constraint.
pub(crate) fn non_negative<T>(name: &'static str, column: T) -> Check
where
    T: IntoIden + 'static,
{
    Check::named(name, Expr::col(column).gte(0))
}

/// The cost sources `agent_usage_log.source` and `finalize_outbox.source`
/// accept; they mirror [`spendgate_ports::CostSource::as_str`].
pub(crate) const COST_SOURCES: [&str; 3] = ["finalize", "late_finalize", "reconciliation"];
