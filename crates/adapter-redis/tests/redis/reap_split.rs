//! A reap is a read and a script: the adapter reads the due expiry buckets
//! (`ZRANGEBYSCORE`, bounded), then calls the reap script with their lists
//! declared as keys. The script reads only what was declared, copes with
//! the index having changed in between, and says when due work is left.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};
use spendgate_adapter_redis::keys::{
    expiry_bucket, expiry_bucket_key, expiry_key, marker_queue_key, records_key,
};
use spendgate_adapter_redis::script::Op;
use spendgate_contract::fixture::{key, m, period, unique_community, user};
use spendgate_domain::{
    CommunityId, ConfigVersion, Limits, ModelAlias, Reaped, Reservation, ReserveOutcome, Timestamp,
    Ttl,
};
use spendgate_ports::BudgetStore;

use crate::support::{raw_standalone, standalone_redis};

const NOW_MS: i64 = 1_794_700_800_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn reservation(k: &str, ttl_ms: i64) -> Reservation {
    Reservation {
        user: user("alice"),
        key: key(k),
        estimate: m(5),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

/// Calls the reap script at `now` with `buckets` declared; returns
/// (count, more).
async fn reap_declaring(
    conn: &mut ConnectionManager,
    c: &CommunityId,
    now: i64,
    buckets: &[i64],
) -> (i64, i64) {
    let script = Script::new(Op::Reap.source());
    let mut invocation = script.prepare_invoke();
    invocation
        .key(records_key(c))
        .key(expiry_key(c))
        .key(marker_queue_key(c));
    for b in buckets {
        invocation.key(expiry_bucket_key(c, *b));
    }
    let tombstone = now + 86_400_000;
    for arg in [now, tombstone, 1_000, 1_000, 0] {
        invocation.arg(arg);
    }
    for b in buckets {
        invocation.arg(*b);
    }
    let reply: Vec<Value> = invocation.invoke_async(conn).await.unwrap();
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("{other:?}"),
    };
    (int(&reply[0]), int(&reply[2]))
}

async fn expires_at(store: &impl BudgetStore, c: &CommunityId, k: &str, ttl_ms: i64) -> i64 {
    match store
        .reserve(c, &reservation(k, ttl_ms), at(NOW_MS))
        .await
        .unwrap()
    {
        ReserveOutcome::Reserved { expires_at, .. } => expires_at.as_millis(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reap_reads_only_declared_buckets_and_says_when_due_ones_are_left() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-declared");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let first = expiry_bucket(at(expires_at(&store, &c, "a", 1_000).await));
    let second = expiry_bucket(at(expires_at(&store, &c, "b", 2_000).await));
    let now = NOW_MS + 5_000;

    // Declared: the first bucket only (as if the second came after the
    // read). The second is due and left, so the call asks for another.
    assert_eq!(reap_declaring(&mut conn, &c, now, &[first]).await, (1, 1));
    let listed: bool = conn.exists(expiry_bucket_key(&c, second)).await.unwrap();
    assert!(listed, "an undeclared bucket is not touched");

    // Declared again, stale: the first bucket was reaped since (its list is
    // gone). Nothing is released twice; the second is reaped; nothing left.
    assert_eq!(
        reap_declaring(&mut conn, &c, now, &[first, second]).await,
        (1, 0)
    );
    let status = store.status(&c, period("2026-11")).await.unwrap();
    assert_eq!((status.reserved, status.holds), (m(0), 0));
    let buckets: i64 = conn.zcard(expiry_key(&c)).await.unwrap();
    assert_eq!(buckets, 0);
}

/// More due buckets than one call declares (100) are all reaped by one
/// `reap`: the adapter reads and calls again while the script says more
/// are due.
#[tokio::test]
async fn one_reap_declares_due_buckets_in_bounded_batches_until_none_is_left() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("reap-many-buckets");
    store
        .set_limits(&c, Limits::new(m(10_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    for i in 0..250 {
        // One hold per 100 ms bucket.
        expires_at(&store, &c, &format!("k{i}"), 100 * (i + 1)).await;
    }
    let buckets: i64 = conn.zcard(expiry_key(&c)).await.unwrap();
    assert_eq!(buckets, 250);

    let reaped = store.reap(&c, at(NOW_MS + 60_000)).await.unwrap();

    assert_eq!(
        reaped,
        Reaped {
            count: 250,
            reclaimed: m(1_250)
        }
    );
    let buckets: i64 = conn.zcard(expiry_key(&c)).await.unwrap();
    assert_eq!(buckets, 0);
}
