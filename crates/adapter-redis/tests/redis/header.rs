//! The record hash's header (field `V`): the layout version every script
//! checks first, and the list of periods with totals, from which reap
//! prunes the periods long past.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use redis::aio::ConnectionLike;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{hold_digest, records_key, user_sums_key};
use spendgate_adapter_redis::script::Op;
use spendgate_contract::fixture::{key, m, period, unique_community, user};
use spendgate_domain::{
    CommunityId, ConfigVersion, HoldRef, Limits, ModelAlias, Ttl, UnheldCommit,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::fixture::{at, reservation, settlement, snapshot};
use crate::support::{cluster_redis, raw_standalone, standalone_redis};

/// 2026-11-15T00:00:00Z
const NOV_MS: i64 = 1_794_700_800_000;
/// 2027-02-15T00:00:00Z, 77 days after November ended: past the 62-day
/// retention of a one-day marker TTL.
const FEB_MS: i64 = 1_802_649_600_000;

async fn header<C: ConnectionLike + Send>(conn: &mut C, c: &CommunityId) -> Option<String> {
    redis::cmd("HGET")
        .arg(records_key(c))
        .arg("V")
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn set_limits_stamps_the_layout_version() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("header-stamp");

    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();

    assert_eq!(header(&mut conn, &c).await.as_deref(), Some("1"));
}

#[tokio::test]
async fn the_first_totals_of_each_period_list_it_in_the_header() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("header-periods");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();

    store
        .reserve(&c, &reservation("alice", "a", 5, 60_000), at(NOV_MS))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("bob", "b", 5, 60_000), at(NOV_MS + 1))
        .await
        .unwrap();
    let commit = UnheldCommit {
        user: user("carol"),
        key: key("c"),
        actual: m(2),
        period: period("2027-02"),
        model: ModelAlias::parse("cheap").unwrap(),
    };
    store.commit_unheld(&c, &commit, at(FEB_MS)).await.unwrap();

    assert_eq!(
        header(&mut conn, &c).await.as_deref(),
        Some("1 2026-11 2027-02")
    );
}

/// A hash written before headers existed has none; it reads as layout 1.
#[tokio::test]
async fn a_hash_without_a_header_is_of_layout_one() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("header-absent");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let _: () = conn.hdel(records_key(&c), "V").await.unwrap();

    store
        .reserve(&c, &reservation("alice", "a", 5, 60_000), at(NOV_MS))
        .await
        .unwrap();
    let status = store.status(&c, period("2026-11")).await.unwrap();

    assert_eq!(status.reserved, m(5));
    assert_eq!(header(&mut conn, &c).await.as_deref(), Some("1 2026-11"));
}

/// A later layout's hash is refused whole by every script of this one,
/// which leaves it exactly as it was.
#[tokio::test]
async fn every_script_refuses_a_hash_of_another_layout_and_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("header-other-layout");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "a", 5, 1_000), at(NOV_MS))
        .await
        .unwrap();
    let _: () = conn.hset(records_key(&c), "V", "2 2026-11").await.unwrap();
    let before = snapshot(&mut conn, &c).await;
    let hold = HoldRef {
        user: user("alice"),
        key: key("a"),
    };
    let commit = UnheldCommit {
        user: user("bob"),
        key: key("b"),
        actual: m(2),
        period: period("2026-11"),
        model: ModelAlias::parse("cheap").unwrap(),
    };
    let later = at(NOV_MS + 10);

    let results = [
        store
            .reserve(&c, &reservation("bob", "b", 5, 1_000), later)
            .await
            .err(),
        store.extend(&c, &hold, Ttl::DAY, later).await.err(),
        store
            .finalize(&c, &settlement("alice", "a", 3), later)
            .await
            .err(),
        store.cancel(&c, &hold, later).await.err(),
        store.commit_unheld(&c, &commit, later).await.err(),
        store.reap(&c, at(NOV_MS + 5_000)).await.err(),
        store.status(&c, period("2026-11")).await.err(),
        store
            .set_limits(&c, Limits::new(m(5)), ConfigVersion::ZERO)
            .await
            .err(),
        store
            .restore_committed(&c, period("2026-11"), &BTreeMap::new())
            .await
            .err(),
    ];

    for (i, result) in results.iter().enumerate() {
        assert!(
            matches!(result, Some(StoreError::Corrupt(text)) if text.contains("layout version")),
            "call {i}: {result:?}"
        );
    }
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

