//! Settlements the store refuses for good are parked as dead letters:
//! answered with a typed error, never replayed again, kept for an
//! operator. Run on memory, SQLite and Redis + PostgreSQL.

use spendgate::domain::{FinalizeOutcome, Limits, Micros};
use spendgate::{CostBasis, FinalizeError, HoldTicket, Settled, Usage};

use crate::support::{Env, m};

/// A community whose limit is the largest amount, with two holds of 1
/// micro-USD each (`k1`, `k2`).
///
/// One settles for `almost`, the largest amount less the other hold;
/// then the other's cost of 2 takes `committed` past the largest amount.
async fn two_holds_under_the_largest_limit(env: &Env) -> (HoldTicket, HoldTicket) {
    let c = crate::support::community("dead-letter");
    env.sg
        .budget()
        .set_budget(&c, Limits::new(Micros::MAX))
        .await
        .unwrap();
    let mut tickets = Vec::new();
    for k in ["k1", "k2"] {
        let mut request = env.request(&c, k);
        request.cost = CostBasis::Estimate { amount: m(1) };
        tickets.push(env.reserve(request).await.into_ticket());
    }
    let second = tickets.pop().unwrap();
    (tickets.pop().unwrap(), second)
}

fn almost() -> Micros {
    Micros::new(Micros::MAX.get() - 1).unwrap()
}

pub async fn a_finalize_whose_cost_would_overflow_is_refused_and_parked_as_a_dead_letter(env: Env) {
    let budget = env.sg.budget();
    let (k1, k2) = two_holds_under_the_largest_limit(&env).await;
    let c = k1.community.clone();
    budget.finalize(&k1, Usage::cost(almost())).await.unwrap();

    let refused = budget.finalize(&k2, Usage::cost(m(2))).await;
    assert!(
        matches!(refused, Err(FinalizeError::CostOutOfRange(_))),
        "{refused:?}"
    );
    assert_eq!(env.queue.len().await.unwrap(), 0, "not left to be retried");
    assert_eq!(env.queue.dead_letter_count().await.unwrap(), 1);
    let dead = env.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].item.settlement.key, k2.hold.key);
    assert_eq!(dead[0].item.settlement.actual, m(2));
    assert!(dead[0].error.contains("out of range"), "{}", dead[0].error);
    env.advance_ms(7_200_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!(report.claimed, 0, "a dead letter is never replayed");
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (almost(), 1));

    // The hold is still there to settle with a cost that fits; that
    // settlement completes the dead letter.
    let settled = budget.cancel(&k2).await.unwrap();
    assert!(
        matches!(
            settled,
            Settled::Committed {
                outcome: FinalizeOutcome::Finalized(_)
            }
        ),
        "{settled:?}"
    );
    assert_eq!(env.queue.dead_letter_count().await.unwrap(), 0);
}

pub async fn a_queued_settlement_the_store_refuses_for_good_becomes_a_dead_letter(env: Env) {
    let budget = env.sg.budget();
    let (k1, k2) = two_holds_under_the_largest_limit(&env).await;
    env.faults.set_store_down(true);
    let queued = budget.finalize(&k1, Usage::cost(m(2))).await.unwrap();
    assert_eq!(queued, Settled::Queued { actual: m(2) });
    env.faults.set_store_down(false);
    budget.finalize(&k2, Usage::cost(almost())).await.unwrap();

    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.refused), (1, 1));
    assert_eq!(env.queue.len().await.unwrap(), 0);
    assert_eq!(env.queue.dead_letter_count().await.unwrap(), 1);
    env.advance_ms(7_200_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!(report.claimed, 0, "not retried, however long one waits");
}

/// Runs each scenario on memory, SQLite and Redis + PostgreSQL.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(crate::support::memory().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::support::sqlite().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_postgres() {
                    super::$name(crate::redis_postgres::env().await).await;
                }
            }
        )*
    };
}

on_every_backend!(
    a_finalize_whose_cost_would_overflow_is_refused_and_parked_as_a_dead_letter,
    a_queued_settlement_the_store_refuses_for_good_becomes_a_dead_letter,
);

/// Counter values of metric `name`, by their labels' values joined.
pub fn counted(
    snapshotter: &metrics_util::debugging::Snapshotter,
    name: &str,
) -> Vec<(String, u64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => Some((
                key.key()
                    .labels()
                    .map(|l| l.value().to_owned())
                    .collect::<String>(),
                n,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn dead_letters_are_counted_by_reason() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                a_finalize_whose_cost_would_overflow_is_refused_and_parked_as_a_dead_letter(
                    crate::support::memory().await,
                )
                .await;
            });
    });
    assert_eq!(
        counted(&snapshotter, spendgate::services::telemetry::DEAD_LETTERS),
        [("out_of_range".to_owned(), 1)]
    );
}
