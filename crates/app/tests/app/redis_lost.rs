//! A Redis that loses everything (a throw-away `redis-server` without
//! persistence, killed and started again): the usage log rebuilds every
//! community's committed sums, and reserves stay refused until config sync
//! gives the store its limits back.

use std::time::Duration;

use spendgate::domain::{CommunityId, Limits, Micros};
use spendgate::workers::{ConfigSyncJob, Job};
use spendgate::{CostBasis, ReserveDecision, ReserveError, Spendgate, Usage};

use crate::support::own_redis::ThrowawayRedis;
use crate::support::{community, key, m, model, user};

fn request(c: &CommunityId, k: &str, estimate: Micros) -> spendgate::ReserveRequest {
    let mut request = spendgate::ReserveRequest::tokens(
        c.clone(),
        user("alice"),
        key(k),
        model("cheap"),
        1,
        1,
        1,
    );
    request.cost = CostBasis::Estimate { amount: estimate };
    request
}

/// Reserves, retrying while the connection manager reconnects.
async fn reserve(
    sg: &Spendgate,
    request: spendgate::ReserveRequest,
) -> Result<ReserveDecision, ReserveError> {
    for _ in 0..100 {
        match sg.budget().reserve(request.clone()).await {
            Err(ReserveError::StoreUnavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    panic!("the store stayed unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_lost_is_rebuilt_from_the_usage_log_and_reserves_wait_for_config_sync() {
    let mut redis = ThrowawayRedis::start().await;
    let db = tempfile::tempdir().unwrap();
    let sg = Spendgate::builder()
        .redis(redis.url())
        .database(format!(
            "sqlite:{}/spendgate.db?mode=rwc",
            db.path().display()
        ))
        .build()
        .await
        .unwrap();
    let budget = sg.budget();
    let limit = m(1_000_000);
    let mut expected = Vec::new();
    for i in 0..3_i64 {
        let c = community(&format!("lost-{i}"));
        budget.set_budget(&c, Limits::new(limit)).await.unwrap();
        let mut sum = 0;
        for k in 0..5_i64 {
            let ReserveDecision::Reserved(hold) =
                reserve(&sg, request(&c, &format!("k{k}"), m(200_000)))
                    .await
                    .unwrap()
            else {
                panic!("expected a hold");
            };
            let actual = 180_000 + i * 1_000 + k;
            hold.finalize(Usage::cost(m(actual))).await.unwrap();
            sum += actual;
        }
        expected.push((c, m(sum)));
    }

    redis.lose_everything().await;

    for (c, _) in &expected {
        let refused = reserve(&sg, request(c, "after", m(1))).await.unwrap_err();
        assert!(
            matches!(refused, ReserveError::NotConfigured(_)),
            "never accepted without a limit: {refused:?}"
        );
        assert_eq!(budget.status(c, None, None).await.unwrap().committed, m(0));
    }
    for (c, sum) in &expected {
        let report = budget.rebuild(c, None).await.unwrap();
        assert_eq!((report.before, report.after), (m(0), *sum), "{c}");
        let refused = reserve(&sg, request(c, "after", m(1))).await.unwrap_err();
        assert!(matches!(refused, ReserveError::NotConfigured(_)));
    }

    let ports = sg.ports();
    let sync = ConfigSyncJob::new(ports.config.clone(), budget.clone());
    assert_eq!(sync.tick(ports.clock.now()).await.failures, 0);
    for (c, sum) in &expected {
        let status = budget.status(c, None, None).await.unwrap();
        assert_eq!(
            (status.committed, status.limits),
            (*sum, Some(Limits::new(limit)))
        );
        let headroom = limit.checked_sub(*sum).unwrap();
        let too_big = headroom.checked_add(m(1)).unwrap();
        let denied = reserve(&sg, request(c, "too-big", too_big)).await.unwrap();
        assert!(
            matches!(denied, ReserveDecision::BudgetExceeded { .. }),
            "the rebuilt committed counts against the limit: {denied:?}"
        );
        let ReserveDecision::Reserved(hold) =
            reserve(&sg, request(c, "fits", headroom)).await.unwrap()
        else {
            panic!("the headroom left fits");
        };
        hold.cancel().await.unwrap();
    }
}

/// A spendgate on `redis` and a SQLite file, retrying settlements from
/// 100 ms, with a community of 1 USD holding 5,000 micro-USD for a call.
async fn holding(
    redis: &ThrowawayRedis,
    db: &tempfile::TempDir,
    label: &str,
) -> (Spendgate, CommunityId, spendgate::HoldGuard) {
    let ms = |n| spendgate::domain::Ttl::from_millis(n).unwrap();
    let sg = Spendgate::builder()
        .redis(redis.url())
        .database(format!(
            "sqlite:{}/spendgate.db?mode=rwc",
            db.path().display()
        ))
        .settings(spendgate::BudgetSettings {
            retry: spendgate::Backoff::new(ms(100), ms(500)),
            ..spendgate::BudgetSettings::default()
        })
        .build()
        .await
        .unwrap();
    let c = community(label);
    sg.budget()
        .set_budget(&c, Limits::new(m(1_000_000)))
        .await
        .unwrap();
    let ReserveDecision::Reserved(hold) = reserve(&sg, request(&c, "k1", m(5_000))).await.unwrap()
    else {
        panic!("expected a hold");
    };
    (sg, c, hold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_finalized_after_a_flush_commits_its_cost_to_its_period_once() {
    let redis = ThrowawayRedis::start().await;
    let db = tempfile::tempdir().unwrap();
    let (sg, c, hold) = holding(&redis, &db, "guard-flush").await;
    let period = hold.ticket().hold.period;
    redis.flush().await;
    let settled = hold.finalize(Usage::cost(m(4_000))).await.unwrap();
    assert!(
        matches!(
            settled,
            spendgate::Settled::Committed {
                outcome: spendgate::domain::FinalizeOutcome::CommittedWithoutHold(ref r)
            } if r.period == period && r.actual == m(4_000)
        ),
        "{settled:?}"
    );
    assert_eq!(
        sg.budget()
            .status(&c, Some(period), None)
            .await
            .unwrap()
            .committed,
        m(4_000)
    );
    assert_eq!(
        sg.ports().usage_log.total_cost(&c, period).await.unwrap(),
        m(4_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_finalized_while_redis_is_stopped_is_queued_and_applied_once() {
    let redis = ThrowawayRedis::start().await;
    let db = tempfile::tempdir().unwrap();
    let (sg, c, hold) = holding(&redis, &db, "guard-stop").await;
    redis.pause();
    let settled = hold.finalize(Usage::cost(m(4_000))).await.unwrap();
    assert_eq!(settled, spendgate::Settled::Queued { actual: m(4_000) });
    redis.resume();
    let budget = sg.budget();
    for _ in 0..100 {
        budget.replay_settlements(100).await.unwrap();
        if sg.ports().finalize_queue.len().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(4_000), m(0), 0)
    );
    assert_eq!(
        sg.ports()
            .usage_log
            .total_cost(&c, status.period)
            .await
            .unwrap(),
        m(4_000)
    );
}
