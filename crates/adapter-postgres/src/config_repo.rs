//! Community configuration and tier overrides: [`ConfigProvider`] and
//! [`TierOverrideRepo`] on `community_agent_config`.
//!
//! Every write is one statement that also issues the row's next
//! [`ConfigVersion`] (`version = max(version + 1, now)`, `GREATEST` on
//! PostgreSQL, `MAX` on SQLite; a new row gets `max(1, now)`) and returns
//! it, so two writes of a row never issue the same version and a reader
//! can tell which of two reads is newer.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, DbBackend, FromQueryResult, Statement};
use spendgate_domain::{CommunityId, ConfigVersion, Limits, Micros, TierOverrides};
use spendgate_ports::{
    Clock, CommunityConfig, ConfigProvider, RepoError, SystemClock, TierOverrideRepo, Versioned,
};

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
    version: i64,
}

#[derive(Debug, FromQueryResult)]
struct TierRow {
    tier_overrides: Option<String>,
    version: i64,
}

#[derive(Debug, FromQueryResult)]
struct VersionRow {
    version: i64,
}

const SELECT_CONFIG: &str = "SELECT community_id, ai_enabled, monthly_budget_micros, \
     per_user_cap_micros, CAST(pricing_overrides AS TEXT) AS pricing_overrides, version \
     FROM community_agent_config";

/// `{greatest}` is `GREATEST` or `MAX`; `$7` the version of a new row.
const UPSERT_CONFIG: &str = "INSERT INTO community_agent_config (community_id, ai_enabled, \
     monthly_budget_micros, per_user_cap_micros, pricing_overrides, created_at, updated_at, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
     ON CONFLICT (community_id) DO UPDATE SET ai_enabled = excluded.ai_enabled, \
     monthly_budget_micros = excluded.monthly_budget_micros, \
     per_user_cap_micros = excluded.per_user_cap_micros, \
     pricing_overrides = excluded.pricing_overrides, updated_at = excluded.updated_at, \
     version = {greatest}(community_agent_config.version + 1, excluded.version) \
     RETURNING version";

/// A budget change: the limit columns only (a new row gets AI enabled and
/// default pricing), never the AI switch or the pricing.
const SET_LIMITS: &str = "INSERT INTO community_agent_config (community_id, ai_enabled, \
     monthly_budget_micros, per_user_cap_micros, created_at, updated_at, version) \
     VALUES ($1, $2, $3, $4, $5, $5, $6) \
     ON CONFLICT (community_id) DO UPDATE SET \
     monthly_budget_micros = excluded.monthly_budget_micros, \
     per_user_cap_micros = excluded.per_user_cap_micros, updated_at = excluded.updated_at, \
     version = {greatest}(community_agent_config.version + 1, excluded.version) \
     RETURNING version";

/// A new row gets default limits with AI disabled.
const UPSERT_TIERS: &str = "INSERT INTO community_agent_config (community_id, tier_overrides, \
     created_at, updated_at, version) VALUES ($1, $2, $3, $3, $4) \
     ON CONFLICT (community_id) DO UPDATE SET tier_overrides = excluded.tier_overrides, \
     updated_at = excluded.updated_at, \
     version = {greatest}(community_agent_config.version + 1, excluded.version) \
     RETURNING version";

const CLEAR_TIERS: &str = "UPDATE community_agent_config SET tier_overrides = NULL, \
     updated_at = $1, version = {greatest}(version + 1, $2) WHERE community_id = $3 \
     RETURNING version";

