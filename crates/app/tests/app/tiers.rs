//! Tier access with mocked repository and cache: every fallback of the
//! look-up, and refusals before any override is read.

use std::sync::Arc;

use spendgate::domain::{AccessLevel, ConfigVersion, Tier, TierOverrides, Timestamp};
use spendgate::ports::{MockTierCache, MockTierOverrideRepo, RepoError, Versioned};
use spendgate::{OverrideSource, TierAccess, TierRefusal, TierTimings};
use spendgate_adapter_memory::ManualClock;

use crate::support::{MID_NOVEMBER_MS, community, model};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Timestamp::from_millis(MID_NOVEMBER_MS).unwrap(),
    ))
}

fn pro_at_tier_one() -> TierOverrides {
    TierOverrides::from([(Tier::new(1).unwrap(), AccessLevel::Pro)])
}

fn at(version: i64, value: TierOverrides) -> Versioned<TierOverrides> {
    Versioned {
        value,
        version: ConfigVersion::new(version).unwrap(),
    }
}

fn down() -> RepoError {
    RepoError::Unavailable("injected".into())
}

fn access(repo: MockTierOverrideRepo, cache: MockTierCache, clock: Arc<ManualClock>) -> TierAccess {
    TierAccess::new(
        Arc::new(repo),
        Arc::new(cache),
        clock,
        TierTimings::default(),
    )
}

