//! Reconciliation asks the provider about exactly one call, and commits
//! nothing from an answer about another.

use spendgate::domain::{HoldRef, Micros, Timestamp, TokenCounts};
use spendgate::ports::{Clock, CostSource, ProviderUsage};
use spendgate::workers::{Job, ReconciliationJob, ReconciliationSettings, TickOutcome};

use crate::dead_letters::counted;
use crate::support::{Env, m, memory, user};

fn now(env: &Env) -> Timestamp {
    env.clock.now()
}

fn job(env: &Env) -> ReconciliationJob {
    ReconciliationJob::new(
        env.reconciliation.clone(),
        env.provider.clone(),
        env.sg.budget().clone(),
        ReconciliationSettings::default(),
    )
}

fn usage(cost: i64, model: &str, at: Timestamp) -> ProviderUsage {
    ProviderUsage {
        cost: m(cost),
        model: model.into(),
        tokens: TokenCounts {
            prompt: 1_000,
            completion: 550,
        },
        completed_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_in_another_community_never_gets_the_cost_of_this_call() {
    let env = memory().await;
    let a = env.community("recon-a", 10).await;
    let b = env.community("recon-b", 10).await;
    // Both tenants chose the key k1 for alice's call.
    let hold_a = env.reserve(env.request(&a, "k1")).await;
    let hold_b = env.reserve(env.request(&b, "k1")).await;
    assert_ne!(hold_a.call_id(), hold_b.call_id());
    env.provider
        .record(hold_a.call_id(), usage(480, "cheap", now(&env)))
        .unwrap();
    drop(hold_a);
    drop(hold_b);
    assert_eq!(env.handovers(2).await.len(), 2);
    env.advance_ms(30_000);
    assert_eq!(
        job(&env).tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 1
        },
        "the provider knows a's call only"
    );
    let budget = env.sg.budget();
    assert_eq!(
        budget.status(&a, None, None).await.unwrap().committed,
        m(480)
    );
    let status_b = budget.status(&b, None, None).await.unwrap();
    assert_eq!((status_b.committed, status_b.holds), (Micros::ZERO, 1));
    let k1 = HoldRef {
        user: user("alice"),
        key: crate::support::key("k1"),
    };
    assert!(
        env.log
            .logged(&b, &k1, Timestamp::EPOCH)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_provider_never_reports_is_charged_its_estimate_after_the_last_try() {
    let env = memory().await;
    let c = env.community("recon-charge", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    let estimate = hold.estimate();
    drop(hold);
    assert_eq!(env.handovers(1).await.len(), 1);
    let job = job(&env);
    env.advance_ms(30_000);
    for wait in [10_000, 20_000] {
        assert_eq!(job.tick(now(&env)).await.failures, 1);
        let status = env.sg.budget().status(&c, None, None).await.unwrap();
        assert_eq!(status.committed, Micros::ZERO, "not before the last try");
        env.advance_ms(wait);
    }
    assert_eq!(job.tick(now(&env)).await.failures, 1);
    assert!(env.reconciliation.items().unwrap().is_empty());
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (estimate, Micros::ZERO, 0),
        "a dropped stream still cost money"
    );
    let k1 = HoldRef {
        user: user("alice"),
        key: crate::support::key("k1"),
    };
    let row = env
        .log
        .logged(&c, &k1, Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.cost, row.source),
        (estimate, CostSource::Reconciliation)
    );
}

#[test]
fn an_answer_about_another_model_is_refused_counted_and_commits_nothing() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let env = memory().await;
                let c = env.community("recon-model", 10).await;
                let ticket = env.reserve(env.request(&c, "k1")).await.into_ticket();
                // What the provider says about the call: a reasoning model.
                let answer = usage(90_000, "reasoning", now(&env));
                let refused = env.sg.budget().reconcile(&ticket, &answer).await;
                assert!(
                    matches!(
                        refused,
                        Err(spendgate::ReconcileError::ModelMismatch { ref reported, .. })
                            if reported == "reasoning"
                    ),
                    "{refused:?}"
                );
                let status = env.sg.budget().status(&c, None, None).await.unwrap();
                assert_eq!((status.committed, status.holds), (Micros::ZERO, 1));
                assert_eq!(env.queue.len().await.unwrap(), 0, "nothing queued either");
            });
    });
    assert_eq!(
        counted(
            &snapshotter,
            spendgate::services::telemetry::RECONCILIATION_REFUSED
        ),
        [("model_mismatch".to_owned(), 1)]
    );
}
