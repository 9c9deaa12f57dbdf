//! The finalize queue, through the `WorkQueue<PendingSettlement>` port.

use std::collections::HashSet;

use spendgate_adapter_postgres::{FinalizeOutbox, MAX_ERROR_LEN};
use spendgate_domain::{
    CommunityId, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Settlement, TokenCounts, Ttl,
    UserId,
};
use spendgate_ports::{Claimed, CostSource, PendingSettlement, QueueItem, RepoError, WorkQueue};

use crate::support::{ManualClock, TestDb, ts};

fn pending(community: &str, key: &str, actual: i64) -> PendingSettlement {
    PendingSettlement {
        community: CommunityId::parse(community).unwrap(),
        settlement: Settlement {
            user: UserId::parse("user-1").unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            actual: Micros::new(actual).unwrap(),
        },
        period: Period::parse("2026-11").unwrap(),
        model: ModelAlias::parse("reviewer").unwrap(),
        estimate: Micros::new(actual + 50).unwrap(),
        tokens: TokenCounts {
            prompt: 10,
            completion: 20,
        },
        trace_id: Some("trace".into()),
        source: CostSource::Finalize,
        hold_created_at: Some(ts(1_764_547_100_000)),
    }
}

fn lease(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

fn queue(t: &TestDb) -> Box<dyn WorkQueue<PendingSettlement>> {
    Box::new(FinalizeOutbox::new(t.db.clone()))
}

fn key_of(c: &Claimed<PendingSettlement>) -> (CommunityId, HoldRef) {
    (c.item.community.clone(), c.item.hold_ref())
}

async fn complete(q: &dyn WorkQueue<PendingSettlement>, p: &PendingSettlement) -> bool {
    q.complete(&p.community, &p.hold_ref(), p.instance())
        .await
        .unwrap()
}

async fn retry(
    q: &dyn WorkQueue<PendingSettlement>,
    p: &PendingSettlement,
    error: &str,
    due: i64,
) -> bool {
    q.retry_at(&p.community, &p.hold_ref(), p.instance(), error, ts(due))
        .await
        .unwrap()
}

async fn enqueue_claim_retry_and_complete(t: &TestDb) {
    let q = queue(t);
    let (c1, c2, d1) = (
        pending("c", "k1", 100),
        pending("c", "k2", 200),
        pending("d", "k1", 300),
    );
    // Enqueued out of due order.
    assert!(q.enqueue(&c2, ts(1_001)).await.unwrap());
    assert!(q.enqueue(&c1, ts(1_000)).await.unwrap());
    assert!(q.enqueue(&d1, ts(5_000)).await.unwrap());
    // Same (community, user, key): kept once, the first version wins.
    assert!(
        !q.enqueue(&pending("c", "k1", 999), ts(1_002))
            .await
            .unwrap()
    );
    assert_eq!(q.len().await.unwrap(), 3);

    // Nothing is due before its due_at.
    assert!(
        q.claim_due(ts(999), 10, lease(30_000))
            .await
            .unwrap()
            .is_empty()
    );
    // Due at 2 000: the first two, earliest due first, every field intact
    // (the estimate included).
    let claimed = q.claim_due(ts(2_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].item, c1);
    assert_eq!(claimed[1].item, c2);
    assert_eq!(claimed[0].item.estimate.get(), 150);
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].last_error, None);

    // Leased: nobody else gets them, but the third one is due at 5 000.
    let later = q.claim_due(ts(6_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].item, d1);

    // retry_at: one more attempt, error kept, lease dropped, due at the
    // caller's time (not before).
    assert!(retry(q.as_ref(), &c1, "store down", 8_000).await);
    assert!(
        q.claim_due(ts(7_999), 10, lease(30_000))
            .await
            .unwrap()
            .is_empty()
    );
    let again = q.claim_due(ts(8_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].item, c1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("store down"));
    // A long error is cut at a character boundary ('é' is two bytes).
    assert!(retry(q.as_ref(), &c1, &"é".repeat(5_000), 11_000).await);
    // The caller may also bring an item forward.
    assert!(retry(q.as_ref(), &d1, "later", 0).await);
    let forward = q.claim_due(ts(6_000), 10, lease(30_000)).await.unwrap();
    assert_eq!(forward.len(), 1);
    assert_eq!(forward[0].item, d1);
    assert_eq!(forward[0].attempts, 1);

    // A lapsed lease frees a row for another claimer; order is by due time.
    let expired = q
        .claim_due(ts(2_000 + 30_000), 10, lease(1_000))
        .await
        .unwrap();
    let keys: Vec<_> = expired.iter().map(key_of).collect();
    assert_eq!(
        keys,
        vec![
            (c2.community.clone(), c2.hold_ref()),
            (c1.community.clone(), c1.hold_ref())
        ],
        "c2 (due 1 001) before c1 (due 11 000)"
    );
    let retried = &expired[1];
    assert_eq!(retried.attempts, 2);
    let kept = retried.last_error.as_deref().unwrap();
    assert_eq!(kept.len(), MAX_ERROR_LEN);
    assert!(kept.chars().all(|c| c == 'é'));

    // complete removes by (community, user, key); isolation by community.
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

