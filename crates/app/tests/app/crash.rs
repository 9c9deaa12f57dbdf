//! A process that dies at any step of a settlement loses nothing and
//! doubles nothing: the replay finishes the work, the store commits once,
//! the log holds one row.

use spendgate::ReserveDecision;
use spendgate::Usage;
use spendgate::domain::{HoldRef, Micros, Timestamp};

use crate::support::faults::Step;
use crate::support::{Env, key, m, user};

pub async fn dies_after(env: Env, step: Step) {
    let c = env.community("crash", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    env.faults.stop_after(Some(step));
    let finalize = tokio::spawn(hold.finalize(Usage::cost(m(400))));
    crate::support::eventually("the settlement to stop", || env.faults.stopped()).await;
    assert!(!finalize.is_finished(), "the finalize hangs at {step:?}");
    finalize.abort();
    env.faults.stop_after(None);

    // A new process: after the in-flight lease the replay takes over.
    env.advance_ms(31_000);
    let report = env.sg.budget().replay_settlements(100).await.unwrap();
    let hold = HoldRef {
        user: user("alice"),
        key: key("k1"),
    };
    if step == Step::Completed {
        assert_eq!(report.claimed, 0, "nothing was left to do");
    } else {
        assert_eq!((report.claimed, report.completed), (1, 1));
    }
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(400), Micros::ZERO, 0)
    );
    assert_eq!(env.log.total_cost(&c, status.period).await.unwrap(), m(400));
    assert!(
        env.log
            .logged(&c, &hold, Timestamp::EPOCH)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(env.queue.len().await.unwrap(), 0);
    // The dropped guard's hand-over (it never settled) changes nothing
    // that was committed; a reserve of the same key is refused.
    let decision = env
        .sg
        .budget()
        .reserve(env.request(&c, "k1"))
        .await
        .unwrap();
    assert!(
        matches!(decision, ReserveDecision::AlreadySettled),
        "{decision:?}"
    );
}

pub async fn store_and_queue_both_down_keep_the_settlement_in_memory_until_they_are_back(env: Env) {
    let c = env.community("both-down", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_store_down(true);
    env.faults.set_queue_down(true);
    let settled = hold.finalize(Usage::cost(m(400))).await.unwrap();
    assert_eq!(settled, spendgate::Settled::Queued { actual: m(400) });
    env.faults.set_store_down(false);
    env.faults.set_queue_down(false);
    env.advance_ms(60_000);
    let report = env.sg.budget().replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (1, 1));
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.reserved), (m(400), Micros::ZERO));
    assert_eq!(env.log.total_cost(&c, status.period).await.unwrap(), m(400));
}

/// One test per step at which the process dies, and the double outage, on
/// the backend `$env` builds.
macro_rules! crash_tests {
    ($module:ident, $env:path) => {
        mod $module {
            use crate::support::faults::Step;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn death_after_the_write_ahead_entry_is_finished_by_the_replay() {
                super::dies_after($env().await, Step::Enqueued).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn death_after_the_store_commit_is_logged_once_by_the_replay() {
                super::dies_after($env().await, Step::StoreCommitted).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn death_after_the_log_write_commits_and_logs_once() {
                super::dies_after($env().await, Step::Logged).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn death_after_the_queue_entry_completed_leaves_nothing_to_do() {
                super::dies_after($env().await, Step::Completed).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn store_and_queue_both_down_keep_the_settlement_in_memory_until_they_are_back() {
                super::store_and_queue_both_down_keep_the_settlement_in_memory_until_they_are_back(
                    $env().await,
                )
                .await;
            }
        }
    };
}

crash_tests!(memory, crate::support::memory);
crash_tests!(sqlite, crate::support::sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_while_calls_finish_loses_no_usage_row_and_doubles_none() {
    let env = crate::support::memory().await;
    let c = env.community("db-down", 10).await;
    let mut holds = Vec::new();
    for i in 0..20 {
        holds.push(env.reserve(env.request(&c, &format!("k{i}"))).await);
    }
    // The database (finalize queue and usage log) goes away; the store
    // stays.
    env.faults.set_queue_down(true);
    env.faults.set_log_down(true);
    for (i, hold) in holds.into_iter().enumerate() {
        let settled = hold
            .finalize(spendgate::Usage::cost(m(100 + i64::try_from(i).unwrap())))
            .await
            .unwrap();
        assert!(
            matches!(settled, spendgate::Settled::Committed { .. }),
            "{settled:?}"
        );
    }
    env.advance_ms(60_000);
    let report = env.sg.budget().replay_settlements(100).await.unwrap();
    assert_eq!(
        (report.claimed, report.completed),
        (20, 0),
        "kept while the database is down"
    );

    env.faults.set_queue_down(false);
    env.faults.set_log_down(false);
    env.advance_ms(600_000);
    let report = env.sg.budget().replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (20, 20));
    let expected = m((100..120).sum());
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved),
        (expected, Micros::ZERO)
    );
    assert_eq!(
        env.log.total_cost(&c, status.period).await.unwrap(),
        expected
    );
    assert_eq!(env.queue.len().await.unwrap(), 0);
    assert_eq!(
        env.sg
            .budget()
            .replay_settlements(100)
            .await
            .unwrap()
            .claimed,
        0
    );
}