/// November's totals, sums and user set are gone once a reap runs past
/// its retention; February's stay, and so does the memory they need.
async fn reap_prunes_periods_long_past<C>(store: &RedisBudgetStore<C>, label: &str)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut conn = store.connection();
    let c = unique_community(label);
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "nov", 5, 1_000), at(NOV_MS))
        .await
        .unwrap();
    store
        .finalize(&c, &settlement("alice", "nov", 3), at(NOV_MS + 10))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("bob", "feb", 5, 1_000), at(FEB_MS))
        .await
        .unwrap();

    let reaped = store.reap(&c, at(FEB_MS + 2_000)).await.unwrap();

    assert_eq!(reaped.count, 1);
    assert_eq!(header(&mut conn, &c).await.as_deref(), Some("1 2027-02"));
    let november: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(records_key(&c))
        .arg("2026-11")
        .arg("2026-11:alice")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(november, [None, None]);
    let set_exists: bool = redis::cmd("EXISTS")
        .arg(user_sums_key(&c, period("2026-11")))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!set_exists);
    let status = store.status(&c, period("2026-11")).await.unwrap();
    assert_eq!((status.committed, status.reserved), (m(0), m(0)));
    let february: Option<String> = redis::cmd("HGET")
        .arg(records_key(&c))
        .arg("2027-02")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(february.as_deref(), Some("0 0 0 0"));
}

#[tokio::test]
async fn reap_prunes_periods_long_past_on_a_server() {
    reap_prunes_periods_long_past(&standalone_redis().await, "prune-server").await;
}

#[tokio::test]
async fn reap_prunes_periods_long_past_on_a_cluster() {
    reap_prunes_periods_long_past(&cluster_redis().await, "prune-cluster").await;
}

#[tokio::test]
async fn reap_keeps_the_periods_within_the_retention() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("prune-keeps");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "nov", 5, 1_000), at(NOV_MS))
        .await
        .unwrap();

    // 2027-01-15: November ended 45 days before, within the retention.
    store.reap(&c, at(1_799_971_200_000)).await.unwrap();

    assert_eq!(header(&mut conn, &c).await.as_deref(), Some("1 2026-11"));
    let november: Option<String> = conn.hget(records_key(&c), "2026-11").await.unwrap();
    assert_eq!(november.as_deref(), Some("0 0 0 0"));
}

/// Pruning is housekeeping after the reap has committed: a period list
/// the adapter cannot read is left as it is, and the reap still succeeds.
#[tokio::test]
async fn a_damaged_period_list_does_not_fail_the_reap() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("prune-damaged");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "feb", 5, 1_000), at(FEB_MS))
        .await
        .unwrap();
    let _: () = conn
        .hset(records_key(&c), "V", "1 2027-02 2026-13")
        .await
        .unwrap();

    let reaped = store.reap(&c, at(FEB_MS + 2_000)).await.unwrap();

    assert_eq!(reaped.count, 1);
    assert_eq!(
        header(&mut conn, &c).await.as_deref(),
        Some("1 2027-02 2026-13")
    );
}

/// Runs the prune script once, as the adapter would, for `periods`:
/// {pruned periods, fields deleted, more}.
async fn prune(c: &CommunityId, periods: &[&str]) -> redis::RedisResult<Vec<i64>> {
    let mut conn = raw_standalone().await;
    let script = redis::Script::new(Op::Prune.source());
    let mut script = script.prepare_invoke();
    script.key(records_key(c));
    for p in periods {
        script.key(user_sums_key(c, period(p)));
        script.arg(*p);
    }
    script.invoke_async(&mut conn).await
}

/// Whatever the caller says, a period whose totals count a hold keeps
/// everything: the hold is still to be released into it.
#[tokio::test]
async fn prune_keeps_a_period_that_counts_a_hold() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("prune-held");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "nov", 5, 60_000), at(NOV_MS))
        .await
        .unwrap();
    let before = snapshot(&mut conn, &c).await;

    assert_eq!(prune(&c, &["2026-11"]).await.unwrap(), [0, 0, 0]);
    assert_eq!(before, snapshot(&mut conn, &c).await);
    let digest = hold_digest(&user("alice"), &key("nov"));
    let record: Option<Vec<u8>> = conn.hget(records_key(&c), &digest[..]).await.unwrap();
    assert!(record.is_some());
}

#[tokio::test]
async fn prune_refuses_a_period_the_header_does_not_list() {
    let store = standalone_redis().await;
    let c = unique_community("prune-unlisted");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();

    let error = prune(&c, &["2026-11"]).await.unwrap_err();

    assert!(error.to_string().contains("spendgate:invalid"), "{error}");
}

#[tokio::test]
async fn prune_refuses_a_period_named_twice() {
    let store = standalone_redis().await;
    let c = unique_community("prune-twice");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "nov", 5, 1_000), at(NOV_MS))
        .await
        .unwrap();

    let error = prune(&c, &["2026-11", "2026-11"]).await.unwrap_err();

    assert!(error.to_string().contains("spendgate:invalid"), "{error}");
}
