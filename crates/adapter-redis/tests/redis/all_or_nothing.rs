//! A script that refuses a call has changed nothing: Redis does not roll a
//! script back, so every script reads and checks all it needs before its
//! first write. Each test puts damaged data where the script meets it last
//! and compares every key of the community before and after.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{
    DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY, community_prefix, expiry_key, hold_digest,
    marker_queue_key, records_key,
};
use spendgate_contract::fixture::{key, m, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, CommunityId, FinalizeOutcome, Limits, ModelAlias, Reservation, Settlement,
    Timestamp, Ttl,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::own_redis::OwnRedis;
use crate::support::{raw_standalone, standalone_redis};

const NOW_MS: i64 = 1_794_700_800_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn reservation(who: &str, k: &str, ttl_ms: i64) -> Reservation {
    Reservation {
        user: user(who),
        key: key(k),
        estimate: m(5),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

/// Every key of the community with its serialized value, in key order.
async fn snapshot(conn: &mut ConnectionManager, c: &CommunityId) -> Vec<(String, Vec<u8>)> {
    let pattern = format!("{}*", community_prefix(c));
    let mut keys: Vec<String> = conn.keys(pattern).await.unwrap();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query_async(conn).await.unwrap();
        out.push((k, dump));
    }
    out
}

#[tokio::test]
async fn reap_refused_by_an_unreadable_bucket_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-all-or-nothing");
    store.set_limits(&c, Limits::new(m(1_000))).await.unwrap();
    store
        .reserve(&c, &reservation("alice", "due", 1_000), at(NOW_MS))
        .await
        .unwrap();
    // A damaged member of the expiry index, above every real bucket: the
    // reap meets it only when it looks for the lowest bucket left, after
    // it has decided to release the due hold.
    let _: () = conn
        .zadd(expiry_key(&c), "not-a-bucket", 9_000_000_000_000_000_i64)
        .await
        .unwrap();
    let before = snapshot(&mut conn, &c).await;

    let result = store.reap(&c, at(NOW_MS + 2_000)).await;

    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn reap_refused_by_unreadable_totals_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-bad-totals");
    store.set_limits(&c, Limits::new(m(1_000))).await.unwrap();
    store
        .reserve(&c, &reservation("alice", "due", 1_000), at(NOW_MS))
        .await
        .unwrap();
    let _: () = conn
        .hset(records_key(&c), "2026-11", "garbage")
        .await
        .unwrap();
    let before = snapshot(&mut conn, &c).await;

    let result = store.reap(&c, at(NOW_MS + 2_000)).await;

    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn a_damaged_marker_queue_head_is_skipped_and_clean_up_goes_on() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-damaged-marker");
    store.set_limits(&c, Limits::new(m(1_000))).await.unwrap();
    store
        .reserve(&c, &reservation("alice", "done", 60_000), at(NOW_MS))
        .await
        .unwrap();
    let outcome = store
        .finalize(
            &c,
            &Settlement {
                user: user("alice"),
                key: key("done"),
                actual: m(3),
            },
            at(NOW_MS + 10),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, FinalizeOutcome::Finalized(_)),
        "{outcome:?}"
    );
    let _: () = conn.lpush(marker_queue_key(&c), "damaged").await.unwrap();
    let digest = hold_digest(&user("alice"), &key("done"));
    let marker_kept = Ttl::DAY.as_millis();

    store.reap(&c, at(NOW_MS + 20 + marker_kept)).await.unwrap();

    let marker: Option<Vec<u8>> = conn.hget(records_key(&c), &digest[..]).await.unwrap();
    assert_eq!(
        marker, None,
        "the expired marker behind the damaged entry is dropped"
    );
    let queue: Vec<Vec<u8>> = conn.lrange(marker_queue_key(&c), 0, -1).await.unwrap();
    assert!(queue.is_empty(), "{queue:?}");
}

/// The due index's scripts take their generation (the one write that can
/// fail) before writing anything, so an unreadable sequence leaves the
/// index as it was: a community is listed exactly when it has a generation.
/// On a server of its own, since the sequence is shared by every community.
#[tokio::test]
async fn due_index_scripts_refused_by_an_unreadable_sequence_change_nothing() {
    let own = OwnRedis::start();
    let store = RedisBudgetStore::connect(&own.url(), BudgetPolicy::default())
        .await
        .unwrap();
    let mut conn = store.connection();
    let _: () = conn.set(DUE_SEQ_KEY, "garbage").await.unwrap();
    let c = unique_community("due-all-or-nothing");
    store.set_limits(&c, Limits::new(m(1_000))).await.unwrap();

    // The reserve succeeds; its index touch is refused whole.
    store
        .reserve(&c, &reservation("alice", "k", 60_000), at(NOW_MS))
        .await
        .unwrap();
    let listed: Option<i64> = conn.zscore(DUE_AT_KEY, c.as_str()).await.unwrap();
    assert_eq!(listed, None);
    // The reap leaves the live hold; entering it in the index is refused
    // whole too.
    store.reap(&c, at(NOW_MS + 1)).await.unwrap();
    let listed: Option<i64> = conn.zscore(DUE_AT_KEY, c.as_str()).await.unwrap();
    let generation: Option<String> = conn.hget(DUE_GEN_KEY, c.as_str()).await.unwrap();
    assert_eq!((listed, generation), (None, None));
}
