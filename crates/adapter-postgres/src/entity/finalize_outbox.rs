//! A settlement kept durably until it reached the budget store and the
//! usage log (the finalize queue).
#![allow(missing_docs)] // fields are documented on the table; the derive adds undocumented items

use sea_orm::entity::prelude::*;

/// One row of `finalize_outbox`; unique per (community, user, key).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "finalize_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub community_id: String,
    pub user_id: String,
    pub idempotency_key: String,
    pub actual_cost_micros: i64,
    pub period: String,
    pub model_alias: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub trace_id: Option<String>,
    pub source: String,
    /// Failed replays so far.
    pub attempts: i32,
    /// Not claimed before this instant (ms).
    pub next_attempt_at: i64,
    /// A claimer's lease: others skip the row until this instant (ms).
    pub claimed_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// The estimate that was held, micro-USD (0 when unknown; CHECK ≥ 0).
    pub estimate_micros: i64,
    /// When the row became a dead letter (ms); `NULL` while live.
    pub dead_at: Option<i64>,
    /// When the settled hold was made, when the caller knew it.
    pub hold_created_at: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
