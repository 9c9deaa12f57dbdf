//! Community configuration and tier overrides kept in memory.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;
use spendgate_domain::{CommunityId, TierOverrides};
use spendgate_ports::{CommunityConfig, ConfigProvider, RepoError, TierOverrideRepo};

fn poisoned() -> RepoError {
    RepoError::Unavailable("memory repository lock poisoned".into())
}

/// A [`ConfigProvider`] over a map.
#[derive(Debug, Default)]
pub struct MemoryConfig {
    configs: RwLock<BTreeMap<CommunityId, CommunityConfig>>,
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

    async fn upsert(&self, config: &CommunityConfig) -> Result<(), RepoError> {
        let mut configs = self.configs.write().map_err(|_| poisoned())?;
        configs.insert(config.community.clone(), config.clone());
        Ok(())
    }
}

/// A [`TierOverrideRepo`] over a map; communities not set have none.
#[derive(Debug, Default)]
pub struct MemoryTierOverrides {
    overrides: RwLock<BTreeMap<CommunityId, TierOverrides>>,
}

impl MemoryTierOverrides {
    /// Replaces a community's overrides.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] if the lock was poisoned.
    pub fn set(&self, community: CommunityId, overrides: TierOverrides) -> Result<(), RepoError> {
        let mut map = self.overrides.write().map_err(|_| poisoned())?;
        map.insert(community, overrides);
        Ok(())
    }
}

#[async_trait]
impl TierOverrideRepo for MemoryTierOverrides {
    async fn tier_overrides(&self, community: &CommunityId) -> Result<TierOverrides, RepoError> {
        let map = self.overrides.read().map_err(|_| poisoned())?;
        Ok(map.get(community).cloned().unwrap_or_default())
    }

    async fn set_tier_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<(), RepoError> {
        self.set(community.clone(), overrides.clone())
    }
}
