//! One committed cost.
#![allow(missing_docs)] // fields are documented on the table; the derive adds undocumented items

use sea_orm::entity::prelude::*;

/// One row of `agent_usage_log`; unique per (community, user, key,
/// hold_created_at).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_usage_log")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub community_id: String,
    pub user_id: String,
    pub model_alias: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Committed cost, micro-USD.
    pub cost_micros: i64,
    /// The estimate that was held, micro-USD.
    pub estimated_cost_micros: i64,
    pub idempotency_key: String,
    pub trace_id: Option<String>,
    /// `finalize`, `late_finalize` or `reconciliation` (CHECK).
    pub source: String,
    /// `YYYY-MM`, the hold's period.
    pub period: String,
    /// When the cost was committed, ms since the epoch.
    pub created_at: i64,
    /// Which use of the key: when its hold was made, ms since the epoch
    /// (0 for rows logged before uses were told apart).
    pub hold_created_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
