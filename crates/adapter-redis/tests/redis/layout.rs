//! The layout laws of issue 3, each checked against a real server.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{
    expiry_bucket_key, expiry_key, hold_digest, marker_queue_key, records_key, user_sums_key,
};
use spendgate_adapter_redis::script::Op;
use spendgate_contract::fixture::{key, listing, m, period, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, FinalizeOutcome, HoldRef, Limits, Reaped,
    ReserveOutcome, Ttl, UnheldCommit,
};
use spendgate_ports::BudgetStore;

use crate::fixture::{at, reservation, settlement};
use crate::own_redis::OwnRedis;
use crate::support::{Counting, command_calls, raw_standalone, standalone_redis};

const DAY_MS: i64 = 86_400_000;
/// 2026-11-15T00:00:00Z
const NOV_15: i64 = 1_794_700_800_000;
/// 2026-12-01T00:00:00Z
const DEC_1: i64 = 1_796_083_200_000;

async fn configured(store: &impl BudgetStore, label: &str, limit: i64) -> CommunityId {
    let c = unique_community(label);
    store
        .set_limits(&c, Limits::new(m(limit)), ConfigVersion::ZERO)
        .await
        .unwrap();
    c
}

async fn record(conn: &mut ConnectionManager, c: &CommunityId, u: &str, k: &str) -> Option<String> {
    let field = hold_digest(&user(u), &key(k));
    let value: Option<Vec<u8>> = conn.hget(records_key(c), &field[..]).await.unwrap();
    // Markers carry packed bytes: lossy is fine for these checks.
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The seed lost `reserved` for the month when its reaper ran after the
/// hold's data had expired. Here no key carries a Redis TTL, and a reaper
/// that runs 40 days late still releases the hold into its own period.
#[tokio::test]
async fn reaper_releases_holds_from_data_no_redis_ttl_can_remove() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "layout-no-ttl", 10_000).await;
    store
        .reserve(&c, &reservation("alice", "k1", 700, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("bob", "k2", 300, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .finalize(&c, &settlement("bob", "k2", 250), at(NOV_15 + 10))
        .await
        .unwrap();
    let november = period("2026-11");
    for k in [
        records_key(&c),
        expiry_key(&c),
        expiry_bucket_key(&c, (NOV_15 + 60_000) / 100),
        marker_queue_key(&c),
        user_sums_key(&c, november),
    ] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "{k} must exist without a Redis TTL (PTTL {ttl})");
    }
    // The expiry index points at the record, which holds everything the
    // reaper needs: estimate, expiry, period and user.
    let rec = record(&mut conn, &c, "alice", "k1").await.unwrap();
    let expiry = NOV_15 + 60_000;
    assert_eq!(rec, format!("H700 {NOV_15} {expiry} 2026-11 alice cheap"));

    let late = at(NOV_15 + 40 * DAY_MS);
    let reaped = store.reap(&c, late).await.unwrap();
    assert_eq!(
        reaped,
        Reaped {
            count: 1,
            reclaimed: m(700)
        }
    );
    let status = store.status(&c, november).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(250), m(0), 0)
    );
    let december = store.status(&c, period("2026-12")).await.unwrap();
    assert_eq!(
        (december.committed, december.reserved, december.holds),
        (m(0), m(0), 0)
    );
}

