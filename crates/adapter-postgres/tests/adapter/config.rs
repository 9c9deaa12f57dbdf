//! `ConfigProvider` and `TierOverrideRepo` paths.

use spendgate_adapter_postgres::SqlConfigRepo;
use spendgate_domain::{
    AccessLevel, CommunityId, ConfigVersion, Limits, Micros, ModelAlias, ModelPrice,
    PricingOverrides, Tier, TierOverrides,
};
use spendgate_ports::{CommunityConfig, ConfigProvider, RepoError, TierOverrideRepo};

use crate::support::{ManualClock, TestDb};

fn id(s: &str) -> CommunityId {
    CommunityId::parse(s).unwrap()
}

fn config(community: &str, enabled: bool, limit: i64, cap: Option<i64>) -> CommunityConfig {
    let mut limits = Limits::new(Micros::new(limit).unwrap());
    if let Some(cap) = cap {
        limits = limits.with_per_user_cap(Micros::new(cap).unwrap());
    }
    CommunityConfig {
        community: id(community),
        ai_enabled: enabled,
        limits,
        pricing_overrides: PricingOverrides::new(),
        version: ConfigVersion::ZERO,
    }
}

fn price(input: i64, output: i64) -> ModelPrice {
    ModelPrice::new(Micros::new(input).unwrap(), Micros::new(output).unwrap())
}

async fn upsert_and_read_back(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    assert!(repo.active_communities().await.unwrap().is_empty());
    assert_eq!(repo.community(&id("nobody")).await.unwrap(), None);

    let mut a = config("a-team", true, 5_000_000, Some(1_000_000));
    a.pricing_overrides = PricingOverrides::from([
        (ModelAlias::parse("cheap").unwrap(), price(150_000, 600_000)),
        (ModelAlias::parse("reasoning").unwrap(), price(0, 1)),
    ]);
    let mut b = config("b-team", false, 0, None);
    let mut upper = config("C-team", true, 7, None);
    let mut z = config("z_team", true, Micros::MAX.get(), Some(0));
    for c in [&mut z, &mut b, &mut a, &mut upper] {
        c.version = repo.upsert(c).await.unwrap();
        assert!(c.version > ConfigVersion::ZERO);
    }
    // Active ones only, in byte order of their ids.
    let active = repo.active_communities().await.unwrap();
    assert_eq!(active, vec![upper.clone(), a.clone(), z.clone()]);
    assert_eq!(
        repo.community(&id("b-team")).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        repo.community(&id("a-team")).await.unwrap(),
        Some(a.clone())
    );

    // Upsert replaces everything it carries.
    let mut a2 = config("a-team", false, 9, None);
    a2.version = repo.upsert(&a2).await.unwrap();
    assert!(a2.version > a.version);
    assert_eq!(repo.community(&id("a-team")).await.unwrap(), Some(a2));
    assert_eq!(repo.active_communities().await.unwrap(), vec![upper, z]);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM community_agent_config").await,
        4
    );
}

async fn tier_overrides_round_trip(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    let community = id("tiers");
    assert!(
        repo.tier_overrides(&community)
            .await
            .unwrap()
            .value
            .is_empty()
    );

    let overrides = TierOverrides::from([
        (Tier::new(1).unwrap(), AccessLevel::Pro),
        (Tier::new(4).unwrap(), AccessLevel::Enterprise),
        (Tier::new(9).unwrap(), AccessLevel::Free),
    ]);
    // Creates the row (AI off, default budget) when missing.
    repo.set_tier_overrides(&community, &overrides)
        .await
        .unwrap();
    assert_eq!(
        repo.tier_overrides(&community).await.unwrap().value,
        overrides
    );
    let created = repo.community(&community).await.unwrap().unwrap();
    assert!(!created.ai_enabled);
    assert_eq!(created.limits, Limits::new(Micros::new(1_000_000).unwrap()));

    // An upsert of the config leaves tier overrides alone.
    repo.upsert(&config("tiers", true, 3, None)).await.unwrap();
    assert_eq!(
        repo.tier_overrides(&community).await.unwrap().value,
        overrides
    );

    // Replacing them with none.
    repo.set_tier_overrides(&community, &TierOverrides::new())
        .await
        .unwrap();
    assert!(
        repo.tier_overrides(&community)
            .await
            .unwrap()
            .value
            .is_empty()
    );
    // Another community is untouched by all of this.
    assert!(
        repo.tier_overrides(&id("other"))
            .await
            .unwrap()
            .value
            .is_empty()
    );
}

