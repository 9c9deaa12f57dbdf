//! Community configuration and tier overrides kept in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, ConfigVersion, Limits, TierOverrides};
use spendgate_ports::{
    Clock, CommunityConfig, ConfigProvider, RepoError, SystemClock, TierOverrideRepo, Versioned,
};

fn poisoned() -> RepoError {
    RepoError::Unavailable("memory repository lock poisoned".into())
}

/// The version a write at the clock's `now` issues after `previous`.
fn next_version(clock: &dyn Clock, previous: ConfigVersion) -> Result<ConfigVersion, RepoError> {
    previous
        .next(clock.now())
        .map_err(|e| RepoError::InvalidInput(e.to_string()))
}

/// A [`ConfigProvider`] over a map. Each upsert issues the community's
/// next [`ConfigVersion`] from the clock ([`SystemClock`] by default), so
/// a store or cache that outlives this process still takes its writes.
pub struct MemoryConfig {
    clock: Arc<dyn Clock>,
    configs: RwLock<BTreeMap<CommunityId, CommunityConfig>>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for MemoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConfig").finish_non_exhaustive()
    }
}

impl MemoryConfig {
    /// An empty configuration issuing versions from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            configs: RwLock::default(),
        }
    }
}

#[async_trait]
impl ConfigProvider for MemoryConfig {
    async fn active_communities(&self) -> Result<Vec<CommunityConfig>, RepoError> {
        let configs = self.configs.read().map_err(|_| poisoned())?;
        Ok(configs.values().filter(|c| c.ai_enabled).cloned().collect())
    }

    async fn community(
        &self,
        community: &CommunityId,
    ) -> Result<Option<CommunityConfig>, RepoError> {
        let configs = self.configs.read().map_err(|_| poisoned())?;
        Ok(configs.get(community).cloned())
    }

    async fn upsert(&self, config: &CommunityConfig) -> Result<ConfigVersion, RepoError> {
        let mut configs = self.configs.write().map_err(|_| poisoned())?;
        let previous = configs
            .get(&config.community)
            .map_or(ConfigVersion::ZERO, |c| c.version);
        let version = next_version(self.clock.as_ref(), previous)?;
        let stored = CommunityConfig {
            version,
            ..config.clone()
        };
        configs.insert(config.community.clone(), stored);
        Ok(version)
    }

    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
    ) -> Result<ConfigVersion, RepoError> {
        let mut configs = self.configs.write().map_err(|_| poisoned())?;
        let mut config = configs
            .get(community)
            .cloned()
            .unwrap_or_else(|| CommunityConfig {
                community: community.clone(),
                ai_enabled: true,
                limits,
                pricing_overrides: Default::default(),
                version: ConfigVersion::ZERO,
            });
        config.version = next_version(self.clock.as_ref(), config.version)?;
        config.limits = limits;
        let version = config.version;
        configs.insert(community.clone(), config);
        Ok(version)
    }
}

/// A [`TierOverrideRepo`] over a map; communities not set have none. Each
/// write issues the community's next version from the clock, like
/// [`MemoryConfig`] (whose versions it does not share).
pub struct MemoryTierOverrides {
    clock: Arc<dyn Clock>,
    overrides: RwLock<BTreeMap<CommunityId, Versioned<TierOverrides>>>,
}

impl Default for MemoryTierOverrides {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for MemoryTierOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTierOverrides")
            .finish_non_exhaustive()
    }
}

impl MemoryTierOverrides {
    /// No overrides, versions issued from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            overrides: RwLock::default(),
        }
    }

    /// Replaces a community's overrides, returning the version issued.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] if the lock was poisoned.
    pub fn set(
        &self,
        community: CommunityId,
        overrides: TierOverrides,
    ) -> Result<ConfigVersion, RepoError> {
        let mut map = self.overrides.write().map_err(|_| poisoned())?;
        let previous = map
            .get(&community)
            .map_or(ConfigVersion::ZERO, |v| v.version);
        let version = next_version(self.clock.as_ref(), previous)?;
        map.insert(
            community,
            Versioned {
                value: overrides,
                version,
            },
        );
        Ok(version)
    }
}

#[async_trait]
impl TierOverrideRepo for MemoryTierOverrides {
    async fn tier_overrides(
        &self,
        community: &CommunityId,
    ) -> Result<Versioned<TierOverrides>, RepoError> {
        let map = self.overrides.read().map_err(|_| poisoned())?;
        Ok(map.get(community).cloned().unwrap_or(Versioned {
            value: TierOverrides::new(),
            version: ConfigVersion::ZERO,
        }))
    }

    async fn set_tier_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<ConfigVersion, RepoError> {
        self.set(community.clone(), overrides.clone())
    }
}

#[cfg(test)]
mod tests {
    use spendgate_domain::{Limits, Micros, Timestamp};

    use super::*;
    use crate::ManualClock;

    fn config(limit: i64) -> CommunityConfig {
        CommunityConfig {
            community: CommunityId::parse("guild").unwrap(),
            ai_enabled: true,
            limits: Limits::new(Micros::new(limit).unwrap()),
            pricing_overrides: Default::default(),
            version: ConfigVersion::ZERO,
        }
    }

    #[tokio::test]
    async fn every_upsert_issues_a_greater_version_and_reads_return_it() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(5_000).unwrap()));
        let repo = MemoryConfig::with_clock(clock.clone());
        let first = repo.upsert(&config(1)).await.unwrap();
        assert_eq!(first.get(), 5_000);
        let second = repo.upsert(&config(2)).await.unwrap();
        assert_eq!(second.get(), 5_001, "same instant: one more");
        clock.advance(10_000).unwrap();
        assert_eq!(repo.upsert(&config(3)).await.unwrap().get(), 15_000);
        let read = repo.community(&config(0).community).await.unwrap().unwrap();
        assert_eq!(
            (read.version.get(), read.limits),
            (15_000, config(3).limits)
        );
    }
}
