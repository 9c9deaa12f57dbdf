//! The finalize outbox.

use std::collections::HashSet;

use spendgate_adapter_postgres::{Backoff, FinalizeOutbox, PendingFinalize};
use spendgate_domain::{
    CommunityId, IdempotencyKey, Micros, ModelAlias, Period, Settlement, TokenCounts, Ttl, UserId,
};
use spendgate_ports::{CostSource, RepoError};

use crate::support::{TestDb, ts};

fn pending(community: &str, key: &str, actual: i64) -> PendingFinalize {
    PendingFinalize {
        community: CommunityId::parse(community).unwrap(),
        settlement: Settlement {
            user: UserId::parse("user-1").unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            actual: Micros::new(actual).unwrap(),
        },
        period: Period::parse("2026-11").unwrap(),
        model: ModelAlias::parse("reviewer").unwrap(),
        tokens: TokenCounts {
            prompt: 10,
            completion: 20,
        },
        trace_id: Some("trace".into()),
        source: CostSource::Finalize,
    }
}

fn lease(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

async fn enqueue_claim_fail_and_finish(t: &TestDb) {
    let outbox = FinalizeOutbox::new(t.db.clone());
    assert!(
        outbox
            .enqueue(&pending("c", "k1", 100), ts(1_000))
            .await
            .unwrap()
    );
    assert!(
        outbox
            .enqueue(&pending("c", "k2", 200), ts(1_001))
            .await
            .unwrap()
    );
    assert!(
        outbox
            .enqueue(&pending("d", "k1", 300), ts(5_000))
            .await
            .unwrap()
    );
    // Same (community, user, key): kept once.
    assert!(
        !outbox
            .enqueue(&pending("c", "k1", 999), ts(1_002))
            .await
            .unwrap()
    );
    assert_eq!(outbox.queued().await.unwrap(), 3);

    // Due at 2 000: the first two, oldest first, with every field intact.
    let claimed = outbox
        .claim_due(ts(2_000), 10, lease(30_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].pending, pending("c", "k1", 100));
    assert_eq!(claimed[1].pending, pending("c", "k2", 200));
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].last_error, None);

    // Leased: nobody else gets them, but the third one is due at 5 000.
    let later = outbox
        .claim_due(ts(6_000), 10, lease(30_000))
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].pending.community.as_str(), "d");

    // First failure: retry after 1 s; second: 2 s; lease dropped.
    let due = outbox
        .mark_failed(claimed[0].id, "store down", ts(7_000))
        .await
        .unwrap();
    assert_eq!(due, Some(ts(8_000)));
    assert!(
        outbox
            .claim_due(ts(7_999), 10, lease(30_000))
            .await
            .unwrap()
            .is_empty()
    );
    let again = outbox
        .claim_due(ts(8_000), 10, lease(30_000))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("store down"));
    let due = outbox
        .mark_failed(again[0].id, &"é".repeat(5_000), ts(9_000))
        .await
        .unwrap();
    assert_eq!(due, Some(ts(11_000)));

    // A lapsed lease frees the row for another claimer.
    let expired = outbox
        .claim_due(ts(2_000 + 30_000), 10, lease(1_000))
        .await
        .unwrap();
    let ids: HashSet<i64> = expired.iter().map(|c| c.id).collect();
    assert!(
        ids.contains(&claimed[1].id) && ids.contains(&claimed[0].id),
        "{ids:?}"
    );
    let retried = expired.iter().find(|c| c.id == claimed[0].id).unwrap();
    assert_eq!(retried.attempts, 2);
    assert!(
        retried.last_error.as_ref().unwrap().len() <= spendgate_adapter_postgres::MAX_ERROR_LEN
    );

    for c in expired.iter().chain(&later) {
        assert!(outbox.mark_done(c.id).await.unwrap());
    }
    assert!(
        !outbox.mark_done(claimed[0].id).await.unwrap(),
        "already gone"
    );
    assert_eq!(
        outbox.mark_failed(claimed[0].id, "x", ts(1)).await.unwrap(),
        None
    );
    assert_eq!(outbox.queued().await.unwrap(), 0);
    // Done means done: the key may be queued again later.
    assert!(
        outbox
            .enqueue(&pending("c", "k1", 100), ts(50_000))
            .await
            .unwrap()
    );
}

async fn backoff_grows_exponentially_up_to_its_cap(t: &TestDb) {
    let backoff = Backoff::new(lease(100), lease(1_000));
    assert_eq!(
        (1..=6).map(|n| backoff.delay_ms(n)).collect::<Vec<_>>(),
        vec![100, 200, 400, 800, 1_000, 1_000]
    );
    assert_eq!(Backoff::default().delay_ms(u32::MAX), 3_600_000);
    let outbox = FinalizeOutbox::with_backoff(t.db.clone(), backoff);
    outbox.enqueue(&pending("c", "k", 1), ts(0)).await.unwrap();
    let mut now = 0;
    for expected in [100, 200, 400, 800, 1_000] {
        let claimed = outbox.claim_due(ts(now), 1, lease(10)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let due = outbox
            .mark_failed(claimed[0].id, "nope", ts(now))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due.as_millis() - now, expected);
        now = due.as_millis();
    }
}

async fn refused_input_and_bad_rows(t: &TestDb) {
    let outbox = FinalizeOutbox::new(t.db.clone());
    let mut p = pending("c", "k", 1);
    p.tokens.completion = u64::MAX;
    assert!(matches!(
        outbox.enqueue(&p, ts(0)).await,
        Err(RepoError::InvalidInput(_))
    ));
    assert_eq!(outbox.queued().await.unwrap(), 0);
    // A row no id can come from is reported, not skipped or panicked on.
    t.exec(
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at) \
         VALUES ('bad community', 'u', 'k', 1, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    let err = outbox.claim_due(ts(10), 10, lease(10)).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { community, field, .. } if community == "bad community" && field == "finalize_outbox.community_id"),
        "{err:?}"
    );
}

async fn concurrent_claimers_never_share_a_row(t: &TestDb) {
    let outbox = FinalizeOutbox::new(t.db.clone());
    let total = 600;
    for i in 0..total {
        outbox
            .enqueue(&pending("c", &format!("k{i}"), i), ts(i))
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let db = t.reconnect().await;
        workers.push(tokio::spawn(async move {
            let outbox = FinalizeOutbox::new(db);
            let mut mine = Vec::new();
            loop {
                let batch = outbox
                    .claim_due(ts(1_000_000), 7, lease(600_000))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claimed = 0;
    for w in workers {
        for id in w.await.unwrap() {
            claimed += 1;
            assert!(seen.insert(id), "row {id} claimed twice");
        }
    }
    assert_eq!(claimed, total);
    assert_eq!(seen.len(), usize::try_from(total).unwrap());
}

crate::on_both_backends!(
    enqueue_claim_fail_and_finish,
    backoff_grows_exponentially_up_to_its_cap,
    refused_input_and_bad_rows,
    concurrent_claimers_never_share_a_row,
);
