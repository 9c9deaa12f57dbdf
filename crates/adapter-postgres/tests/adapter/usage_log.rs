//! The idempotent usage log.

use std::collections::HashSet;

use spendgate_adapter_postgres::SqlUsageLog;
use spendgate_domain::{
    CommunityId, IdempotencyKey, Micros, ModelAlias, Period, TokenCounts, UserId,
};
use spendgate_ports::{CostSource, RepoError, UsageLog, UsageRecord};

use crate::support::{TestDb, ts};

pub fn record(community: &str, user: &str, key: &str, cost: i64, period: &str) -> UsageRecord {
    UsageRecord {
        community: CommunityId::parse(community).unwrap(),
        user: UserId::parse(user).unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        model: ModelAlias::parse("cheap").unwrap(),
        tokens: TokenCounts {
            prompt: 1_000,
            completion: 500,
        },
        cost: Micros::new(cost).unwrap(),
        estimate: Micros::new(cost.saturating_add(1).min(Micros::MAX.get())).unwrap(),
        trace_id: Some(format!("trace-{key}")),
        source: CostSource::Finalize,
        period: Period::parse(period).unwrap(),
        created_at: ts(1_764_547_200_000),
    }
}

pub fn batch(community: &str, keys: std::ops::Range<u32>) -> Vec<UsageRecord> {
    keys.map(|i| {
        record(
            community,
            &format!("user-{}", i % 7),
            &format!("key-{i}"),
            i64::from(i),
            "2026-11",
        )
    })
    .collect()
}

fn period(p: &str) -> Period {
    Period::parse(p).unwrap()
}

async fn append_counts_new_rows_and_sums_per_period(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    assert_eq!(log.append(&[]).await.unwrap(), 0);
    let a = CommunityId::parse("a").unwrap();
    let b = CommunityId::parse("b").unwrap();
    let mut late = record("a", "u1", "k3", 1_000, "2026-10");
    late.source = CostSource::LateFinalize;
    let mut rec = record("a", "u2", "k4", 7, "2026-11");
    rec.source = CostSource::Reconciliation;
    rec.trace_id = None;
    let records = vec![
        record("a", "u1", "k1", 100, "2026-11"),
        record("a", "u1", "k2", 250, "2026-11"),
        late,
        rec,
        record("b", "u1", "k1", 40, "2026-11"),
    ];
    assert_eq!(log.append(&records).await.unwrap(), 5);
    assert_eq!(
        log.total_cost(&a, period("2026-11")).await.unwrap().get(),
        357
    );
    assert_eq!(
        log.total_cost(&a, period("2026-10")).await.unwrap().get(),
        1_000
    );
    assert_eq!(
        log.total_cost(&b, period("2026-11")).await.unwrap().get(),
        40
    );
    assert_eq!(
        log.total_cost(&b, period("2026-12")).await.unwrap(),
        Micros::ZERO
    );

    // Replays add nothing, even with a different cost for the same key.
    assert_eq!(log.append(&records).await.unwrap(), 0);
    let replay = vec![
        record("a", "u1", "k1", 999_999, "2026-11"),
        record("a", "u9", "k1", 1, "2026-11"),
    ];
    assert_eq!(
        log.append(&replay).await.unwrap(),
        1,
        "same key, other user is new"
    );
    assert_eq!(
        log.total_cost(&a, period("2026-11")).await.unwrap().get(),
        358
    );

    // Duplicates inside one batch count once.
    let dup = vec![
        record("c", "u", "k", 5, "2026-11"),
        record("c", "u", "k", 5, "2026-11"),
    ];
    assert_eq!(log.append(&dup).await.unwrap(), 1);
    assert_eq!(t.count("SELECT COUNT(*) FROM agent_usage_log").await, 7);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM agent_usage_log WHERE source = 'late_finalize' AND trace_id = 'trace-k3'").await,
        1
    );
}