async fn set_tier_overrides_through_the_port(t: &TestDb) {
    let repo: Box<dyn TierOverrideRepo> = Box::new(SqlConfigRepo::new(t.db.clone()));
    let (a, b) = (id("port-a"), id("port-b"));
    let first = TierOverrides::from([(Tier::new(2).unwrap(), AccessLevel::Enterprise)]);
    let second = TierOverrides::from([
        (Tier::new(5).unwrap(), AccessLevel::Free),
        (Tier::new(8).unwrap(), AccessLevel::Pro),
    ]);
    repo.set_tier_overrides(&a, &first).await.unwrap();
    repo.set_tier_overrides(&b, &first).await.unwrap();
    assert_eq!(repo.tier_overrides(&a).await.unwrap().value, first);

    // Replaced, not merged; the other community keeps its own.
    repo.set_tier_overrides(&a, &second).await.unwrap();
    assert_eq!(repo.tier_overrides(&a).await.unwrap().value, second);
    assert_eq!(repo.tier_overrides(&b).await.unwrap().value, first);

    // An empty map removes them: the column is NULL again.
    repo.set_tier_overrides(&a, &TierOverrides::new())
        .await
        .unwrap();
    assert!(repo.tier_overrides(&a).await.unwrap().value.is_empty());
    assert_eq!(
        t.count("SELECT COUNT(*) FROM community_agent_config WHERE community_id = 'port-a' AND tier_overrides IS NULL")
            .await,
        1
    );
    assert_eq!(repo.tier_overrides(&b).await.unwrap().value, first);

    // Removing the overrides of a community without a row creates none.
    repo.set_tier_overrides(&id("port-none"), &TierOverrides::new())
        .await
        .unwrap();
    assert_eq!(
        t.count("SELECT COUNT(*) FROM community_agent_config WHERE community_id = 'port-none'")
            .await,
        0
    );
    assert!(
        repo.tier_overrides(&id("port-none"))
            .await
            .unwrap()
            .value
            .is_empty()
    );
}

/// Every write of a row, by either port, issues one more than the row had
/// or the write's time in ms, whichever is greater; reads return it.
async fn every_write_of_a_row_issues_a_greater_version(t: &TestDb) {
    let clock = ManualClock::at(5_000);
    let repo = SqlConfigRepo::with_clock(t.db.clone(), clock.clone());
    let c = id("versions");
    let v = |n| ConfigVersion::new(n).unwrap();
    assert_eq!(repo.tier_overrides(&c).await.unwrap().version, v(0));
    assert_eq!(
        repo.upsert(&config("versions", true, 1, None))
            .await
            .unwrap(),
        v(5_000)
    );
    assert_eq!(
        repo.upsert(&config("versions", true, 2, None))
            .await
            .unwrap(),
        v(5_001)
    );
    let pro = TierOverrides::from([(Tier::new(1).unwrap(), AccessLevel::Pro)]);
    assert_eq!(repo.set_tier_overrides(&c, &pro).await.unwrap(), v(5_002));
    clock.set(9_000);
    assert_eq!(
        repo.set_tier_overrides(&c, &TierOverrides::new())
            .await
            .unwrap(),
        v(9_000)
    );
    // A clock gone back still issues a greater version.
    clock.set(1_000);
    assert_eq!(
        repo.upsert(&config("versions", false, 3, None))
            .await
            .unwrap(),
        v(9_001)
    );
    let read = repo.community(&c).await.unwrap().unwrap();
    assert_eq!((read.version, read.ai_enabled), (v(9_001), false));
    assert_eq!(repo.tier_overrides(&c).await.unwrap().version, v(9_001));
    // No row, nothing written: version zero, and still no row.
    assert_eq!(
        repo.set_tier_overrides(&id("no-row"), &TierOverrides::new())
            .await
            .unwrap(),
        v(0)
    );
    // A new row from the tier port starts like one from upsert.
    assert_eq!(
        repo.set_tier_overrides(&id("tiers-first"), &pro)
            .await
            .unwrap(),
        v(1_000)
    );
}

/// A version outside the domain's range in the database is bad data for
/// that community, never a panic or a guess.
async fn a_stored_version_out_of_range_is_bad_data(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    repo.upsert(&config("bad-version", true, 1, None))
        .await
        .unwrap();
    t.exec(
        "UPDATE community_agent_config SET version = 9007199254740992",
        vec![],
    )
    .await
    .unwrap();
    let err = repo.community(&id("bad-version")).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { field, .. } if field == "version"),
        "{err:?}"
    );
    assert!(repo.tier_overrides(&id("bad-version")).await.is_err());
}

async fn upsert_refuses_what_it_could_not_read_back(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    let mut c = config("typo", true, 10, None);
    c.pricing_overrides =
        PricingOverrides::from([(ModelAlias::parse("reasonning").unwrap(), price(1, 1))]);
    let err = repo.upsert(&c).await.unwrap_err();
    assert!(matches!(err, RepoError::InvalidInput(_)), "{err:?}");
    assert_eq!(
        repo.community(&id("typo")).await.unwrap(),
        None,
        "no partial write"
    );
}

async fn unreachable_database_is_unavailable(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    t.db.clone().close().await.unwrap();
    let err = repo.community(&id("x")).await.unwrap_err();
    assert!(matches!(err, RepoError::Unavailable(_)), "{err:?}");
}

crate::on_both_backends!(
    every_write_of_a_row_issues_a_greater_version,
    a_stored_version_out_of_range_is_bad_data,
    upsert_and_read_back,
    tier_overrides_round_trip,
    set_tier_overrides_through_the_port,
    upsert_refuses_what_it_could_not_read_back,
    unreachable_database_is_unavailable,
);