#[tokio::test]
async fn an_invalid_tier_is_refused_before_any_override_is_read() {
    // No expectations: any call to the repository or the cache panics.
    let tiers = access(MockTierOverrideRepo::new(), MockTierCache::new(), clock());
    for tier in [0, 10, -3] {
        let refused = tiers
            .check_model(&community("t"), tier, &model("cheap"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, TierRefusal::InvalidTier(_)),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn a_cache_hit_does_not_read_the_database() {
    let mut cache = MockTierCache::new();
    cache
        .expect_get()
        .returning(|_| Ok(Some(at(3, pro_at_tier_one()))));
    let tiers = access(MockTierOverrideRepo::new(), cache, clock());
    let decision = tiers.access_level(&community("t"), 1).await.unwrap();
    assert_eq!(
        (decision.level, decision.source),
        (AccessLevel::Pro, OverrideSource::Cache)
    );
}

#[tokio::test]
async fn a_miss_reads_the_database_and_fills_the_cache_negative_entries_too() {
    let mut cache = MockTierCache::new();
    cache.expect_get().times(1).returning(|_| Ok(None));
    cache
        .expect_put()
        .times(1)
        .withf(|_, overrides, version, ttl| {
            overrides.is_empty() && version.get() == 4 && ttl.as_millis() == 300_000
        })
        .returning(|_, _, _, _| Ok(()));
    let mut repo = MockTierOverrideRepo::new();
    repo.expect_tier_overrides()
        .times(1)
        .returning(|_| Ok(at(4, TierOverrides::new())));
    let tiers = access(repo, cache, clock());
    let decision = tiers.access_level(&community("t"), 5).await.unwrap();
    assert_eq!(
        (decision.level, decision.source),
        (AccessLevel::Pro, OverrideSource::Database)
    );
}

#[tokio::test]
async fn cache_down_falls_back_to_the_database() {
    let mut cache = MockTierCache::new();
    cache.expect_get().returning(|_| Err(down()));
    cache.expect_put().returning(|_, _, _, _| Err(down()));
    let mut repo = MockTierOverrideRepo::new();
    repo.expect_tier_overrides()
        .returning(|_| Ok(at(1, pro_at_tier_one())));
    let tiers = access(repo, cache, clock());
    let decision = tiers.access_level(&community("t"), 1).await.unwrap();
    assert_eq!(
        (decision.level, decision.source),
        (AccessLevel::Pro, OverrideSource::Database)
    );
}

#[tokio::test]
async fn both_down_serve_the_last_value_seen_for_a_short_while_then_the_defaults() {
    let clock = clock();
    let mut cache = MockTierCache::new();
    cache.expect_get().returning(|_| Err(down()));
    cache.expect_put().returning(|_, _, _, _| Ok(()));
    let mut repo = MockTierOverrideRepo::new();
    let mut first = true;
    repo.expect_tier_overrides().returning(move |_| {
        if std::mem::take(&mut first) {
            Ok(at(1, pro_at_tier_one()))
        } else {
            Err(down())
        }
    });
    let tiers = access(repo, cache, clock.clone());
    let c = community("t");
    assert_eq!(
        tiers.access_level(&c, 1).await.unwrap().source,
        OverrideSource::Database
    );
    let recalled = tiers.access_level(&c, 1).await.unwrap();
    assert_eq!(
        (recalled.level, recalled.source),
        (AccessLevel::Pro, OverrideSource::LastKnown)
    );
    clock.advance(60_000).unwrap();
    let defaulted = tiers.access_level(&c, 1).await.unwrap();
    assert_eq!(
        (defaulted.level, defaulted.source),
        (AccessLevel::Free, OverrideSource::Defaults)
    );
}

#[tokio::test]
async fn malformed_overrides_are_never_applied_in_part() {
    let mut cache = MockTierCache::new();
    cache.expect_get().returning(|_| Ok(None));
    let mut repo = MockTierOverrideRepo::new();
    repo.expect_tier_overrides().returning(|c| {
        Err(RepoError::BadData {
            community: c.to_string(),
            field: "tier_overrides.12".into(),
            reason: "tier outside 1-9".into(),
        })
    });
    let tiers = access(repo, cache, clock());
    let decision = tiers.access_level(&community("t"), 7).await.unwrap();
    assert_eq!(
        (decision.level, decision.source),
        (AccessLevel::Enterprise, OverrideSource::Defaults)
    );
    let refused = tiers
        .check_model(&community("t"), 1, &model("reasoning"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TierRefusal::ModelNotAllowed { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn writing_overrides_caches_them_with_the_version_the_database_issued() {
    let mut cache = MockTierCache::new();
    cache
        .expect_put()
        .times(1)
        .withf(|_, overrides, version, _| *overrides == pro_at_tier_one() && version.get() == 42)
        .returning(|_, _, _, _| Ok(()));
    let mut repo = MockTierOverrideRepo::new();
    repo.expect_set_tier_overrides()
        .times(1)
        .returning(|_, _| Ok(ConfigVersion::new(42).unwrap()));
    let tiers = access(repo, cache, clock());
    tiers
        .set_overrides(&community("t"), &pro_at_tier_one())
        .await
        .unwrap();
}

/// Overrides in memory whose reads of a community can be held: the read
/// takes its snapshot, then waits until released.
struct HeldReads {
    inner: spendgate_adapter_memory::MemoryTierOverrides,
    read: tokio::sync::Notify,
    release: tokio::sync::Notify,
    /// Once set, reads fail as in a database outage.
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl spendgate::ports::TierOverrideRepo for HeldReads {
    async fn tier_overrides(
        &self,
        c: &spendgate::domain::CommunityId,
    ) -> Result<Versioned<TierOverrides>, RepoError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(down());
        }
        let snapshot = self.inner.tier_overrides(c).await;
        self.read.notify_one();
        self.release.notified().await;
        snapshot
    }

    async fn set_tier_overrides(
        &self,
        c: &spendgate::domain::CommunityId,
        overrides: &TierOverrides,
    ) -> Result<ConfigVersion, RepoError> {
        self.inner.set_tier_overrides(c, overrides).await
    }
}

#[tokio::test]
async fn a_read_that_raced_a_write_does_not_put_the_old_overrides_back_in_the_cache() {
    let clock = clock();
    let repo = Arc::new(HeldReads {
        inner: spendgate_adapter_memory::MemoryTierOverrides::with_clock(clock.clone()),
        read: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let c = community("t");
    repo.inner.set(c.clone(), TierOverrides::new()).unwrap();
    let timings = TierTimings {
        cache_ttl: spendgate::domain::Ttl::from_millis(1_000).unwrap(),
        last_known_for: spendgate::domain::Ttl::from_millis(60_000).unwrap(),
    };
    let tiers = Arc::new(TierAccess::new(
        repo.clone(),
        Arc::new(spendgate_adapter_memory::MemoryTierCache::new(
            clock.clone(),
        )),
        clock.clone(),
        timings,
    ));
    // A reserve misses the cache and reads the database (no overrides)...
    let reader = {
        let (tiers, c) = (tiers.clone(), c.clone());
        tokio::spawn(async move { tiers.access_level(&c, 1).await })
    };
    repo.read.notified().await;
    // ...an operator gives tier 1 `pro` meanwhile...
    tiers.set_overrides(&c, &pro_at_tier_one()).await.unwrap();
    // ...and the reader caches what it read only then.
    repo.release.notify_one();
    let raced = reader.await.unwrap().unwrap();
    assert_eq!(raced.level, AccessLevel::Free, "it answers with its read");
    let next = tiers.access_level(&c, 1).await.unwrap();
    assert_eq!(
        (next.level, next.source),
        (AccessLevel::Pro, OverrideSource::Cache),
        "the cache keeps the newer overrides"
    );
    // So does the last known value, served once the cache entry expired
    // and the database is down.
    clock.advance(2_000).unwrap();
    repo.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let recalled = tiers.access_level(&c, 1).await.unwrap();
    assert_eq!(
        (recalled.level, recalled.source),
        (AccessLevel::Pro, OverrideSource::LastKnown)
    );
}

#[tokio::test]
async fn a_failed_override_write_changes_nothing() {
    let mut repo = MockTierOverrideRepo::new();
    repo.expect_set_tier_overrides()
        .returning(|_, _| Err(RepoError::Unavailable("down".into())));
    // The cache is not touched: no expectation is set on it.
    let tiers = access(repo, MockTierCache::new(), clock());
    assert!(
        tiers
            .set_overrides(&community("t"), &pro_at_tier_one())
            .await
            .is_err()
    );
}
