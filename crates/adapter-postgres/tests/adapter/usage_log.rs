//! The idempotent usage log.

use std::collections::HashSet;

use spendgate_adapter_postgres::SqlUsageLog;
use spendgate_domain::{
    CommunityId, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, TokenCounts,
    UserId,
};
use spendgate_ports::{CostSource, RepoError, UsageLog, UsageRecord};

use crate::support::{TestDb, ts};

pub fn record(community: &str, user: &str, key: &str, cost: i64, period: &str) -> UsageRecord {
    UsageRecord {
        community: CommunityId::parse(community).unwrap(),
        user: UserId::parse(user).unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        hold_created_at: ts(1_764_547_100_000),
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

fn hold(user: &str, key: &str) -> HoldRef {
    HoldRef {
        user: UserId::parse(user).unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
    }
}

async fn logged_reads_back_what_was_appended(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let a = CommunityId::parse("a").unwrap();
    assert_eq!(
        log.logged(&a, &hold("u1", "k1"), Timestamp::EPOCH)
            .await
            .unwrap(),
        None
    );

    let first = record("a", "u1", "k1", 100, "2026-11");
    let mut late = record("a", "u1", "k2", 7, "2026-10");
    late.source = CostSource::LateFinalize;
    late.trace_id = None;
    late.tokens = TokenCounts {
        prompt: 0,
        completion: 0,
    };
    log.append(&[first.clone(), late.clone()]).await.unwrap();
    // Every field comes back as it went in.
    assert_eq!(
        log.logged(&a, &hold("u1", "k1"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        log.logged(&a, &hold("u1", "k2"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(late)
    );
    // A replay with another cost changes nothing: the first one stays.
    log.append(&[record("a", "u1", "k1", 999, "2026-11")])
        .await
        .unwrap();
    assert_eq!(
        log.logged(&a, &hold("u1", "k1"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(first)
    );
    // Unknown key, unknown user: None.
    assert_eq!(
        log.logged(&a, &hold("u1", "k3"), Timestamp::EPOCH)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        log.logged(&a, &hold("u2", "k1"), Timestamp::EPOCH)
            .await
            .unwrap(),
        None
    );
}

async fn logged_is_isolated_per_community(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let (a, b, c) = (
        CommunityId::parse("a").unwrap(),
        CommunityId::parse("b").unwrap(),
        CommunityId::parse("c").unwrap(),
    );
    let in_a = record("a", "u", "k", 10, "2026-11");
    let in_b = record("b", "u", "k", 20, "2026-11");
    log.append(&[in_a.clone(), in_b.clone()]).await.unwrap();
    assert_eq!(
        log.logged(&a, &hold("u", "k"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(in_a)
    );
    assert_eq!(
        log.logged(&b, &hold("u", "k"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(in_b)
    );
    assert_eq!(
        log.logged(&c, &hold("u", "k"), Timestamp::EPOCH)
            .await
            .unwrap(),
        None
    );
    // A prefix or case variant of the community is another community.
    let upper = CommunityId::parse("A").unwrap();
    assert_eq!(
        log.logged(&upper, &hold("u", "k"), Timestamp::EPOCH)
            .await
            .unwrap(),
        None
    );
}

async fn logged_reports_a_corrupt_row_as_bad_data(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let insert = "INSERT INTO agent_usage_log (community_id, user_id, model_alias, prompt_tokens, completion_tokens, cost_micros, estimated_cost_micros, idempotency_key, trace_id, source, period, created_at) \
                  VALUES ('corrupt', 'u', $1, 1, 1, 5, 5, $2, $3, 'finalize', $4, 0)";
    // Each row breaks one field the CHECK constraints do not see; the
    // trace id is 200 characters (fits VARCHAR(256)) but 400 bytes.
    let long_trace = "é".repeat(200);
    let rows = [
        (
            "cheap",
            "k-period",
            None,
            "2026-13",
            "agent_usage_log.period",
        ),
        (
            "bad alias",
            "k-model",
            None,
            "2026-11",
            "agent_usage_log.model_alias",
        ),
        (
            "cheap",
            "k-trace",
            Some(long_trace.as_str()),
            "2026-11",
            "agent_usage_log.trace_id",
        ),
    ];
    let corrupt = CommunityId::parse("corrupt").unwrap();
    for (model, key, trace, period, field) in rows {
        t.exec(
            insert,
            vec![
                model.into(),
                key.into(),
                trace.map(str::to_owned).into(),
                period.into(),
            ],
        )
        .await
        .unwrap();
        let err = log
            .logged(&corrupt, &hold("u", key), Timestamp::EPOCH)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RepoError::BadData { community, field: f, .. } if community == "corrupt" && f == field),
            "{field}: {err:?}"
        );
    }
    // Good rows of the same community still read back.
    let good = record("corrupt", "u", "fine", 3, "2026-11");
    log.append(std::slice::from_ref(&good)).await.unwrap();
    assert_eq!(
        log.logged(&corrupt, &hold("u", "fine"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(good)
    );
}

async fn every_use_of_a_key_is_logged_once(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let a = CommunityId::parse("a").unwrap();
    let mut first = record("a", "u", "reuse", 300_000, "2026-11");
    first.hold_created_at = ts(1_764_547_000_000);
    first.created_at = ts(1_764_547_100_000);
    // The key again, once the store has forgotten its first settlement.
    let mut second = record("a", "u", "reuse", 400_000, "2026-11");
    second.hold_created_at = ts(1_764_720_000_000);
    second.created_at = ts(1_764_720_100_000);
    assert_eq!(log.append(&[first.clone()]).await.unwrap(), 1);
    assert_eq!(
        log.append(&[second.clone(), first.clone()]).await.unwrap(),
        1
    );
    assert_eq!(log.append(&[second.clone()]).await.unwrap(), 0);
    let period = Period::parse("2026-11").unwrap();
    assert_eq!(
        log.total_cost(&a, period).await.unwrap(),
        Micros::new(700_000).unwrap()
    );
    // The latest use, or none logged since a later instant.
    assert_eq!(
        log.logged(&a, &hold("u", "reuse"), Timestamp::EPOCH)
            .await
            .unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        log.logged(&a, &hold("u", "reuse"), ts(1_764_547_100_000))
            .await
            .unwrap(),
        Some(second)
    );
    assert_eq!(
        log.logged(&a, &hold("u", "reuse"), ts(1_764_720_100_001))
            .await
            .unwrap(),
        None
    );
}

/// `logged_use` answers for one use of a key: a later use's row says
/// nothing about an earlier one, and a row logged before uses were told
/// apart (`hold_created_at` 0) is the use it was logged after.
async fn logged_use_answers_for_exactly_one_use_of_a_key(t: &TestDb) {
    let log = SqlUsageLog::new(t.db.clone());
    let a = CommunityId::parse("a").unwrap();
    let k = hold("u", "reuse");
    let mut second = record("a", "u", "reuse", 400_000, "2026-11");
    second.hold_created_at = ts(1_764_720_000_000);
    second.created_at = ts(1_764_720_100_000);
    log.append(std::slice::from_ref(&second)).await.unwrap();
    let first_use = ts(1_764_547_000_000);
    assert_eq!(log.logged_use(&a, &k, first_use).await.unwrap(), None);
    assert_eq!(
        log.logged_use(&a, &k, second.hold_created_at)
            .await
            .unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        log.logged_use(
            &CommunityId::parse("b").unwrap(),
            &k,
            second.hold_created_at
        )
        .await
        .unwrap(),
        None
    );
    let mut legacy = record("a", "u", "old", 5, "2026-11");
    legacy.hold_created_at = Timestamp::EPOCH;
    legacy.created_at = ts(1_764_547_100_000);
    log.append(std::slice::from_ref(&legacy)).await.unwrap();
    let old = hold("u", "old");
    assert_eq!(
        log.logged_use(&a, &old, first_use).await.unwrap(),
        Some(legacy.clone())
    );
    assert_eq!(
        log.logged_use(&a, &old, ts(1_764_547_100_001))
            .await
            .unwrap(),
        None
    );
}

crate::on_both_backends!(
    every_use_of_a_key_is_logged_once,
    logged_use_answers_for_exactly_one_use_of_a_key,
    append_counts_new_rows_and_sums_per_period,
    replaying_ten_thousand_rows_adds_none,
    concurrent_overlapping_writers_log_each_key_once,
    a_refused_record_writes_nothing,
    a_sum_past_the_range_is_bad_data,
    rows_carry_every_field,
    logged_reads_back_what_was_appended,
    logged_is_isolated_per_community,
    logged_reports_a_corrupt_row_as_bad_data,
);
