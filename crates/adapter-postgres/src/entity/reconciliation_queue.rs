//! A hold handed to reconciliation: its guard was dropped before the call
//! was settled, and the provider's word on its cost is awaited.
#![allow(missing_docs)] // fields are documented on the table; the derive adds undocumented items

use sea_orm::entity::prelude::*;

/// One row of `reconciliation_queue`; unique per (community, user, key).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reconciliation_queue")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub community_id: String,
    pub user_id: String,
    pub idempotency_key: String,
    /// The hold's estimate, micro-USD (CHECK ≥ 0).
    pub estimate_micros: i64,
    pub model_alias: String,
    /// The hold's period, `YYYY-MM`.
    pub period: String,
    /// When the hold was made (ms).
    pub hold_created_at: i64,
    /// When the hold's TTL ends (ms).
    pub hold_expires_at: i64,
    pub trace_id: Option<String>,
    /// When the hold was handed over (ms).
    pub handed_at: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Not claimed before this instant (ms).
    pub next_attempt_at: i64,
    /// A claimer's lease: others skip the row until this instant (ms).
    pub claimed_until: Option<i64>,
    pub last_error: Option<String>,
    /// When the row was queued (ms).
    pub created_at: i64,
    /// When the row became a dead letter (ms); `NULL` while live.
    pub dead_at: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