async fn enqueue_stamps_created_at_from_its_clock(t: &TestDb) {
    let clock = ManualClock::at(4_242);
    let q = FinalizeOutbox::with_clock(t.db.clone(), clock);
    assert!(q.enqueue(&pending("c", "k", 1), ts(100_000)).await.unwrap());
    assert_eq!(
        t.count("SELECT created_at FROM finalize_outbox").await,
        4_242
    );
    assert_eq!(
        t.count("SELECT next_attempt_at FROM finalize_outbox").await,
        100_000
    );
    assert_eq!(
        t.count("SELECT estimate_micros FROM finalize_outbox").await,
        51
    );
}

async fn attempts_saturate(t: &TestDb) {
    let q = queue(t);
    let p = pending("c", "k", 1);
    q.enqueue(&p, ts(0)).await.unwrap();
    t.exec(
        "UPDATE finalize_outbox SET attempts = $1",
        vec![i32::MAX.into()],
    )
    .await
    .unwrap();
    assert!(retry(q.as_ref(), &p, "again", 0).await);
    let claimed = q.claim_due(ts(0), 1, lease(10)).await.unwrap();
    assert_eq!(claimed[0].attempts, u32::try_from(i32::MAX).unwrap());
}

async fn refused_input_and_bad_rows(t: &TestDb) {
    let q = queue(t);
    let mut p = pending("c", "k", 1);
    p.tokens.completion = u64::MAX;
    assert!(matches!(
        q.enqueue(&p, ts(0)).await,
        Err(RepoError::InvalidInput(_))
    ));
    let mut p = pending("c", "k", 1);
    p.trace_id = Some("t".repeat(257));
    assert!(matches!(
        q.enqueue(&p, ts(0)).await,
        Err(RepoError::InvalidInput(_))
    ));
    assert_eq!(q.len().await.unwrap(), 0);
    // A negative estimate cannot be stored either (CHECK).
    assert!(
        t.exec(
            "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at, estimate_micros) \
             VALUES ('c', 'u', 'k', 1, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0, -1)",
            vec![],
        )
        .await
        .is_err()
    );

    // Readable rows around two that no id or period can come from.
    let good = pending("c", "good", 1);
    q.enqueue(&good, ts(5)).await.unwrap();
    let late = pending("c", "late", 1);
    q.enqueue(&late, ts(30)).await.unwrap();
    for (community, key, period, due) in [
        ("bad community", "k", "2026-11", 0),
        ("c", "bad-period", "2026-13", 20),
    ] {
        t.exec(
            "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at) \
             VALUES ($1, 'u', $2, 1, $3, 'cheap', 0, 0, 'finalize', $4, 0)",
            vec![community.into(), key.into(), period.into(), i64::from(due).into()],
        )
        .await
        .unwrap();
    }
    // Reported, not skipped or panicked on: the first unreadable row.
    let err = q.claim_due(ts(40), 10, lease(100)).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { community, field, .. } if community == "bad community" && field == "finalize_outbox.community_id"),
        "{err:?}"
    );
    // The unreadable rows stay queued and leased; the readable ones of the
    // same batch were handed back and are claimable at once.
    let next = q.claim_due(ts(40), 10, lease(100)).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.item.clone()).collect::<Vec<_>>(),
        vec![good.clone(), late.clone()]
    );
    assert_eq!(q.len().await.unwrap(), 4);
    // When the lease ends they are reported again.
    let err = q.claim_due(ts(140), 10, lease(100)).await.unwrap_err();
    assert!(matches!(err, RepoError::BadData { .. }), "{err:?}");
    t.exec(
        "DELETE FROM finalize_outbox WHERE community_id = 'bad community'",
        vec![],
    )
    .await
    .unwrap();
    let err = q.claim_due(ts(240), 10, lease(100)).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { community, field, .. } if community == "c" && field == "finalize_outbox.period"),
        "{err:?}"
    );
}

