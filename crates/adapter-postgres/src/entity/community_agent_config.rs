//! A community's agent configuration.
#![allow(missing_docs)] // fields are documented on the table; the derive adds undocumented items

use sea_orm::entity::prelude::*;

/// One row of `community_agent_config`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "community_agent_config")]
pub struct Model {
    /// The community (primary key).
    #[sea_orm(primary_key, auto_increment = false)]
    pub community_id: String,
    /// Whether agent calls are enabled.
    pub ai_enabled: bool,
    /// Limit per period in micro-USD (CHECK ≥ 0).
    pub monthly_budget_micros: i64,
    /// Optional per-user cap in micro-USD (CHECK ≥ 0).
    pub per_user_cap_micros: Option<i64>,
    /// `{"4": "enterprise"}`: tier → access level.
    pub tier_overrides: Option<Json>,
    /// `{"cheap": {"input_per_million": 150000, "output_per_million": 600000}}`.
    pub pricing_overrides: Option<Json>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last update, ms since the epoch; set by every repository write.
    pub updated_at: i64,
    /// The row's configuration version, issued by every repository write
    /// (CHECK ≥ 0).
    pub version: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
