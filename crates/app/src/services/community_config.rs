//! The community configuration the hot path reads: cached in process, so a
//! reserve does not ask the database each time, and served stale for a
//! while when the database cannot answer.
//!
//! Every entry carries the [`ConfigVersion`] of the row it was read from,
//! and an entry is never replaced by an older one: a config sync pass, or
//! a read that raced a write, whose value predates what a write of this
//! process already cached leaves the newer value in place (an AI switch
//! turned off stays off).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use spendgate_domain::{CommunityId, ConfigVersion, Timestamp, Ttl};
use spendgate_ports::{Clock, CommunityConfig, ConfigProvider, RepoError};

/// How long cached configuration is used without asking the database, and
/// how long it may still be used when the database is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigFreshness {
    /// Entries younger than this are used as they are.
    pub fresh_for: Ttl,
    /// Entries younger than this are used when the database fails.
    pub stale_for: Ttl,
}

impl Default for ConfigFreshness {
    /// Fresh for 30 s, usable for 10 min while the database is down.
    fn default() -> Self {
        Self {
            fresh_for: Ttl::from_millis(30_000).unwrap_or(Ttl::DAY),
            stale_for: Ttl::from_millis(600_000).unwrap_or(Ttl::DAY),
        }
    }
}

type Entry = (Timestamp, Option<CommunityConfig>);

/// Community configuration read through an in-process cache.
pub struct ConfigCache {
    provider: Arc<dyn ConfigProvider>,
    clock: Arc<dyn Clock>,
    freshness: ConfigFreshness,
    entries: Mutex<HashMap<CommunityId, Entry>>,
}