/// A hold made in the last millisecond of November keeps `2026-11` in its
/// record; its finalize in December changes November's counters.
#[tokio::test]
async fn holds_record_their_period_across_the_month_boundary() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "layout-period", 10_000).await;
    let last_ms = DEC_1 - 1;
    store
        .reserve(&c, &reservation("alice", "k1", 400, 60_000), at(last_ms))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "k2", 100, 60_000), at(last_ms))
        .await
        .unwrap();
    let rec = record(&mut conn, &c, "alice", "k1").await.unwrap();
    assert!(rec.contains(" 2026-11 "), "{rec}");

    let done = store
        .finalize(&c, &settlement("alice", "k1", 450), at(DEC_1 + 5))
        .await
        .unwrap();
    let FinalizeOutcome::Finalized(receipt) = done else {
        panic!("{done:?}")
    };
    assert_eq!(receipt.period, period("2026-11"));
    let reaped = store.reap(&c, at(DEC_1 + 120_000)).await.unwrap();
    assert_eq!(reaped.count, 1);
    let late = store
        .finalize(&c, &settlement("alice", "k2", 90), at(DEC_1 + 130_000))
        .await
        .unwrap();
    assert!(
        matches!(late, FinalizeOutcome::LateFinalized(_)),
        "{late:?}"
    );

    let nov = store.status(&c, period("2026-11")).await.unwrap();
    assert_eq!((nov.committed, nov.reserved, nov.holds), (m(540), m(0), 0));
    let dec = store.status(&c, period("2026-12")).await.unwrap();
    assert_eq!((dec.committed, dec.reserved, dec.holds), (m(0), m(0), 0));
}

/// Finalize markers and reap tombstones stay `marker_ttl` (24 h) and are
/// then dropped by reap from the marker queue: no SCAN, no KEYS.
#[tokio::test]
async fn markers_live_for_the_marker_ttl_and_reap_drops_them_without_scanning() {
    for op in Op::ALL {
        let source = op.source().to_uppercase();
        for forbidden in [
            "\"SCAN\"",
            "\"KEYS\"",
            "\"HSCAN\"",
            "\"EXPIRE\"",
            "\"PEXPIRE\"",
            "\"EXPIREAT\"",
            "\"PEXPIREAT\"",
            "\"SETEX\"",
            "\"PSETEX\"",
        ] {
            assert!(
                !source.contains(forbidden),
                "{} uses {forbidden}",
                op.name()
            );
        }
    }
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "layout-markers", 10_000).await;
    let t0 = NOV_15;
    store
        .reserve(&c, &reservation("alice", "f", 100, 60_000), at(t0))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("alice", "r", 100, 1_000), at(t0))
        .await
        .unwrap();
    store
        .finalize(&c, &settlement("alice", "f", 80), at(t0 + 10))
        .await
        .unwrap();
    assert_eq!(store.reap(&c, at(t0 + 1_000)).await.unwrap().count, 1);
    let queued: i64 = conn.llen(marker_queue_key(&c)).await.unwrap();
    assert_eq!(queued, 2);

    // One millisecond before the finalize marker expires, both remain.
    let before = at(t0 + 10 + DAY_MS - 1);
    store.reap(&c, before).await.unwrap();
    assert!(
        record(&mut conn, &c, "alice", "f")
            .await
            .unwrap()
            .starts_with('F')
    );
    assert!(
        record(&mut conn, &c, "alice", "r")
            .await
            .unwrap()
            .starts_with('R')
    );
    let replay = store
        .finalize(&c, &settlement("alice", "f", 1), before)
        .await
        .unwrap();
    assert_eq!(replay, FinalizeOutcome::AlreadyFinalized { actual: m(80) });

    // At its expiry the marker is dropped; the tombstone (made later) stays.
    store.reap(&c, at(t0 + 10 + DAY_MS)).await.unwrap();
    assert_eq!(record(&mut conn, &c, "alice", "f").await, None);
    assert!(record(&mut conn, &c, "alice", "r").await.is_some());
    store.reap(&c, at(t0 + 1_000 + DAY_MS)).await.unwrap();
    assert_eq!(record(&mut conn, &c, "alice", "r").await, None);
    // Left: the limits and their version, the layout header, November's
    // totals and alice's sums.
    let left: i64 = conn.hlen(records_key(&c)).await.unwrap();
    let queued: i64 = conn.llen(marker_queue_key(&c)).await.unwrap();
    assert_eq!((left, queued), (5, 0));
}