fn version(community: &str, value: i64) -> Result<ConfigVersion, RepoError> {
    ConfigVersion::new(value).map_err(|e| RepoError::BadData {
        community: community.to_owned(),
        field: "version".to_owned(),
        reason: e.to_string(),
    })
}

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
            version: version(&id, self.version)?,
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

    /// `sql` with `{greatest}` as this backend spells it.
    fn versioned(&self, sql: &str) -> String {
        let greatest = match self.db.get_database_backend() {
            DbBackend::Postgres => "GREATEST",
            _ => "MAX",
        };
        sql.replace("{greatest}", greatest)
    }

    /// Now, and the version a new row written now gets.
    fn stamp(&self) -> Result<(i64, ConfigVersion), RepoError> {
        let now = self.clock.now();
        let first = ConfigVersion::ZERO
            .next(now)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        Ok((now.as_millis(), first))
    }

    /// Runs a write returning the row's version; `None` when it wrote no
    /// row.
    async fn write(
        &self,
        community: &CommunityId,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<Option<ConfigVersion>, RepoError> {
        VersionRow::find_by_statement(self.statement(&self.versioned(sql), values))
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map(|row| version(community.as_str(), row.version))
            .transpose()
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
    async fn upsert(&self, config: &CommunityConfig) -> Result<ConfigVersion, RepoError> {
        let (budget, cap) = limit_columns(&config.limits)?;
        let pricing = pricing_overrides_json(&config.pricing_overrides)?;
        let (now, first) = self.stamp()?;
        let values = vec![
            config.community.as_str().into(),
            config.ai_enabled.into(),
            budget.into(),
            cap.into(),
            pricing.into(),
            now.into(),
            first.get().into(),
        ];
        self.write(&config.community, UPSERT_CONFIG, values)
            .await?
            .ok_or_else(|| RepoError::Unavailable("the upsert returned no row".into()))
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
    ) -> Result<ConfigVersion, RepoError> {
        let (budget, cap) = limit_columns(&limits)?;
        let (now, first) = self.stamp()?;
        let values = vec![
            community.as_str().into(),
            true.into(),
            budget.into(),
            cap.into(),
            now.into(),
            first.get().into(),
        ];
        self.write(community, SET_LIMITS, values)
            .await?
            .ok_or_else(|| RepoError::Unavailable("the upsert returned no row".into()))
    }
}

/// The limit columns; `Micros` cannot be negative, re-checked here so that
/// no negative ever reaches SQL whatever the type becomes.
fn limit_columns(limits: &Limits) -> Result<(i64, Option<i64>), RepoError> {
    let budget = limits.limit.get();
    let cap = limits.per_user_cap.map(Micros::get);
    if budget < 0 || cap.is_some_and(|c| c < 0) {
        return Err(RepoError::InvalidInput(
            "budget and per-user cap must not be negative".into(),
        ));
    }
    Ok((budget, cap))
}

#[async_trait]
impl TierOverrideRepo for SqlConfigRepo {
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn tier_overrides(
        &self,
        community: &CommunityId,
    ) -> Result<Versioned<TierOverrides>, RepoError> {
        let sql = format!(
            "SELECT CAST({TIER_OVERRIDES} AS TEXT) AS {TIER_OVERRIDES}, version \
             FROM community_agent_config WHERE community_id = $1"
        );
        let row = TierRow::find_by_statement(self.statement(&sql, vec![community.as_str().into()]))
            .one(&self.db)
            .await
            .map_err(repo_error)?;
        match row {
            Some(row) => Ok(Versioned {
                value: parse_tier_overrides(community.as_str(), row.tier_overrides.as_deref())?,
                version: version(community.as_str(), row.version)?,
            }),
            None => Ok(Versioned {
                value: TierOverrides::new(),
                version: ConfigVersion::ZERO,
            }),
        }
    }

    /// A non-empty map replaces the column, creating the community's row
    /// with default limits (AI disabled) when it has none; an empty map sets
    /// the column to `NULL` on an existing row and creates no row
    /// (returning [`ConfigVersion::ZERO`]). Either way `updated_at` is
    /// stamped from the repository's clock and the row's next version
    /// issued, and [`ConfigProvider::upsert`] leaves the overrides alone.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_tier_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<ConfigVersion, RepoError> {
        let (now, first) = self.stamp()?;
        let written = if overrides.is_empty() {
            let values = vec![now.into(), first.get().into(), community.as_str().into()];
            self.write(community, CLEAR_TIERS, values).await?
        } else {
            let values = vec![
                community.as_str().into(),
                tier_overrides_json(overrides).into(),
                now.into(),
                first.get().into(),
            ];
            self.write(community, UPSERT_TIERS, values).await?
        };
        Ok(written.unwrap_or(ConfigVersion::ZERO))
    }
}
