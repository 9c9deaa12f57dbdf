//! The tier-override cache kept in process memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, ConfigVersion, TierOverrides, Timestamp, Ttl};
use spendgate_ports::{Clock, RepoError, TierCache, Versioned};

type Entries = HashMap<CommunityId, (Timestamp, Versioned<TierOverrides>)>;

/// A [`TierCache`] in one process, expiring entries by the given clock;
/// an unexpired entry is never replaced by an older version.
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
    async fn get(
        &self,
        community: &CommunityId,
    ) -> Result<Option<Versioned<TierOverrides>>, RepoError> {
        let now = self.clock.now();
        let mut entries = self.lock()?;
        match entries.get(community) {
            Some((expires, entry)) if now < *expires => Ok(Some(entry.clone())),
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
        version: ConfigVersion,
        ttl: Ttl,
    ) -> Result<(), RepoError> {
        let now = self.clock.now();
        let expires = now
            .plus(ttl)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let mut entries = self.lock()?;
        let newer_cached = entries
            .get(community)
            .is_some_and(|(until, entry)| now < *until && entry.version > version);
        if !newer_cached {
            let entry = Versioned {
                value: overrides.clone(),
                version,
            };
            entries.insert(community.clone(), (expires, entry));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use spendgate_domain::{AccessLevel, Tier};

    use super::*;
    use crate::ManualClock;

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_entry() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0).unwrap()));
        let cache = MemoryTierCache::new(clock.clone());
        let c = CommunityId::parse("guild").unwrap();
        let v = |n| ConfigVersion::new(n).unwrap();
        let ttl = Ttl::from_millis(60_000).unwrap();
        let newer = TierOverrides::from([(Tier::new(4).unwrap(), AccessLevel::Enterprise)]);
        cache.put(&c, &newer, v(7), ttl).await.unwrap();
        cache
            .put(&c, &TierOverrides::new(), v(6), ttl)
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await.unwrap().unwrap().value, newer);
        cache
            .put(&c, &TierOverrides::new(), v(7), ttl)
            .await
            .unwrap();
        assert!(cache.get(&c).await.unwrap().unwrap().value.is_empty());
        // Once expired, any version is taken.
        clock.advance(60_000).unwrap();
        cache.put(&c, &newer, v(1), ttl).await.unwrap();
        assert_eq!(cache.get(&c).await.unwrap().unwrap().version, v(1));
    }
}
