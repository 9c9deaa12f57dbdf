//! Tier access: which models a community's tier may use, with the
//! community's overrides read through a shared cache.
//!
//! The tier (1–9) is validated before any override is read. Overrides come
//! from the [`TierOverrideRepo`] through a [`TierCache`] (Redis in a
//! deployment with Redis, shared by every instance; memory otherwise). The
//! look-up fails open, in this order: cache, database, the last value this
//! process saw (for a short while), the defaults. A malformed override in
//! the database is a typed error for that community, logged and counted,
//! and never applied in part: the fallback takes over.
//!
//! Overrides are cached with the version of the row they were read from,
//! and a write caches what it wrote with the version it issued; the cache
//! never replaces an entry with an older version, so a read that raced a
//! write cannot put the old overrides back for the cache's TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use spendgate_domain::tier::{access_level, validate_model};
use spendgate_domain::{
    AccessLevel, CommunityId, ConfigVersion, ModelAlias, Tier, TierError, TierOverrides, Timestamp,
    Ttl,
};
use spendgate_ports::{Clock, RepoError, TierCache, TierOverrideRepo, Versioned};

use super::telemetry::{self, TIER_LOOKUPS};

/// Where a tier look-up found the community's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideSource {
    /// The shared cache.
    Cache,
    /// The database (and the cache was refreshed).
    Database,
    /// Cache and database failed: the last value this process saw.
    LastKnown,
    /// Nothing usable: the default tier mapping.
    Defaults,
}

impl OverrideSource {
    fn label(self) -> &'static str {
        match self {
            OverrideSource::Cache => "cache",
            OverrideSource::Database => "database",
            OverrideSource::LastKnown => "last_known",
            OverrideSource::Defaults => "defaults",
        }
    }
}

/// A resolved access level and where its overrides came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierDecision {
    /// The level the tier maps to.
    pub level: AccessLevel,
    /// Where the overrides were read.
    pub source: OverrideSource,
}

/// Why a model was refused for a tier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TierRefusal {
    /// The tier is outside 1–9; no override was consulted.
    #[error("invalid tier: {0}")]
    InvalidTier(#[source] TierError),
    /// The tier's access level does not include the model.
    #[error("access level {level} does not allow model {model}")]
    ModelNotAllowed {
        /// The model asked for.
        model: ModelAlias,
        /// The community's level for the tier.
        level: AccessLevel,
    },
}

/// How long overrides are cached and remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierTimings {
    /// Time to live of entries in the shared cache.
    pub cache_ttl: Ttl,
    /// How long this process keeps using the last value it saw once cache
    /// and database both fail.
    pub last_known_for: Ttl,
}

impl Default for TierTimings {
    /// Cached 5 min; the last known value serves for 1 min.
    fn default() -> Self {
        Self {
            cache_ttl: Ttl::from_millis(300_000).unwrap_or(Ttl::DAY),
            last_known_for: Ttl::from_millis(60_000).unwrap_or(Ttl::DAY),
        }
    }
}

/// Why tier overrides could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TierWriteError {
    /// The database refused or could not take the write; nothing changed.
    #[error("tier overrides not saved: {0}")]
    Database(#[source] RepoError),
}

/// Tier → access level → allowed models, with per-community overrides.
pub struct TierAccess {
    repo: Arc<dyn TierOverrideRepo>,
    cache: Arc<dyn TierCache>,
    clock: Arc<dyn Clock>,
    timings: TierTimings,
    last_known: Mutex<HashMap<CommunityId, (Timestamp, Versioned<TierOverrides>)>>,
}

