//! The reconciliation queue, through the `WorkQueue<Handover>` port.

use std::collections::HashSet;

use spendgate_adapter_postgres::{MAX_ERROR_LEN, SqlReconciliationQueue};
use spendgate_domain::{
    CommunityId, Hold, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Ttl, UserId,
};
use spendgate_ports::{Claimed, Handover, QueueItem, RepoError, WorkQueue};

use crate::support::{ManualClock, TestDb, ts};

/// A handover whose every field differs from its neighbours', so a
/// round trip that mixed up two columns would show.
fn handover(community: &str, key: &str, estimate: i64) -> Handover {
    Handover {
        community: CommunityId::parse(community).unwrap(),
        hold: Hold {
            user: UserId::parse("user-1").unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            estimate: Micros::new(estimate).unwrap(),
            model: ModelAlias::parse("reviewer").unwrap(),
            period: Period::parse("2026-11").unwrap(),
            created_at: ts(1_000 + estimate),
            expires_at: ts(61_000 + estimate),
        },
        trace_id: Some(format!("trace-{key}")),
        handed_at: ts(2_000 + estimate),
    }
}

fn lease(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

fn queue(t: &TestDb) -> Box<dyn WorkQueue<Handover>> {
    Box::new(SqlReconciliationQueue::new(t.db.clone()))
}

fn key_of(c: &Claimed<Handover>) -> (CommunityId, HoldRef) {
    (c.item.community.clone(), c.item.hold_ref())
}

fn items(claimed: &[Claimed<Handover>]) -> Vec<Handover> {
    claimed.iter().map(|c| c.item.clone()).collect()
}

async fn complete(q: &dyn WorkQueue<Handover>, h: &Handover) -> bool {
    q.complete(&h.community, &h.hold_ref(), h.instance())
        .await
        .unwrap()
}

async fn retry(q: &dyn WorkQueue<Handover>, h: &Handover, error: &str, due: i64) -> bool {
    q.retry_at(&h.community, &h.hold_ref(), h.instance(), error, ts(due))
        .await
        .unwrap()
}

async fn enqueue_claim_retry_and_complete(t: &TestDb) {
    let q = queue(t);
    let (c1, c2, d1) = (
        handover("c", "k1", 100),
        handover("c", "k2", 200),
        handover("d", "k1", 300),
    );
    // Enqueued out of due order.
    assert!(q.enqueue(&c2, ts(1_001)).await.unwrap());
    assert!(q.enqueue(&c1, ts(1_000)).await.unwrap());
    assert!(q.enqueue(&d1, ts(5_000)).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 3);

    // Due at 2 000: the first two, earliest due first, every field intact.
    let claimed = q.claim_due(ts(2_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(items(&claimed), vec![c1.clone(), c2.clone()]);
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].last_error, None);
    // A handover without a trace id comes back without one.
    let mut bare = handover("e", "k1", 0);
    bare.trace_id = None;
    assert!(q.enqueue(&bare, ts(0)).await.unwrap());
    assert_eq!(
        items(&q.claim_due(ts(2_000), 10, lease(30_000)).await.unwrap()),
        vec![bare.clone()]
    );
    assert!(complete(q.as_ref(), &bare).await);

    // Leased: nobody else gets them, but the third one is due at 5 000.
    let later = q.claim_due(ts(6_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(items(&later), vec![d1.clone()]);

    // retry_at: one more attempt, error kept, lease dropped, due at the
    // caller's time (not before).
    assert!(retry(q.as_ref(), &c1, "provider down", 8_000).await);
    assert!(
        q.claim_due(ts(7_999), 10, lease(30_000))
            .await
            .unwrap()
            .is_empty()
    );
    let again = q.claim_due(ts(8_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(items(&again), vec![c1.clone()]);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("provider down"));
    // A long error is cut at a character boundary ('é' is two bytes).
    assert!(retry(q.as_ref(), &c1, &format!("x{}", "é".repeat(5_000)), 9_000).await);
    let cut = q.claim_due(ts(9_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(cut[0].attempts, 2);
    let kept = cut[0].last_error.as_deref().unwrap();
    assert_eq!(kept.len(), MAX_ERROR_LEN - 1);
    assert!(kept.starts_with('x') && kept.chars().skip(1).all(|c| c == 'é'));

    // complete removes by (community, user, key), and only that row: c1 of
    // community "c" is gone, d1 (same user and key, community "d") stays.
    assert!(complete(q.as_ref(), &c1).await);
    assert!(!complete(q.as_ref(), &c1).await, "already gone");
    assert!(
        !retry(q.as_ref(), &c1, "x", 1).await,
        "gone: nothing to retry"
    );
    assert_eq!(q.len().await.unwrap(), 2);
    assert!(complete(q.as_ref(), &c2).await);
    assert!(complete(q.as_ref(), &d1).await);
    assert_eq!(q.len().await.unwrap(), 0);
    // Done means done: the key may be queued again later.
    assert!(q.enqueue(&c1, ts(50_000)).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 1);
}

async fn duplicate_enqueue_is_refused(t: &TestDb) {
    let q = queue(t);
    let first = handover("c", "k", 100);
    assert!(q.enqueue(&first, ts(10)).await.unwrap());
    // Same (community, user, key) and use, other fields and due time:
    // refused, nothing changed (the first version and its due time win).
    let mut second = handover("c", "k", 999);
    second.hold.created_at = first.hold.created_at;
    second.trace_id = None;
    assert!(!q.enqueue(&second, ts(0)).await.unwrap());
    assert!(!q.enqueue(&first, ts(10)).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 1);
    assert!(q.claim_due(ts(9), 10, lease(100)).await.unwrap().is_empty());
    // Still refused while the item is leased or after a failed attempt.
    let claimed = q.claim_due(ts(10), 10, lease(100)).await.unwrap();
    assert_eq!(items(&claimed), vec![first.clone()]);
    assert!(!q.enqueue(&second, ts(0)).await.unwrap());
    assert!(retry(q.as_ref(), &first, "later", 500).await);
    assert!(!q.enqueue(&second, ts(0)).await.unwrap());
    let again = q.claim_due(ts(500), 10, lease(100)).await.unwrap();
    assert_eq!(items(&again), vec![first.clone()]);
    assert_eq!(again[0].attempts, 1);
    // Another community, or another user, with the same key is its own item.
    assert!(q.enqueue(&handover("d", "k", 100), ts(0)).await.unwrap());
    let mut other_user = handover("c", "k", 100);
    other_user.hold.user = UserId::parse("user-2").unwrap();
    assert!(q.enqueue(&other_user, ts(0)).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 3);
}

async fn not_due_before_due_at(t: &TestDb) {
    let clock = ManualClock::at(4_242);
    let q = SqlReconciliationQueue::with_clock(t.db.clone(), clock);
    let h = handover("c", "k", 7);
    assert!(q.enqueue(&h, ts(100_000)).await.unwrap());
    // The columns as stored: created_at from the queue's clock, due at the
    // caller's due_at, the hold's own times kept apart.
    for (sql, expected) in [
        ("SELECT created_at FROM reconciliation_queue", 4_242),
        ("SELECT next_attempt_at FROM reconciliation_queue", 100_000),
        ("SELECT hold_created_at FROM reconciliation_queue", 1_007),
        ("SELECT hold_expires_at FROM reconciliation_queue", 61_007),
        ("SELECT handed_at FROM reconciliation_queue", 2_007),
        ("SELECT estimate_micros FROM reconciliation_queue", 7),
        (
            "SELECT COUNT(*) FROM reconciliation_queue WHERE attempts = 0 AND claimed_until IS NULL AND last_error IS NULL",
            1,
        ),
    ] {
        assert_eq!(t.count(sql).await, expected, "{sql}");
    }
    for now in [0, 4_242, 99_999] {
        assert!(
            q.claim_due(ts(now), 10, lease(1_000))
                .await
                .unwrap()
                .is_empty(),
            "not due at {now}"
        );
    }
    let claimed = q.claim_due(ts(100_000), 10, lease(1_000)).await.unwrap();
    assert_eq!(items(&claimed), vec![h]);
    // A limit is a limit.
    for i in 0..5 {
        q.enqueue(&handover("c", &format!("n{i}"), i), ts(i))
            .await
            .unwrap();
    }
    let two = q.claim_due(ts(100), 2, lease(1_000)).await.unwrap();
    assert_eq!(
        two.iter()
            .map(|c| c.item.hold.key.to_string())
            .collect::<Vec<_>>(),
        vec!["n0", "n1"]
    );
}

async fn lease_expiry_makes_an_item_claimable_again(t: &TestDb) {
    let q = queue(t);
    let h = handover("c", "k", 1);
    q.enqueue(&h, ts(0)).await.unwrap();
    let first = q.claim_due(ts(1_000), 10, lease(5_000)).await.unwrap();
    assert_eq!(items(&first), vec![h.clone()]);
    assert_eq!(
        t.count("SELECT claimed_until FROM reconciliation_queue")
            .await,
        6_000
    );
    // The claimer died: nobody gets the item while its lease runs…
    for now in [1_000, 5_999] {
        assert!(
            q.claim_due(ts(now), 10, lease(5_000))
                .await
                .unwrap()
                .is_empty(),
            "leased at {now}"
        );
    }
    // …and the next claimer gets it, unchanged, from the lease's end on.
    let second = q.claim_due(ts(6_000), 10, lease(5_000)).await.unwrap();
    assert_eq!(items(&second), vec![h.clone()]);
    assert_eq!(second[0].attempts, 0, "a lapsed lease is not an attempt");
    assert!(
        q.claim_due(ts(10_999), 10, lease(5_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(q.len().await.unwrap(), 1);
}

async fn concurrent_claimers_never_share_an_item(t: &TestDb) {
    let q = queue(t);
    let total = 400;
    for i in 0..total {
        q.enqueue(&handover("c", &format!("k{i}"), i), ts(i))
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let db = t.reconnect().await;
        workers.push(tokio::spawn(async move {
            let q = SqlReconciliationQueue::new(db);
            let mut mine = Vec::new();
            loop {
                let batch = q.claim_due(ts(1_000_000), 7, lease(600_000)).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.iter().map(key_of));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claimed = 0;
    for w in workers {
        for key in w.await.unwrap() {
            claimed += 1;
            assert!(seen.insert(key.clone()), "{key:?} claimed twice");
        }
    }
    assert_eq!(claimed, total);
    assert_eq!(seen.len(), usize::try_from(total).unwrap());
    // All still queued (claimed is not done), and all leased.
    assert_eq!(q.len().await.unwrap(), 400);
    assert!(
        q.claim_due(ts(1_000_000), 10, lease(1))
            .await
            .unwrap()
            .is_empty()
    );
}

const INSERT_RAW: &str = "INSERT INTO reconciliation_queue (community_id, user_id, idempotency_key, estimate_micros, model_alias, period, hold_created_at, hold_expires_at, trace_id, handed_at, next_attempt_at, created_at) \
     VALUES ($1, 'u', $2, $3, $4, $5, 0, $6, NULL, 0, $7, 0)";

/// community, key, estimate, model alias, period, hold_expires_at, due.
type RawRow<'a> = (&'a str, &'a str, i64, &'a str, &'a str, i64, i64);

async fn insert_raw(t: &TestDb, row: RawRow<'_>) -> Result<u64, sea_orm::DbErr> {
    let (community, key, estimate, model, period, expires_at, due) = row;
    t.exec(
        INSERT_RAW,
        vec![
            community.into(),
            key.into(),
            estimate.into(),
            model.into(),
            period.into(),
            expires_at.into(),
            due.into(),
        ],
    )
    .await
}

async fn refused_input_and_corrupt_rows(t: &TestDb) {
    let q = queue(t);
    let mut h = handover("c", "k", 1);
    h.trace_id = Some("t".repeat(257));
    assert!(matches!(
        q.enqueue(&h, ts(0)).await,
        Err(RepoError::InvalidInput(_))
    ));
    assert_eq!(q.len().await.unwrap(), 0);
    // The CHECKs refuse what no handover can hold.
    for refused in [
        ("c", "k", -1, "cheap", "2026-11", 0, 0),
        ("c", "k", 1, "cheap", "November", 0, 0),
        ("c", "k", 1, "cheap", "2026-11", -1, 0),
    ] {
        assert!(insert_raw(t, refused).await.is_err(), "{refused:?}");
    }
    assert!(q.enqueue(&handover("c", "x", 1), ts(1_000)).await.unwrap());
    assert!(
        t.exec("UPDATE reconciliation_queue SET attempts = -1", vec![])
            .await
            .is_err(),
        "CHECK on attempts"
    );
    assert!(complete(q.as_ref(), &handover("c", "x", 1)).await);

    // Readable rows around corrupt ones that the CHECKs let through but no
    // handover can come from.
    let good = handover("c", "good", 1);
    q.enqueue(&good, ts(5)).await.unwrap();
    let late = handover("c", "late", 1);
    q.enqueue(&late, ts(30)).await.unwrap();
    for corrupt in [
        ("bad community", "k", 1, "cheap", "2026-11", 0, 0),
        ("c", "bad-period", 1, "cheap", "2026-13", 0, 10),
        ("c", "bad-expiry", 1, "cheap", "2026-11", i64::MAX, 15),
        ("c", "bad-estimate", i64::MAX, "cheap", "2026-11", 0, 20),
        ("c", "bad-model", 1, "", "2026-11", 0, 25),
    ] {
        insert_raw(t, corrupt).await.unwrap();
    }
    // Reported, not skipped or panicked on: the first unreadable row.
    let err = q.claim_due(ts(40), 10, lease(100)).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { community, field, .. } if community == "bad community" && field == "reconciliation_queue.community_id"),
        "{err:?}"
    );
    // The unreadable rows stay queued and leased; the readable ones of the
    // same batch were handed back and are claimable at once.
    let next = q.claim_due(ts(40), 10, lease(100)).await.unwrap();
    assert_eq!(items(&next), vec![good.clone(), late.clone()]);
    assert_eq!(q.len().await.unwrap(), 7);
    // When the lease ends they are reported again, one column at a time as
    // the bad rows are removed.
    for (now, gone, field) in [
        (1_000, "k", "reconciliation_queue.period"),
        (2_000, "bad-period", "reconciliation_queue.hold_expires_at"),
        (3_000, "bad-expiry", "reconciliation_queue.estimate_micros"),
        (4_000, "bad-estimate", "reconciliation_queue.model_alias"),
    ] {
        t.exec(
            "DELETE FROM reconciliation_queue WHERE idempotency_key = $1",
            vec![gone.into()],
        )
        .await
        .unwrap();
        let err = q.claim_due(ts(now), 10, lease(100)).await.unwrap_err();
        assert!(
            matches!(&err, RepoError::BadData { field: f, .. } if f == field),
            "{err:?}, expected {field}"
        );
    }
}

/// A handed-over hold outlives the process that handed it over: one pool
/// queues and leases it and closes, a new pool on the same database (a new
/// process) finds it, leased until the lease ends, then claimable.
async fn survives_a_process_restart(t: &TestDb) {
    let h = handover("c", "k", 42);
    let other = handover("c", "other", 43);
    {
        let db = t.reconnect().await;
        let q = SqlReconciliationQueue::new(db.clone());
        assert!(q.enqueue(&h, ts(0)).await.unwrap());
        assert!(q.enqueue(&other, ts(0)).await.unwrap());
        let claimed = q.claim_due(ts(100), 1, lease(10_000)).await.unwrap();
        assert_eq!(items(&claimed), vec![h.clone()]);
        assert!(retry(&q, &other, "provider timed out", 200).await);
        drop(q);
        db.close().await.unwrap();
    }
    let db = t.reconnect().await;
    let q = SqlReconciliationQueue::new(db.clone());
    assert_eq!(q.len().await.unwrap(), 2);
    assert!(!q.enqueue(&h, ts(0)).await.unwrap(), "still queued");
    // The lease taken before the restart still holds.
    let now = q.claim_due(ts(5_000), 10, lease(1_000)).await.unwrap();
    assert_eq!(items(&now), vec![other.clone()]);
    assert_eq!(now[0].attempts, 1);
    assert_eq!(now[0].last_error.as_deref(), Some("provider timed out"));
    assert!(complete(&q, &other).await);
    let after = q.claim_due(ts(10_100), 10, lease(1_000)).await.unwrap();
    assert_eq!(items(&after), vec![h.clone()]);
    assert!(complete(&q, &h).await);
    assert_eq!(q.len().await.unwrap(), 0);
    db.close().await.unwrap();
}

/// A dead hand-over is never claimed, reads back whole from
/// `dead_letters`, and leaves with `complete`.
async fn a_dead_letter_is_never_claimed_and_reads_back_whole(t: &TestDb) {
    let q = queue(t);
    let (dead, live) = (handover("c", "dead", 5), handover("c", "live", 6));
    q.enqueue(&dead, ts(0)).await.unwrap();
    q.enqueue(&live, ts(0)).await.unwrap();
    assert!(
        q.dead_letter(
            &dead.community,
            &dead.hold_ref(),
            dead.instance(),
            "refused",
            ts(7)
        )
        .await
        .unwrap()
    );
    assert_eq!(
        items(&q.claim_due(ts(10), 10, lease(500)).await.unwrap()),
        [live]
    );
    let listed = q.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].item, listed[0].dead_at), (&dead, ts(7)));
    assert_eq!(
        (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
        (1, 1)
    );
    assert!(complete(&*q, &dead).await);
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
}

crate::on_both_backends!(
    a_dead_letter_is_never_claimed_and_reads_back_whole,
    enqueue_claim_retry_and_complete,
    duplicate_enqueue_is_refused,
    not_due_before_due_at,
    lease_expiry_makes_an_item_claimable_again,
    concurrent_claimers_never_share_an_item,
    refused_input_and_corrupt_rows,
    survives_a_process_restart,
);
