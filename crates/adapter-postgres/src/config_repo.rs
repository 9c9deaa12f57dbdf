//! Community configuration and tier overrides: [`ConfigProvider`] and
//! [`TierOverrideRepo`] on `community_agent_config`.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, Statement,
};
use spendgate_domain::{CommunityId, Limits, Micros, TierOverrides};
use spendgate_ports::{
    Clock, CommunityConfig, ConfigProvider, RepoError, SystemClock, TierOverrideRepo,
};

use crate::entity::community_agent_config::{ActiveModel, Column, Entity};
use crate::error::repo_error;
use crate::overrides::{
    TIER_OVERRIDES, parse_pricing_overrides, parse_tier_overrides, pricing_overrides_json,
    tier_overrides_json,
};

/// Reads and writes `community_agent_config`.
///
/// `updated_at` is maintained by this repository's write statements (on
/// PostgreSQL and SQLite alike) from its [`Clock`]; there is no trigger.
#[derive(Clone)]
pub struct SqlConfigRepo {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqlConfigRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfigRepo").finish_non_exhaustive()
    }
}

/// The columns read for a configuration, JSON as text so that its size is
/// checked before it is parsed.
#[derive(Debug, FromQueryResult)]
struct ConfigRow {
    community_id: String,
    ai_enabled: bool,
    monthly_budget_micros: i64,
    per_user_cap_micros: Option<i64>,
    pricing_overrides: Option<String>,
}

#[derive(Debug, FromQueryResult)]
struct TierRow {
    tier_overrides: Option<String>,
}

const SELECT_CONFIG: &str = "SELECT community_id, ai_enabled, monthly_budget_micros, \
     per_user_cap_micros, CAST(pricing_overrides AS TEXT) AS pricing_overrides \
     FROM community_agent_config";

fn micros(community: &str, field: &str, value: i64) -> Result<Micros, RepoError> {
    Micros::new(value).map_err(|e| RepoError::BadData {
        community: community.to_owned(),
        field: field.to_owned(),
        reason: e.to_string(),
    })
}

impl ConfigRow {
    fn into_config(self) -> Result<CommunityConfig, RepoError> {
        let id = self.community_id;
        let community = CommunityId::parse(id.as_str()).map_err(|e| RepoError::BadData {
            community: id.clone(),
            field: "community_id".into(),
            reason: e.to_string(),
        })?;
        let mut limits = Limits::new(micros(
            &id,
            "monthly_budget_micros",
            self.monthly_budget_micros,
        )?);
        if let Some(cap) = self.per_user_cap_micros {
            limits = limits.with_per_user_cap(micros(&id, "per_user_cap_micros", cap)?);
        }
        let pricing_overrides = parse_pricing_overrides(&id, self.pricing_overrides.as_deref())?;
        Ok(CommunityConfig {
            community,
            ai_enabled: self.ai_enabled,
            limits,
            pricing_overrides,
        })
    }
}

impl SqlConfigRepo {
    /// A repository on `db` (migrated), stamping writes with the system
    /// clock.
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_clock(db, Arc::new(SystemClock))
    }

    /// A repository stamping `updated_at` from `clock`.
    pub fn with_clock(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    fn statement(&self, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }
}

#[async_trait]
impl ConfigProvider for SqlConfigRepo {
    #[tracing::instrument(skip_all, err)]
    async fn active_communities(&self) -> Result<Vec<CommunityConfig>, RepoError> {
        let sql = format!("{SELECT_CONFIG} WHERE ai_enabled = $1");
        let rows = ConfigRow::find_by_statement(self.statement(&sql, vec![true.into()]))
            .all(&self.db)
            .await
            .map_err(repo_error)?;
        let mut configs = rows
            .into_iter()
            .map(ConfigRow::into_config)
            .collect::<Result<Vec<_>, _>>()?;
        // Byte order, whatever the database's collation.
        configs.sort_by(|a, b| a.community.cmp(&b.community));
        Ok(configs)
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn community(
        &self,
        community: &CommunityId,
    ) -> Result<Option<CommunityConfig>, RepoError> {
        let sql = format!("{SELECT_CONFIG} WHERE community_id = $1");
        ConfigRow::find_by_statement(self.statement(&sql, vec![community.as_str().into()]))
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map(ConfigRow::into_config)
            .transpose()
    }

    #[tracing::instrument(skip_all, err, fields(community = %config.community))]
    async fn upsert(&self, config: &CommunityConfig) -> Result<(), RepoError> {
        // `Micros` cannot be negative; re-checked here so that no negative
        // ever reaches SQL whatever the type becomes.
        let budget = config.limits.limit.get();
        let cap = config.limits.per_user_cap.map(Micros::get);
        if budget < 0 || cap.is_some_and(|c| c < 0) {
            return Err(RepoError::InvalidInput(
                "budget and per-user cap must not be negative".into(),
            ));
        }
        let pricing = pricing_overrides_json(&config.pricing_overrides)?;
        let now = self.clock.now().as_millis();
        let row = ActiveModel {
            community_id: Set(config.community.to_string()),
            ai_enabled: Set(config.ai_enabled),
            monthly_budget_micros: Set(budget),
            per_user_cap_micros: Set(cap),
            tier_overrides: NotSet,
            pricing_overrides: Set(Some(pricing)),
            created_at: Set(now),
            updated_at: Set(now),
        };
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::CommunityId)
                    .update_columns([
                        Column::AiEnabled,
                        Column::MonthlyBudgetMicros,
                        Column::PerUserCapMicros,
                        Column::PricingOverrides,
                        Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(repo_error)?;
        Ok(())
    }
}

#[async_trait]
impl TierOverrideRepo for SqlConfigRepo {
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn tier_overrides(&self, community: &CommunityId) -> Result<TierOverrides, RepoError> {
        let sql = format!(
            "SELECT CAST({TIER_OVERRIDES} AS TEXT) AS {TIER_OVERRIDES} \
             FROM community_agent_config WHERE community_id = $1"
        );
        let row = TierRow::find_by_statement(self.statement(&sql, vec![community.as_str().into()]))
            .one(&self.db)
            .await
            .map_err(repo_error)?;
        match row {
            Some(row) => parse_tier_overrides(community.as_str(), row.tier_overrides.as_deref()),
            None => Ok(TierOverrides::new()),
        }
    }

    /// A non-empty map replaces the column, creating the community's row
    /// with default limits (AI disabled) when it has none; an empty map sets
    /// the column to `NULL` on an existing row and creates no row. Either
    /// way `updated_at` is stamped from the repository's clock, and
    /// [`ConfigProvider::upsert`] leaves the overrides alone.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_tier_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<(), RepoError> {
        let now = self.clock.now().as_millis();
        if overrides.is_empty() {
            let sql = format!(
                "UPDATE community_agent_config SET {TIER_OVERRIDES} = NULL, updated_at = $1 \
                 WHERE community_id = $2"
            );
            self.db
                .execute_raw(self.statement(&sql, vec![now.into(), community.as_str().into()]))
                .await
                .map_err(repo_error)?;
            return Ok(());
        }
        let row = ActiveModel {
            community_id: Set(community.to_string()),
            ai_enabled: NotSet,
            monthly_budget_micros: NotSet,
            per_user_cap_micros: NotSet,
            tier_overrides: Set(Some(tier_overrides_json(overrides))),
            pricing_overrides: NotSet,
            created_at: Set(now),
            updated_at: Set(now),
        };
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::CommunityId)
                    .update_columns([Column::TierOverrides, Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(repo_error)?;
        Ok(())
    }
}