/// More markers than one script call drops (1,000) are all dropped by one
/// `reap`, in bounded batches.
#[tokio::test]
async fn reap_drops_every_expired_marker_in_bounded_batches() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "layout-marker-batches", 1_000_000).await;
    for i in 0..2_500 {
        let k = format!("k{i}");
        store
            .reserve(&c, &reservation("u", &k, 1, 60_000), at(NOV_15))
            .await
            .unwrap();
        store
            .finalize(&c, &settlement("u", &k, 1), at(NOV_15))
            .await
            .unwrap();
    }
    // 2,500 markers, the limits and their version, the layout header, the
    // period's totals and the user's sums.
    let records: i64 = conn.hlen(records_key(&c)).await.unwrap();
    assert_eq!(records, 2_505);
    store.reap(&c, at(NOV_15 + DAY_MS)).await.unwrap();
    let records: i64 = conn.hlen(records_key(&c)).await.unwrap();
    let queued: i64 = conn.llen(marker_queue_key(&c)).await.unwrap();
    assert_eq!((records, queued), (5, 0));
}

/// Reserve, finalize, cancel and extend are one request each (once the
/// scripts are loaded; after a `SCRIPT FLUSH` the first call also loads).
#[tokio::test]
async fn one_round_trip_per_reserve_and_per_finalize() {
    let counting = Counting {
        inner: raw_standalone().await,
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let store = RedisBudgetStore::new(counting.clone(), BudgetPolicy::default());
    let c = configured(&store, "layout-round-trips", 10_000).await;
    // Warm up: make sure every script is loaded on the server.
    store
        .reserve(&c, &reservation("w", "w", 1, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .finalize(&c, &settlement("w", "w", 1), at(NOV_15))
        .await
        .unwrap();
    store
        .extend(
            &c,
            &HoldRef {
                user: user("w"),
                key: key("x"),
            },
            Ttl::from_millis(1).unwrap(),
            at(NOV_15),
        )
        .await
        .unwrap_err();

    let start = counting.count();
    let r = store
        .reserve(&c, &reservation("a", "k1", 10, 60_000), at(NOV_15))
        .await
        .unwrap();
    assert!(matches!(r, ReserveOutcome::Reserved { .. }));
    assert_eq!(counting.count() - start, 1, "reserve");
    let start = counting.count();
    store
        .finalize(&c, &settlement("a", "k1", 9), at(NOV_15 + 1))
        .await
        .unwrap();
    assert_eq!(counting.count() - start, 1, "finalize");
    store
        .reserve(&c, &reservation("a", "k2", 10, 60_000), at(NOV_15))
        .await
        .unwrap();
    let start = counting.count();
    let hold = HoldRef {
        user: user("a"),
        key: key("k2"),
    };
    store
        .extend(
            &c,
            &hold,
            Ttl::from_millis(120_000).unwrap(),
            at(NOV_15 + 2),
        )
        .await
        .unwrap();
    assert_eq!(counting.count() - start, 1, "extend");
    let start = counting.count();
    store.cancel(&c, &hold, at(NOV_15 + 3)).await.unwrap();
    assert_eq!(counting.count() - start, 1, "cancel");
}

/// Reap touches the expired holds only: with 2,000 live holds and 10
/// expired ones, the script reads 10 records (one `HGET` each), the sums
/// of the users concerned and one range of the expiry zset. Every reap
/// also reads the community's generation in the due index twice (one
/// `HGET` before the reap, one in the index update after it): `INDEX`,
/// and each reap script call reads the record hash's layout header once:
/// `HEADER`.
#[tokio::test]
async fn reap_costs_o_expired_not_o_live() {
    let server = OwnRedis::start();
    let store = RedisBudgetStore::connect(&server.url(), BudgetPolicy::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()));
    let c = configured(&store, "layout-reap-cost", 1_000_000_000).await;
    for i in 0..2_000 {
        store
            .reserve(
                &c,
                &reservation("live", &format!("l{i}"), 5, 3_600_000),
                at(NOV_15),
            )
            .await
            .unwrap();
    }
    for i in 0..10 {
        store
            .reserve(
                &c,
                &reservation("short", &format!("s{i}"), 7, 1_000),
                at(NOV_15),
            )
            .await
            .unwrap();
    }
    const INDEX: u64 = 2;
    const HEADER: u64 = 1;
    let mut admin = server.admin();
    // Nothing due: no record is read at all, only the header.
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut admin)
        .unwrap();
    assert_eq!(store.reap(&c, at(NOV_15 + 999)).await.unwrap().count, 0);
    assert_eq!(command_calls(&mut admin, "hget"), INDEX + HEADER);
    assert_eq!(command_calls(&mut admin, "zrangebyscore"), 1);

    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut admin)
        .unwrap();
    let reaped = store.reap(&c, at(NOV_15 + 1_000)).await.unwrap();
    assert_eq!(
        reaped,
        Reaped {
            count: 10,
            reclaimed: m(70)
        }
    );
    // Ten records, plus the period's totals and the sums of their one user.
    assert_eq!(command_calls(&mut admin, "hget"), 12 + INDEX + HEADER);
    assert_eq!(command_calls(&mut admin, "zrangebyscore"), 1);
    // One bucket of the index (the marker queue is empty: one LINDEX).
    assert_eq!(command_calls(&mut admin, "lrange"), 1);
    assert_eq!(command_calls(&mut admin, "hgetall"), 0);

    // Once its 100 ms bucket is past, the bucket is read one last time and
    // dropped; the 2,000 live holds are still never read.
    let short_bucket = (NOV_15 + 1_000) / 100;
    let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut admin)
        .unwrap();
    assert_eq!(store.reap(&c, at(NOV_15 + 1_100)).await.unwrap().count, 0);
    assert_eq!(command_calls(&mut admin, "hget"), 10 + INDEX + HEADER);
    let exists: bool = conn
        .exists(expiry_bucket_key(&c, short_bucket))
        .await
        .unwrap();
    assert!(!exists);
    let buckets: i64 = conn.zcard(expiry_key(&c)).await.unwrap();
    assert_eq!(buckets, 1, "only the live holds' bucket is left");
}

