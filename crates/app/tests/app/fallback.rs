//! The in-memory fallback of the finalize queue, while the queue's
//! database cannot answer: bounded, so a long outage cannot grow the
//! process without limit.

use spendgate::domain::{HoldRef, Micros, Timestamp};
use spendgate::ports::RepoError;
use spendgate::{BudgetSettings, FinalizeError, Settled, Usage};

use crate::support::{memory_with, user};

#[tokio::test]
async fn a_full_fallback_queue_refuses_a_settlement_the_store_cannot_take_either() {
    let env = memory_with(BudgetSettings {
        fallback_queue_capacity: 2,
        ..BudgetSettings::default()
    })
    .await;
    let c = env.community("fallback-full", 10).await;
    let budget = env.sg.budget();
    let mut tickets = Vec::new();
    for k in ["k1", "k2", "k3"] {
        tickets.push(env.reserve(env.request(&c, k)).await.into_ticket());
    }
    env.faults.set_queue_down(true);
    env.faults.set_store_down(true);
    for ticket in &tickets[..2] {
        let settled = budget
            .finalize(ticket, Usage::cost(Micros::new(100).unwrap()))
            .await;
        assert_eq!(
            settled,
            Ok(Settled::Queued {
                actual: Micros::new(100).unwrap()
            })
        );
    }
    let refused = budget
        .finalize(&tickets[2], Usage::cost(Micros::new(100).unwrap()))
        .await;
    assert_eq!(
        refused,
        Err(FinalizeError::NotKept(RepoError::Full { capacity: 2 })),
        "nothing holds the third settlement: its caller must retry it"
    );

    env.faults.set_store_down(false);
    env.faults.set_queue_down(false);
    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (2, 2));
    // The memory is free again: the retried third settlement is applied.
    budget
        .finalize(&tickets[2], Usage::cost(Micros::new(100).unwrap()))
        .await
        .unwrap();
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.holds),
        (Micros::new(300).unwrap(), 0)
    );
    let hold = HoldRef {
        user: user("alice"),
        key: tickets[2].hold.key.clone(),
    };
    assert!(
        env.log
            .logged(&c, &hold, Timestamp::EPOCH)
            .await
            .unwrap()
            .is_some()
    );
}

/// A settlement kept in memory while the queue's database was down moves
/// there on the first replay pass after the database is back, even while
/// the store still cannot apply it: a crash of the process then loses
/// nothing, and an operator sees it if it is ever parked.
#[tokio::test]
async fn a_settlement_kept_in_memory_moves_to_the_database_once_it_answers() {
    let env = memory_with(BudgetSettings::default()).await;
    let c = env.community("fallback-moves", 10).await;
    let budget = env.sg.budget();
    let ticket = env.reserve(env.request(&c, "k1")).await.into_ticket();
    let cost = Micros::new(100).unwrap();
    env.faults.set_queue_down(true);
    env.faults.set_store_down(true);
    assert_eq!(
        budget.finalize(&ticket, Usage::cost(cost)).await,
        Ok(Settled::Queued { actual: cost })
    );
    env.faults.set_queue_down(false);
    let durable = env.sg.ports().finalize_queue.clone();
    assert_eq!(durable.len().await.unwrap(), 0, "kept in memory only");

    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!(report.completed, 0, "the store is still down");
    assert_eq!(durable.len().await.unwrap(), 1);

    env.faults.set_store_down(false);
    env.advance_ms(3_600_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (1, 1));
    assert_eq!(durable.len().await.unwrap(), 0);
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (cost, 0));
}