async fn replaying_ten_thousand_rows_adds_none(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let records = batch("big", 0..10_000);
    assert_eq!(log.append(&records).await.unwrap(), 10_000);
    assert_eq!(log.append(&records).await.unwrap(), 0);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM agent_usage_log").await,
        10_000
    );
    let expected: i64 = (0..10_000_i64).sum();
    let big = CommunityId::parse("big").unwrap();
    assert_eq!(
        log.total_cost(&big, period("2026-11")).await.unwrap().get(),
        expected
    );
}

async fn concurrent_overlapping_writers_log_each_key_once(t: &TestDb) {
    for round in 0..3 {
        let community = format!("race-{round}");
        let first = batch(&community, 0..3_000);
        let mut second = batch(&community, 1_500..4_500);
        second.reverse();
        let (db1, db2) = (t.reconnect().await, t.reconnect().await);
        let w1 = tokio::spawn(async move { SqlUsageLog::new(db1).append(&first).await });
        let w2 = tokio::spawn(async move { SqlUsageLog::new(db2).append(&second).await });
        let (n1, n2) = (w1.await.unwrap().unwrap(), w2.await.unwrap().unwrap());
        assert_eq!(n1 + n2, 4_500, "round {round}: {n1} + {n2}");
    }
    assert_eq!(
        t.count("SELECT COUNT(*) FROM agent_usage_log").await,
        13_500
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM (SELECT DISTINCT community_id, user_id, idempotency_key FROM agent_usage_log) d")
            .await,
        13_500
    );
}

async fn a_refused_record_writes_nothing(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let mut records = batch("atomic", 0..10);
    let mut bad = record("atomic", "u", "too-many-tokens", 1, "2026-11");
    bad.tokens.prompt = u64::MAX;
    records.push(bad);
    assert!(matches!(
        log.append(&records).await,
        Err(RepoError::InvalidInput(_))
    ));
    let mut long_trace = record("atomic", "u", "long-trace", 1, "2026-11");
    long_trace.trace_id = Some("t".repeat(257));
    assert!(matches!(
        log.append(&[long_trace]).await,
        Err(RepoError::InvalidInput(_))
    ));
    assert_eq!(t.count("SELECT COUNT(*) FROM agent_usage_log").await, 0);
}

async fn a_sum_past_the_range_is_bad_data(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let records = vec![
        record("huge", "u", "k1", Micros::MAX.get() - 1, "2026-11"),
        record("huge", "u", "k2", 2, "2026-11"),
    ];
    assert_eq!(log.append(&records).await.unwrap(), 2);
    let huge = CommunityId::parse("huge").unwrap();
    let err = log.total_cost(&huge, period("2026-11")).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::BadData { community, .. } if community == "huge"),
        "{err:?}"
    );
}

async fn rows_carry_every_field(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    log.append(&[record("f", "0xABC", "key-1", 42, "2026-11")])
        .await
        .unwrap();
    let keys: HashSet<i64> = [
        t.count("SELECT prompt_tokens FROM agent_usage_log").await,
        t.count("SELECT completion_tokens FROM agent_usage_log")
            .await,
        t.count("SELECT cost_micros FROM agent_usage_log").await,
        t.count("SELECT estimated_cost_micros FROM agent_usage_log")
            .await,
    ]
    .into();
    assert_eq!(keys, HashSet::from([1_000, 500, 42, 43]));
    assert_eq!(
        t.count("SELECT COUNT(*) FROM agent_usage_log WHERE user_id = '0xABC' AND period = '2026-11' AND model_alias = 'cheap' AND created_at = 1764547200000").await,
        1
    );
}

crate::on_both_backends!(
    append_counts_new_rows_and_sums_per_period,
    replaying_ten_thousand_rows_adds_none,
    concurrent_overlapping_writers_log_each_key_once,
    a_refused_record_writes_nothing,
    a_sum_past_the_range_is_bad_data,
    rows_carry_every_field,
);