/// A burst of holds sharing one 100 ms expiry bucket is released by one
/// `reap` in bounded batches (1,000 entries per script call), also when
/// the bucket is the current one and only partly due.
#[tokio::test]
async fn reap_releases_a_burst_in_bounded_batches() {
    let store = standalone_redis().await;
    let c = configured(&store, "layout-burst", 1_000_000_000).await;
    for i in 0..2_500 {
        let ttl = if i % 2 == 0 { 1_000 } else { 1_050 };
        store
            .reserve(&c, &reservation("u", &format!("k{i}"), 3, ttl), at(NOV_15))
            .await
            .unwrap();
    }
    // 1,250 are due at +1,000; the other half of the bucket at +1,050.
    let first = store.reap(&c, at(NOV_15 + 1_000)).await.unwrap();
    assert_eq!(
        first,
        Reaped {
            count: 1_250,
            reclaimed: m(3_750)
        }
    );
    let second = store.reap(&c, at(NOV_15 + 1_050)).await.unwrap();
    assert_eq!(
        second,
        Reaped {
            count: 1_250,
            reclaimed: m(3_750)
        }
    );
    let status = store.status(&c, period("2026-11")).await.unwrap();
    assert_eq!((status.reserved, status.holds), (m(0), 0));
}

/// A cost committed without a hold (no limits configured, the clock in
/// December, the call's period November) is one request, and leaves what
/// a finalize leaves: a queued `F` marker that reap drops at its expiry,
/// the period's totals, the user's sums, and the user in the period's
/// user set so status lists them.
#[tokio::test]
async fn commit_unheld_is_one_round_trip_and_writes_what_finalize_writes() {
    let counting = Counting {
        inner: raw_standalone().await,
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let store = RedisBudgetStore::new(counting.clone(), BudgetPolicy::default());
    let mut conn = raw_standalone().await;
    let c = unique_community("layout-unheld");
    let nov = period("2026-11");
    let commit = |u: &str, k: &str| UnheldCommit {
        user: user(u),
        key: key(k),
        actual: m(40),
        period: nov,
        model: spendgate_domain::ModelAlias::parse("cheap").unwrap(),
    };
    // Warm up: the script is loaded on the server.
    store
        .commit_unheld(&c, &commit("w", "w"), at(DEC_1))
        .await
        .unwrap();

    let start = counting.count();
    let done = store
        .commit_unheld(&c, &commit("bob", "k1"), at(DEC_1 + 5))
        .await
        .unwrap();
    assert_eq!(counting.count() - start, 1, "commit_unheld");
    assert!(
        matches!(&done, FinalizeOutcome::CommittedWithoutHold(r) if r.period == nov),
        "{done:?}"
    );
    assert!(
        record(&mut conn, &c, "bob", "k1")
            .await
            .unwrap()
            .starts_with('F')
    );
    let mut users: Vec<String> = conn.smembers(user_sums_key(&c, nov)).await.unwrap();
    users.sort();
    assert_eq!(users, ["bob", "w"]);
    let totals: String = conn.hget(records_key(&c), "2026-11").await.unwrap();
    assert_eq!(totals, "80 0 0 0");
    let sums: String = conn.hget(records_key(&c), "2026-11:bob").await.unwrap();
    assert_eq!(sums, "40 0");
    let queued: i64 = conn.llen(marker_queue_key(&c)).await.unwrap();
    assert_eq!(queued, 2);

    store.reap(&c, at(DEC_1 + 5 + DAY_MS)).await.unwrap();
    assert_eq!(record(&mut conn, &c, "bob", "k1").await, None);
    // Left: November's totals, the two users' sums and the header the
    // first commit wrote to list November; no limits.
    let left: i64 = conn.hlen(records_key(&c)).await.unwrap();
    let queued: i64 = conn.llen(marker_queue_key(&c)).await.unwrap();
    assert_eq!((left, queued), (4, 0));
}

/// restore_committed writes a period's sums for thousands of users in one
/// script: listed users join the period's user set, an unlisted user with
/// a live hold keeps the hold (committed 0, reserved kept), and sums that
/// end "0 0" are deleted while their user stays in the set (a late
/// finalize writes sums without joining it again).
#[tokio::test]
async fn restore_committed_writes_thousands_of_users_in_one_script() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "layout-restore", 1_000_000).await;
    let p = period("2026-11");
    store
        .reserve(&c, &reservation("holder", "k1", 300, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("gone", "k1", 100, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .finalize(&c, &settlement("gone", "k1", 70), at(NOV_15 + 1))
        .await
        .unwrap();
    let restored: std::collections::BTreeMap<_, _> = (0..5_000)
        .map(|i| (user(&format!("u{i}")), m(i + 1)))
        .collect();
    store.restore_committed(&c, p, &restored).await.unwrap();

    let status = store.status(&c, p).await.unwrap();
    assert_eq!(status.committed, m((1..=5_000).sum()));
    assert_eq!(status.reserved, m(300));
    assert_eq!(status.holds, 1);
    let users = listing(&store, &c, p).await;
    assert_eq!(users.len(), 5_001, "5,000 restored and the holder");
    assert_eq!(users[&user("u4999")].committed, m(5_000));
    assert_eq!(users[&user("holder")].reserved, m(300));
    assert!(!users.contains_key(&user("gone")));
    let gone: Option<String> = conn.hget(records_key(&c), "2026-11:gone").await.unwrap();
    assert_eq!(gone, None, "\"0 0\" sums are deleted");
    let members: i64 = conn.scard(user_sums_key(&c, p)).await.unwrap();
    assert_eq!(members, 5_002, "every user stays in the set");

    // The hold settles on top of the restored sums.
    store
        .finalize(&c, &settlement("holder", "k1", 20), at(NOV_15 + 2))
        .await
        .unwrap();
    let status = store
        .status_with_user(&c, p, Some(&user("holder")))
        .await
        .unwrap();
    assert_eq!(status.committed, m((1..=5_000).sum::<i64>() + 20));
    assert_eq!(status.user.map(|u| u.committed), Some(m(20)));
}