impl std::fmt::Debug for TierAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierAccess")
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl TierAccess {
    /// Tier access reading `repo` through `cache`.
    pub fn new(
        repo: Arc<dyn TierOverrideRepo>,
        cache: Arc<dyn TierCache>,
        clock: Arc<dyn Clock>,
        timings: TierTimings,
    ) -> Self {
        Self {
            repo,
            cache,
            clock,
            timings,
            last_known: Mutex::new(HashMap::new()),
        }
    }

    /// The access level of `tier` in `community`.
    ///
    /// # Errors
    /// [`TierError::OutOfRange`] for a tier outside 1–9, before any
    /// override is read.
    #[tracing::instrument(skip_all, err, fields(community = %community, tier))]
    pub async fn access_level(
        &self,
        community: &CommunityId,
        tier: i64,
    ) -> Result<TierDecision, TierError> {
        Tier::new(tier)?;
        let (overrides, source) = self.overrides(community).await;
        Ok(TierDecision {
            level: access_level(tier, &overrides)?,
            source,
        })
    }

    /// Checks that `tier` in `community` may use `model`.
    ///
    /// # Errors
    /// [`TierRefusal::InvalidTier`] (no override read),
    /// [`TierRefusal::ModelNotAllowed`].
    pub async fn check_model(
        &self,
        community: &CommunityId,
        tier: i64,
        model: &ModelAlias,
    ) -> Result<TierDecision, TierRefusal> {
        let decision = self
            .access_level(community, tier)
            .await
            .map_err(TierRefusal::InvalidTier)?;
        validate_model(model, decision.level.allowed_aliases()).map_err(|_| {
            TierRefusal::ModelNotAllowed {
                model: model.clone(),
                level: decision.level,
            }
        })?;
        Ok(decision)
    }

    /// The community's overrides and where they were found. Never fails:
    /// cache, database, last known value, defaults.
    pub async fn overrides(&self, community: &CommunityId) -> (TierOverrides, OverrideSource) {
        let (overrides, source) = self.lookup(community).await;
        telemetry::count(TIER_LOOKUPS, "source", source.label());
        (overrides, source)
    }

    async fn lookup(&self, community: &CommunityId) -> (TierOverrides, OverrideSource) {
        match self.cache.get(community).await {
            Ok(Some(cached)) => return (cached.value, OverrideSource::Cache),
            Ok(None) => {}
            Err(error) => tracing::warn!(%community, %error, "tier cache read failed"),
        }
        match self.repo.tier_overrides(community).await {
            Ok(read) => {
                self.cache_put(community, &read.value, read.version).await;
                self.remember(community, &read);
                (read.value, OverrideSource::Database)
            }
            Err(error) => {
                tracing::warn!(%community, %error, "tier overrides unavailable; falling back");
                match self.recall(community) {
                    Some(overrides) => (overrides, OverrideSource::LastKnown),
                    None => (TierOverrides::new(), OverrideSource::Defaults),
                }
            }
        }
    }

    /// Replaces a community's overrides in the database, then caches them
    /// with the version the database issued, so every instance reads the
    /// new value and no read that began before the write can put the old
    /// one back.
    ///
    /// # Errors
    /// [`TierWriteError::Database`]; nothing changed. A cache that cannot
    /// be written is logged: its entry expires within the cache TTL.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    pub async fn set_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<(), TierWriteError> {
        let version = self
            .repo
            .set_tier_overrides(community, overrides)
            .await
            .map_err(TierWriteError::Database)?;
        self.cache_put(community, overrides, version).await;
        self.remember(
            community,
            &Versioned {
                value: overrides.clone(),
                version,
            },
        );
        Ok(())
    }

    async fn cache_put(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
        version: ConfigVersion,
    ) {
        if let Err(error) = self
            .cache
            .put(community, overrides, version, self.timings.cache_ttl)
            .await
        {
            tracing::warn!(%community, %error, "tier cache write failed; its entry expires within its TTL");
        }
    }

    /// Keeps what was just read or written as the last known value,
    /// unless a newer version is kept already (a read that raced a write
    /// can finish after it).
    fn remember(&self, community: &CommunityId, seen: &Versioned<TierOverrides>) {
        let Ok(mut last) = self.last_known.lock() else {
            return;
        };
        if last
            .get(community)
            .is_some_and(|(_, held)| held.version > seen.version)
        {
            return;
        }
        last.insert(community.clone(), (self.clock.now(), seen.clone()));
    }

    fn recall(&self, community: &CommunityId) -> Option<TierOverrides> {
        let now = self.clock.now();
        let last = self.last_known.lock().ok()?;
        let (seen, held) = last.get(community)?;
        let age = now.as_millis().saturating_sub(seen.as_millis());
        (age < self.timings.last_known_for.as_millis()).then(|| held.value.clone())
    }
}
