//! The tier-override cache kept in process memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, TierOverrides, Timestamp, Ttl};
use spendgate_ports::{Clock, RepoError, TierCache};

type Entries = HashMap<CommunityId, (Timestamp, TierOverrides)>;

/// A [`TierCache`] in one process, expiring entries by the given clock.
pub struct MemoryTierCache {
    clock: Arc<dyn Clock>,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for MemoryTierCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTierCache").finish_non_exhaustive()
    }
}

impl MemoryTierCache {
    /// An empty cache whose entries expire by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Entries>, RepoError> {
        self.entries
            .lock()
            .map_err(|_| RepoError::Unavailable("memory tier cache lock poisoned".into()))
    }
}

#[async_trait]
impl TierCache for MemoryTierCache {
    async fn get(&self, community: &CommunityId) -> Result<Option<TierOverrides>, RepoError> {
        let now = self.clock.now();
        let mut entries = self.lock()?;
        match entries.get(community) {
            Some((expires, overrides)) if now < *expires => Ok(Some(overrides.clone())),
            Some(_) => {
                entries.remove(community);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
        ttl: Ttl,
    ) -> Result<(), RepoError> {
        let expires = self
            .clock
            .now()
            .plus(ttl)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        self.lock()?
            .insert(community.clone(), (expires, overrides.clone()));
        Ok(())
    }

    async fn invalidate(&self, community: &CommunityId) -> Result<(), RepoError> {
        self.lock()?.remove(community);
        Ok(())
    }
}
