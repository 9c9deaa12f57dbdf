//! Racing callers: no interleaving may overspend (law 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spendgate_domain::{Micros, ReserveOutcome};
use spendgate_ports::BudgetStore;

use crate::fixture::{Ctx, m, mid_november, november};

/// 1,000 concurrent reserves of 7 against a limit of 1,000: exactly 142 are
/// accepted, `committed + reserved` never exceeds 1,000 while they race (a
/// monitor polls status throughout) and ends at 994; settling the accepted
/// ones concurrently moves all 994 into `committed`.
pub async fn thousand_reserves_of_seven(store: Arc<dyn BudgetStore>) {
    let ctx = Arc::new(Ctx::with_limit(&store, "race", 1000).await);
    let now = mid_november(0);
    let stop = Arc::new(AtomicBool::new(false));

    let monitor = {
        let ctx = Arc::clone(&ctx);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut samples = 0u32;
            loop {
                let status = ctx.status(november()).await;
                let used = status.committed.checked_add(status.reserved).unwrap();
                assert!(used <= m(1000), "overspent while racing: {used:?}");
                samples += 1;
                if stop.load(Ordering::SeqCst) {
                    return samples;
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let racers: Vec<_> = (0..1000)
        .map(|i| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let (user, key) = (format!("u{}", i % 10), format!("race-{i}"));
                let outcome = ctx.reserve(&user, &key, 7, now).await;
                (user, key, outcome)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut denied = 0;
    for racer in racers {
        let (user, key, outcome) = racer.await.unwrap();
        match outcome {
            ReserveOutcome::Reserved { .. } => accepted.push((user, key)),
            ReserveOutcome::BudgetExceeded { .. } => denied += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let samples = monitor.await.unwrap();
    assert!(samples > 0);
    assert_eq!((accepted.len(), denied), (142, 858));
    ctx.assert_counters(november(), 0, 994, 142).await;

    let settlers: Vec<_> = accepted
        .into_iter()
        .map(|(user, key)| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { ctx.finalize(&user, &key, 7, now).await })
        })
        .collect();
    for settler in settlers {
        settler.await.unwrap().unwrap();
    }
    ctx.assert_counters(november(), 994, 0, 0).await;
    let per_user: Micros = ctx
        .users(november())
        .await
        .values()
        .try_fold(Micros::ZERO, |sum, u| sum.checked_add(u.committed))
        .unwrap();
    assert_eq!(per_user, m(994));
}