impl std::fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCache")
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl ConfigCache {
    /// A cache in front of `provider`.
    pub fn new(
        provider: Arc<dyn ConfigProvider>,
        clock: Arc<dyn Clock>,
        freshness: ConfigFreshness,
    ) -> Self {
        Self {
            provider,
            clock,
            freshness,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The provider behind the cache, for writes.
    pub fn provider(&self) -> &Arc<dyn ConfigProvider> {
        &self.provider
    }

    fn cached(&self, community: &CommunityId, within: Ttl) -> Option<Option<CommunityConfig>> {
        let now = self.clock.now();
        let entries = self.entries.lock().ok()?;
        let (at, config) = entries.get(community)?;
        let age = now.as_millis().saturating_sub(at.as_millis());
        (age < within.as_millis()).then(|| config.clone())
    }

    /// The community's configuration (`None`: it has none): from the
    /// cache while fresh, else from the provider; when the provider fails,
    /// the last value seen within the stale window.
    ///
    /// # Errors
    /// The provider's error when it fails and nothing usable is cached.
    pub async fn get(&self, community: &CommunityId) -> Result<Option<CommunityConfig>, RepoError> {
        if let Some(config) = self.cached(community, self.freshness.fresh_for) {
            return Ok(config);
        }
        match self.provider.community(community).await {
            Ok(config) => Ok(self.put(community, config)),
            Err(error) => match self.cached(community, self.freshness.stale_for) {
                Some(config) => {
                    tracing::warn!(%community, %error, "configuration read failed; using the last value seen");
                    Ok(config)
                }
                None => Err(error),
            },
        }
    }

    /// Records what the database held for a community when it was read
    /// (after a write, or by config sync), unless the cache holds a newer
    /// version (`None`, no row, is version zero: rows are never deleted).
    /// Returns the configuration the cache holds afterwards: `config`, or
    /// the newer one it kept.
    pub fn put(
        &self,
        community: &CommunityId,
        config: Option<CommunityConfig>,
    ) -> Option<CommunityConfig> {
        let version =
            |c: &Option<CommunityConfig>| c.as_ref().map_or(ConfigVersion::ZERO, |c| c.version);
        let now = self.clock.now();
        let Ok(mut entries) = self.entries.lock() else {
            return config;
        };
        if let Some((_, held)) = entries.get(community)
            && version(held) > version(&config)
        {
            return held.clone();
        }
        entries.insert(community.clone(), (now, config.clone()));
        config
    }
}

#[cfg(test)]
mod tests {
    use spendgate_adapter_memory::ManualClock;
    use spendgate_domain::{Limits, Micros};
    use spendgate_ports::MockConfigProvider;

    use super::*;

    fn community() -> CommunityId {
        CommunityId::parse("guild").unwrap()
    }

    fn config() -> CommunityConfig {
        CommunityConfig {
            community: community(),
            ai_enabled: true,
            limits: Limits::new(Micros::from_usd(1)),
            pricing_overrides: Default::default(),
            version: ConfigVersion::new(10).unwrap(),
        }
    }

    fn cache(provider: MockConfigProvider) -> (ConfigCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0).unwrap()));
        let cache = ConfigCache::new(
            Arc::new(provider),
            clock.clone(),
            ConfigFreshness::default(),
        );
        (cache, clock)
    }

    #[tokio::test]
    async fn a_fresh_entry_is_served_without_asking_the_database() {
        let mut provider = MockConfigProvider::new();
        provider
            .expect_community()
            .times(1)
            .returning(|_| Ok(Some(config())));
        let (cache, clock) = cache(provider);
        assert_eq!(cache.get(&community()).await.unwrap(), Some(config()));
        clock.advance(29_000).unwrap();
        assert_eq!(cache.get(&community()).await.unwrap(), Some(config()));
    }

    #[tokio::test]
    async fn database_down_serves_the_last_value_within_the_stale_window_only() {
        let mut provider = MockConfigProvider::new();
        let mut first = true;
        provider.expect_community().returning(move |_| {
            if std::mem::take(&mut first) {
                Ok(Some(config()))
            } else {
                Err(RepoError::Unavailable("down".into()))
            }
        });
        let (cache, clock) = cache(provider);
        cache.get(&community()).await.unwrap();
        clock.advance(31_000).unwrap();
        assert_eq!(cache.get(&community()).await.unwrap(), Some(config()));
        clock.advance(600_000).unwrap();
        assert!(matches!(
            cache.get(&community()).await,
            Err(RepoError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_entry() {
        let (cache, clock) = cache(MockConfigProvider::new());
        let newer = CommunityConfig {
            ai_enabled: false,
            version: ConfigVersion::new(11).unwrap(),
            ..config()
        };
        assert_eq!(
            cache.put(&community(), Some(newer.clone())),
            Some(newer.clone())
        );
        // A config sync pass, or a read, that saw the row before the write.
        assert_eq!(cache.put(&community(), Some(config())), Some(newer.clone()));
        assert_eq!(cache.put(&community(), None), Some(newer.clone()));
        clock.advance(1_000).unwrap();
        assert_eq!(cache.get(&community()).await.unwrap(), Some(newer));
    }

    #[tokio::test]
    async fn a_read_older_than_the_cached_entry_serves_the_cached_one() {
        let mut provider = MockConfigProvider::new();
        provider
            .expect_community()
            .times(1)
            .returning(|_| Ok(Some(config())));
        let (cache, clock) = cache(provider);
        let newer = CommunityConfig {
            version: ConfigVersion::new(11).unwrap(),
            ..config()
        };
        cache.put(&community(), Some(newer.clone()));
        clock.advance(31_000).unwrap();
        // The stale entry is refreshed from the database, which answers
        // with a snapshot older than what this process wrote.
        assert_eq!(cache.get(&community()).await.unwrap(), Some(newer));
    }

    #[tokio::test]
    async fn database_down_with_nothing_cached_is_an_error() {
        let mut provider = MockConfigProvider::new();
        provider
            .expect_community()
            .returning(|_| Err(RepoError::Unavailable("down".into())));
        let (cache, _) = cache(provider);
        assert!(cache.get(&community()).await.is_err());
    }
}
