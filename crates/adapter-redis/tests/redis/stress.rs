//! Eight tasks × 10,000 mixed operations with a reaper running alongside,
//! across a month boundary: at the end the counters equal exactly what the
//! operations' own outcomes say (law 2).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use spendgate_contract::fixture::{key, listing, m, unique_community, user};
use spendgate_domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, Limits, ModelAlias,
    Period, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::support::standalone_redis;

const TASKS: usize = 8;
const OPS: usize = 10_000;
/// 2026-11-30T23:59:00Z: the run crosses into December.
const START: i64 = 1_796_083_140_000;

/// xorshift64*: enough randomness for a test, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn amount(&mut self, max: u64) -> i64 {
        i64::try_from(self.below(max)).unwrap()
    }
}

#[derive(Default)]
struct Tally {
    /// Estimates accepted (Reserved).
    reserved: i64,
    reserves: u64,
    /// Estimates released by a normal finalize or cancel.
    released: i64,
    finalized: u64,
    /// Actual costs committed (Finalized + LateFinalized).
    committed: i64,
}

fn now(clock: &AtomicI64) -> Timestamp {
    Timestamp::from_millis(clock.fetch_add(1, Ordering::SeqCst)).unwrap()
}

async fn worker(
    store: Arc<dyn BudgetStore>,
    c: CommunityId,
    clock: Arc<AtomicI64>,
    t: usize,
) -> Tally {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
    let who = user(&format!("0x{t:040x}"));
    let model = ModelAlias::parse("cheap").unwrap();
    let mut tally = Tally::default();
    let mut open: Vec<String> = Vec::new();
    let mut settled: Vec<String> = Vec::new();
    let mut next_key = 0u64;
    for _ in 0..OPS {
        let roll = rng.below(100);
        if roll < 40 || open.is_empty() {
            next_key += 1;
            let k = format!("{t}-{next_key}");
            let estimate = rng.amount(1_000);
            let r = Reservation {
                user: who.clone(),
                key: key(&k),
                estimate: m(estimate),
                model: model.clone(),
                ttl: Ttl::from_millis(50 + rng.amount(400)).unwrap(),
            };
            match store.reserve(&c, &r, now(&clock)).await.unwrap() {
                ReserveOutcome::Reserved { .. } => {
                    tally.reserved += estimate;
                    tally.reserves += 1;
                    open.push(k);
                }
                other => panic!("unexpected {other:?}"),
            }
        } else if roll < 75 {
            let i = usize::try_from(rng.below(open.len() as u64)).unwrap();
            let k = open.swap_remove(i);
            let hold = HoldRef {
                user: who.clone(),
                key: key(&k),
            };
            let outcome = if roll < 65 {
                let s = Settlement {
                    user: who.clone(),
                    key: key(&k),
                    actual: m(rng.amount(1_500)),
                };
                store.finalize(&c, &s, now(&clock)).await.unwrap()
            } else {
                store.cancel(&c, &hold, now(&clock)).await.unwrap()
            };
            match outcome {
                FinalizeOutcome::Finalized(receipt) => {
                    tally.released += receipt.estimate.get();
                    tally.finalized += 1;
                    tally.committed += receipt.actual.get();
                }
                FinalizeOutcome::LateFinalized(receipt) => {
                    tally.committed += receipt.actual.get();
                }
                other => panic!("unexpected {other:?}"),
            }
            settled.push(k);
        } else if roll < 85 {
            let i = usize::try_from(rng.below(open.len() as u64)).unwrap();
            let hold = HoldRef {
                user: who.clone(),
                key: key(&open[i]),
            };
            let ttl = Ttl::from_millis(50 + rng.amount(400)).unwrap();
            match store.extend(&c, &hold, ttl, now(&clock)).await {
                Ok(ExtendOutcome::Extended { .. } | ExtendOutcome::NotLive) => {}
                other => panic!("unexpected {other:?}"),
            }
        } else if roll < 92 && !settled.is_empty() {
            // Replay of a settled reserve: never a second hold.
            let i = usize::try_from(rng.below(settled.len() as u64)).unwrap();
            let r = Reservation {
                user: who.clone(),
                key: key(&settled[i]),
                estimate: m(1),
                model: model.clone(),
                ttl: Ttl::from_millis(100).unwrap(),
            };
            let outcome = store.reserve(&c, &r, now(&clock)).await.unwrap();
            assert_eq!(outcome, ReserveOutcome::AlreadySettled);
        } else if !settled.is_empty() {
            // Replay of a finalize: changes nothing.
            let i = usize::try_from(rng.below(settled.len() as u64)).unwrap();
            let s = Settlement {
                user: who.clone(),
                key: key(&settled[i]),
                actual: m(999),
            };
            match store.finalize(&c, &s, now(&clock)).await {
                Ok(FinalizeOutcome::AlreadyFinalized { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_operations_with_a_concurrent_reaper_conserve_every_counter() {
    let store: Arc<dyn BudgetStore> = Arc::new(standalone_redis().await);
    let c = unique_community("stress");
    store
        .set_limits(&c, Limits::new(m(9_000_000_000_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let clock = Arc::new(AtomicI64::new(START));
    let done = Arc::new(AtomicBool::new(false));

    let reaper = {
        let (store, c, clock, done) = (store.clone(), c.clone(), clock.clone(), done.clone());
        tokio::spawn(async move {
            let (mut count, mut reclaimed) = (0u64, 0i64);
            while !done.load(Ordering::SeqCst) {
                let r = store.reap(&c, now(&clock)).await.unwrap();
                count += r.count;
                reclaimed += r.reclaimed.get();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            (count, reclaimed)
        })
    };
    let workers: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(worker(store.clone(), c.clone(), clock.clone(), t)))
        .collect();
    let mut tallies = Vec::new();
    for w in workers {
        tallies.push(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (reaped_count, reaped_estimates) = reaper.await.unwrap();

    let periods = [
        Period::parse("2026-11").unwrap(),
        Period::parse("2026-12").unwrap(),
    ];
    let mut committed = 0;
    let mut reserved = 0;
    let mut holds = 0;
    let mut users: BTreeMap<String, i64> = BTreeMap::new();
    for p in periods {
        let s = store.status(&c, p).await.unwrap();
        committed += s.committed.get();
        reserved += s.reserved.get();
        holds += s.holds;
        for (u, spend) in listing(store.as_ref(), &c, p).await {
            *users.entry(u.to_string()).or_default() += spend.committed.get();
        }
    }
    let reserves: u64 = tallies.iter().map(|t| t.reserves).sum();
    let finalized: u64 = tallies.iter().map(|t| t.finalized).sum();
    let accepted: i64 = tallies.iter().map(|t| t.reserved).sum();
    let released: i64 = tallies.iter().map(|t| t.released).sum();
    let actuals: i64 = tallies.iter().map(|t| t.committed).sum();
    assert!(reaped_count > 0, "the reaper must have had work");
    assert_eq!(committed, actuals, "committed = sum of finalized actuals");
    assert_eq!(
        reserved,
        accepted - released - reaped_estimates,
        "reserved = sum of live estimates"
    );
    assert_eq!(holds, reserves - finalized - reaped_count);
    for (t, tally) in tallies.iter().enumerate() {
        let u = format!("0x{t:040x}");
        assert_eq!(
            users.get(&u).copied().unwrap_or(0),
            tally.committed,
            "user {u}"
        );
    }

    // Reaping far in the future releases exactly the rest.
    let end = Timestamp::from_millis(clock.load(Ordering::SeqCst) + 10_000_000).unwrap();
    let last = store.reap(&c, end).await.unwrap();
    assert_eq!(last.reclaimed.get(), reserved);
    assert_eq!(last.count, holds);
    for p in periods {
        let s = store.status(&c, p).await.unwrap();
        assert_eq!((s.reserved.get(), s.holds), (0, 0), "{p}");
    }
    let _: Option<StoreError> = None;
}