async fn concurrent_claimers_never_share_a_row(t: &TestDb) {
    let q = queue(t);
    let total = 600;
    for i in 0..total {
        q.enqueue(&pending("c", &format!("k{i}"), i), ts(i))
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let db = t.reconnect().await;
        workers.push(tokio::spawn(async move {
            let q = FinalizeOutbox::new(db);
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
    assert_eq!(q.len().await.unwrap(), 600);
    assert!(
        q.claim_due(ts(1_000_000), 10, lease(1))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A dead letter leaves every claim and `len`, keeps its error, attempts
/// and time for `dead_letters`, is not revived by a retry, and leaves with
/// `complete`.
async fn dead_letters_are_never_claimed_and_are_listed_until_completed(t: &TestDb) {
    let q = queue(t);
    let (dead, live, later) = (
        pending("c", "dead", 100),
        pending("c", "live", 200),
        pending("c", "later", 300),
    );
    q.enqueue(&dead, ts(1_000)).await.unwrap();
    q.enqueue(&live, ts(1_001)).await.unwrap();
    q.enqueue(&later, ts(1_002)).await.unwrap();
    assert_eq!(
        q.claim_due(ts(1_000), 1, lease(500)).await.unwrap().len(),
        1
    );
    let at = |p: &PendingSettlement, ms| (p.community.clone(), p.hold_ref(), ts(ms));
    let (c, h, when) = at(&later, 1_500);
    assert!(
        q.dead_letter(&c, &h, later.instance(), "corrupt store data", when)
            .await
            .unwrap()
    );
    let (c, h, when) = at(&dead, 1_400);
    assert!(
        q.dead_letter(&c, &h, dead.instance(), &"é".repeat(MAX_ERROR_LEN), when)
            .await
            .unwrap()
    );
    assert!(
        !q.dead_letter(
            &c,
            &pending("c", "none", 1).hold_ref(),
            pending("c", "none", 1).instance(),
            "x",
            when
        )
        .await
        .unwrap()
    );
    assert!(
        !retry(&*q, &dead, "down", 0).await,
        "a retry does not revive it"
    );

    let claimed = q
        .claim_due(ts(253_402_300_000_000), 10, lease(500))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(key_of).collect::<Vec<_>>(),
        [key_of(&Claimed {
            item: live.clone(),
            attempts: 0,
            last_error: None,
        })]
    );
    assert_eq!(
        (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
        (1, 2)
    );
    let listed = q.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!((&listed[0].item, listed[0].dead_at), (&dead, ts(1_400)));
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].error.len(), MAX_ERROR_LEN);
    assert_eq!(
        (&listed[1].item, listed[1].error.as_str()),
        (&later, "corrupt store data")
    );
    assert_eq!(q.dead_letters(1).await.unwrap().len(), 1);

    assert!(complete(&*q, &dead).await);
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    assert_eq!(t.count("SELECT COUNT(*) FROM finalize_outbox").await, 2);
}

/// A new settlement of a call whose last one was parked takes its place:
/// live again, due when asked, its own amount, no attempts or error.
async fn a_new_settlement_of_a_dead_lettered_call_takes_its_place(t: &TestDb) {
    let q = queue(t);
    let first = pending("c", "k", 100);
    q.enqueue(&first, ts(1_000)).await.unwrap();
    assert!(
        q.dead_letter(
            &first.community,
            &first.hold_ref(),
            first.instance(),
            "out of range",
            ts(1_100)
        )
        .await
        .unwrap()
    );
    let second = pending("c", "k", 7);
    assert!(q.enqueue(&second, ts(2_000)).await.unwrap());
    assert!(!q.enqueue(&first, ts(2_000)).await.unwrap(), "live now");
    assert_eq!(
        (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
        (1, 0)
    );
    let claimed = q.claim_due(ts(2_000), 10, lease(500)).await.unwrap();
    assert_eq!(
        claimed,
        [Claimed {
            item: second,
            attempts: 0,
            last_error: None,
        }]
    );
}

/// A rebuild asks whether a community still has settlements on their way:
/// queued, due or leased, and not parked.
async fn pending_counts_one_communitys_live_items_leased_or_not(t: &TestDb) {
    let q = queue(t);
    let c = CommunityId::parse("c").unwrap();
    assert_eq!(q.pending(&c).await.unwrap(), 0);
    for item in [
        pending("c", "due", 1),
        pending("c", "leased", 2),
        pending("c", "dead", 3),
        pending("d", "other", 4),
    ] {
        assert!(q.enqueue(&item, ts(1_000)).await.unwrap());
    }
    q.claim_due(ts(1_000), 1, lease(30_000)).await.unwrap();
    assert!(
        q.dead_letter(
            &c,
            &pending("c", "dead", 3).hold_ref(),
            pending("c", "dead", 3).instance(),
            "x",
            ts(1_000)
        )
        .await
        .unwrap()
    );
    assert_eq!(q.pending(&c).await.unwrap(), 2);
    assert_eq!(
        q.pending(&CommunityId::parse("d").unwrap()).await.unwrap(),
        1
    );
}

/// `pending("c", "k", _)` with its hold made at another instant: the key
/// used again after the store forgot it.
fn next_use(actual: i64) -> PendingSettlement {
    PendingSettlement {
        hold_created_at: Some(ts(1_764_720_000_000)),
        ..pending("c", "k", actual)
    }
}

/// A key used again while its earlier use still waits gets an item of its
/// own: neither use's calls touch the other's item, and a parked use
/// stays parked beside a new one.
async fn a_key_used_again_has_an_item_per_use_and_each_is_settled_alone(t: &TestDb) {
    let q = queue(t);
    let first = pending("c", "k", 100);
    let second = next_use(200);
    assert!(q.enqueue(&first, ts(1_000)).await.unwrap());
    assert!(q.enqueue(&second, ts(1_000)).await.unwrap());
    assert!(
        !q.enqueue(&second, ts(1_000)).await.unwrap(),
        "the same use"
    );
    let unknown = PendingSettlement {
        hold_created_at: None,
        ..pending("c", "k", 300)
    };
    assert!(
        !q.enqueue(&unknown, ts(1_000)).await.unwrap(),
        "a use not named may be either"
    );
    assert_eq!(q.len().await.unwrap(), 2);
    let parked = q
        .dead_letter(
            &first.community,
            &first.hold_ref(),
            first.instance(),
            "x",
            ts(1_100),
        )
        .await
        .unwrap();
    assert!(parked);
    assert!(
        !q.enqueue(&unknown, ts(1_000)).await.unwrap(),
        "the live use carries it; the parked one is not revived"
    );
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    assert!(complete(q.as_ref(), &second).await);
    assert!(!complete(q.as_ref(), &second).await);
    assert!(!retry(q.as_ref(), &second, "gone", 2_000).await);
    assert_eq!(
        (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
        (0, 1)
    );
    // The next use is queued beside the parked one, which stays parked.
    assert!(q.enqueue(&next_use(400), ts(2_000)).await.unwrap());
    assert_eq!(
        (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
        (1, 1)
    );
    let claimed = q.claim_due(ts(2_000), 10, lease(500)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].item, next_use(400));
}

/// Callers enqueueing one call at the same instant queue it once.
async fn concurrent_enqueues_of_one_call_queue_it_once(t: &TestDb) {
    let q: std::sync::Arc<dyn WorkQueue<PendingSettlement>> = queue(t).into();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (q, start) = (q.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                q.enqueue(&pending("c", "k", 100), ts(1_000)).await.unwrap()
            })
        })
        .collect();
    let mut queued = 0;
    for task in tasks {
        queued += usize::from(task.await.unwrap());
    }
    assert_eq!(queued, 1);
    assert_eq!(q.len().await.unwrap(), 1);
}

crate::on_both_backends!(
    pending_counts_one_communitys_live_items_leased_or_not,
    a_key_used_again_has_an_item_per_use_and_each_is_settled_alone,
    concurrent_enqueues_of_one_call_queue_it_once,
    a_new_settlement_of_a_dead_lettered_call_takes_its_place,
    dead_letters_are_never_claimed_and_are_listed_until_completed,
    enqueue_claim_retry_and_complete,
    enqueue_stamps_created_at_from_its_clock,
    attempts_saturate,
    refused_input_and_bad_rows,
    concurrent_claimers_never_share_a_row,
);
