//! A script that refuses a call has changed nothing: Redis does not roll a
//! script back, so every script reads and checks all it needs before its
//! first write. Each test puts damaged data where the script meets it last
//! (a stored value it cannot read, or a key of another type, which Redis
//! finds only on the write) and compares every key of the community
//! before and after.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{
    DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY, expiry_bucket, expiry_bucket_key, expiry_key,
    hold_digest, marker_queue_key, records_key, user_sums_key,
};
use spendgate_contract::fixture::{key, m, period, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, FinalizeOutcome, HoldRef, Limits, ModelAlias,
    Settlement, Ttl, UnheldCommit,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::fixture::{at, reservation, snapshot};
use crate::own_redis::OwnRedis;
use crate::support::{raw_standalone, standalone_redis};

const NOW_MS: i64 = 1_794_700_800_000;

#[tokio::test]
async fn reap_refused_by_an_unreadable_bucket_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-all-or-nothing");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "due", 5, 1_000), at(NOW_MS))
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
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "due", 5, 1_000), at(NOW_MS))
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
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "done", 5, 60_000), at(NOW_MS))
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
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();

    // The reserve succeeds; its index touch is refused whole.
    store
        .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
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

/// Makes `key` a string, so every write of the layout's type to it is
/// refused with WRONGTYPE; Redis finds that only on the write, so the
/// scripts make those writes first and undo them when a later one fails.
async fn tamper(conn: &mut ConnectionManager, key: &str) {
    let _: () = conn.set(key, "tampered").await.unwrap();
}

fn hold(who: &str, k: &str) -> HoldRef {
    HoldRef {
        user: user(who),
        key: key(k),
    }
}

/// A community with a limit and nothing else, and its connection.
async fn configured(
    label: &str,
) -> (
    RedisBudgetStore<ConnectionManager>,
    ConnectionManager,
    CommunityId,
) {
    let store = standalone_redis().await;
    let conn = raw_standalone().await;
    let c = unique_community(label);
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    (store, conn, c)
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// The user set is written last of the fallible writes: the hold's entry
/// in its new bucket list and the bucket's entry in the expiry zset are
/// undone.
#[tokio::test]
async fn reserve_refused_by_a_user_set_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("reserve-user-set-type").await;
    tamper(&mut conn, &user_sums_key(&c, period("2026-11"))).await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(
        store
            .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn reserve_refused_by_an_expiry_zset_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("reserve-zset-type").await;
    tamper(&mut conn, &expiry_key(&c)).await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(
        store
            .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn reserve_refused_by_a_bucket_list_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("reserve-bucket-type").await;
    tamper(
        &mut conn,
        &expiry_bucket_key(&c, expiry_bucket(at(NOW_MS + 60_000))),
    )
    .await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(
        store
            .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn finalize_refused_by_a_marker_queue_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("finalize-queue-type").await;
    store
        .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
        .await
        .unwrap();
    tamper(&mut conn, &marker_queue_key(&c)).await;
    let before = snapshot(&mut conn, &c).await;

    let settlement = Settlement {
        user: user("alice"),
        key: key("k"),
        actual: m(3),
    };
    assert_corrupt(store.finalize(&c, &settlement, at(NOW_MS + 10)).await);
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

/// The marker is queued before the user set is met, and dequeued again.
#[tokio::test]
async fn commit_unheld_refused_by_a_user_set_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("unheld-user-set-type").await;
    tamper(&mut conn, &user_sums_key(&c, period("2026-11"))).await;
    let before = snapshot(&mut conn, &c).await;

    let commit = UnheldCommit {
        user: user("alice"),
        key: key("k"),
        actual: m(3),
        period: period("2026-11"),
        model: ModelAlias::parse("cheap").unwrap(),
    };
    assert_corrupt(store.commit_unheld(&c, &commit, at(NOW_MS)).await);
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn extend_refused_by_a_bucket_list_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("extend-bucket-type").await;
    store
        .reserve(&c, &reservation("alice", "k", 5, 1_000), at(NOW_MS))
        .await
        .unwrap();
    tamper(
        &mut conn,
        &expiry_bucket_key(&c, expiry_bucket(at(NOW_MS + 10 + 60_000))),
    )
    .await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(
        store
            .extend(
                &c,
                &hold("alice", "k"),
                Ttl::from_millis(60_000).unwrap(),
                at(NOW_MS + 10),
            )
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

/// A released hold queues its tombstone after its record and totals are
/// written: the queue's type is checked before.
#[tokio::test]
async fn reap_refused_by_a_marker_queue_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("reap-queue-type").await;
    store
        .reserve(&c, &reservation("alice", "due", 5, 1_000), at(NOW_MS))
        .await
        .unwrap();
    tamper(&mut conn, &marker_queue_key(&c)).await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(store.reap(&c, at(NOW_MS + 2_000)).await);
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn restore_committed_refused_by_a_user_set_of_another_type_changes_nothing() {
    let (store, mut conn, c) = configured("restore-user-set-type").await;
    store
        .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
        .await
        .unwrap();
    tamper(&mut conn, &user_sums_key(&c, period("2026-11"))).await;
    let before = snapshot(&mut conn, &c).await;

    let committed = BTreeMap::from([(user("bob"), m(7))]);
    assert_corrupt(
        store
            .restore_committed(&c, period("2026-11"), &committed)
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn set_limits_refused_by_a_record_of_another_type_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("limits-record-type");
    tamper(&mut conn, &records_key(&c)).await;
    let before = snapshot(&mut conn, &c).await;

    assert_corrupt(
        store
            .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
            .await,
    );
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

#[tokio::test]
async fn set_limits_refused_by_a_corrupt_limits_version_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("limits-version-corrupt");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let _: () = conn.hset(records_key(&c), "LV", "-7").await.unwrap();
    let before = snapshot(&mut conn, &c).await;

    let newer = ConfigVersion::new(5).unwrap();
    assert_corrupt(store.set_limits(&c, Limits::new(m(9)), newer).await);
    assert_eq!(before, snapshot(&mut conn, &c).await);
}

/// The due index's scripts read the index's keys before they take a
/// generation, so a tampered index leaves the sequence and the
/// generations as they were. On a server of its own, since the index is
/// shared by every community.
#[tokio::test]
async fn due_index_scripts_refused_by_an_index_of_another_type_change_nothing() {
    let own = OwnRedis::start();
    let store = RedisBudgetStore::connect(&own.url(), BudgetPolicy::default())
        .await
        .unwrap();
    let mut conn = store.connection();
    let _: () = conn.set(DUE_SEQ_KEY, 5).await.unwrap();
    tamper(&mut conn, DUE_AT_KEY).await;
    let c = unique_community("due-index-type");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();

    // The reserve succeeds; its index touch is refused whole, and so is
    // entering the community after a reap that left the hold.
    store
        .reserve(&c, &reservation("alice", "k", 5, 60_000), at(NOW_MS))
        .await
        .unwrap();
    store.reap(&c, at(NOW_MS + 1)).await.unwrap();

    let sequence: i64 = conn.get(DUE_SEQ_KEY).await.unwrap();
    let generation: Option<String> = conn.hget(DUE_GEN_KEY, c.as_str()).await.unwrap();
    assert_eq!((sequence, generation), (5, None));
}
