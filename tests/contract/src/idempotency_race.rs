//! Racing claims of one request: N ≥ 8 callers at once, many rounds, each
//! round on a fresh key.
//!
//! Racers wait on a barrier and then claim together. When the store
//! offers a [`WriteGate`], the round first closes it (for PostgreSQL, a
//! transaction holding a lock that every insert into the records table
//! waits for), starts the racers, lets them queue behind it for
//! [`LOCK_HOLD`] and then opens it, so that the claims really overlap
//! inside the database instead of by luck.
//!
//! Rounds: [`crate::race::rounds`], at least [`MIN_ROUNDS`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use spendgate_domain::Timestamp;
use spendgate_ports::{Claim, IdempotencyStore, RequestId};
use tokio::sync::Barrier;

use crate::fixture::at;
use crate::idempotency::{KEEP_MS, answer, create, kept, t0};
use crate::race::{LOCK_HOLD, Release};

/// Racers per round.
pub const RACERS: usize = 8;

/// The fewest rounds a race runs, whatever `SPENDGATE_RACE_ROUNDS` says.
pub const MIN_ROUNDS: usize = 50;

/// A test-only way to make every claim's write wait, so that racers queue
/// and are let go together.
pub trait WriteGate: Send + Sync {
    /// Closes the gate; resolves once it is closed, to a future that opens
    /// it.
    fn hold(&self) -> Pin<Box<dyn Future<Output = Release> + Send + '_>>;
}

/// The store a race runs on, with its gate when it has one.
pub struct RaceTarget {
    /// The store under test.
    pub store: Arc<dyn IdempotencyStore>,
    /// Holds every claim's write, if the store can.
    pub gate: Option<Arc<dyn WriteGate>>,
}

impl RaceTarget {
    /// A store without a gate: its racers just race.
    pub fn plain(store: Arc<dyn IdempotencyStore>) -> Self {
        Self { store, gate: None }
    }
}

fn rounds() -> usize {
    crate::race::rounds().max(MIN_ROUNDS)
}

/// Claims `id` once per fingerprint, all at once at `now`; the outcomes in
/// the fingerprints' order.
async fn race(
    target: &RaceTarget,
    id: &RequestId,
    fingerprints: &[Vec<u8>],
    now: Timestamp,
) -> Vec<Claim> {
    let release = match &target.gate {
        Some(gate) => Some(gate.hold().await),
        None => None,
    };
    let start = Arc::new(Barrier::new(fingerprints.len()));
    let tasks: Vec<_> = fingerprints
        .iter()
        .map(|fingerprint| {
            let (store, start) = (Arc::clone(&target.store), Arc::clone(&start));
            let (id, fingerprint) = (id.clone(), fingerprint.clone());
            tokio::spawn(async move {
                start.wait().await;
                store
                    .claim(&id, &fingerprint, now, at(now, KEEP_MS))
                    .await
                    .unwrap()
            })
        })
        .collect();
    if let Some(release) = release {
        tokio::time::sleep(LOCK_HOLD).await;
        release.await;
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Exactly one of the racers started; every other one saw `Pending` when
/// its fingerprint is the starter's and `Mismatch` otherwise.
fn assert_one_start(round: usize, fingerprints: &[Vec<u8>], outcomes: &[Claim]) {
    let started: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| **outcome == Claim::Started)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        started.len(),
        1,
        "round {round}: exactly one start, got {outcomes:?}"
    );
    let winner = &fingerprints[started[0]];
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == started[0] {
            continue;
        }
        let expected = if &fingerprints[i] == winner {
            Claim::Pending
        } else {
            Claim::Mismatch
        };
        assert_eq!(outcome, &expected, "round {round}, racer {i}");
    }
}

/// N racers claim the same new request: one starts, the rest are pending.
pub async fn racing_claims_of_a_new_request_start_exactly_once(target: RaceTarget) {
    let fingerprints = vec![b"same body".to_vec(); RACERS];
    for round in 0..rounds() {
        let id = create(&format!("new-{round}"));
        let outcomes = race(&target, &id, &fingerprints, t0()).await;
        assert_one_start(round, &fingerprints, &outcomes);
    }
}

/// N racers claim one new key with two different bodies: one starts, the
/// others are pending with its body and mismatched with the other one.
pub async fn racing_claims_with_mixed_fingerprints_start_once_and_judge_the_rest(
    target: RaceTarget,
) {
    let fingerprints: Vec<Vec<u8>> = (0..RACERS)
        .map(|i| {
            if i % 2 == 0 {
                b"even".to_vec()
            } else {
                b"odd".to_vec()
            }
        })
        .collect();
    let (mut even_won, mut odd_won) = (0, 0);
    for round in 0..rounds() {
        let id = create(&format!("mixed-{round}"));
        let outcomes = race(&target, &id, &fingerprints, t0()).await;
        assert_one_start(round, &fingerprints, &outcomes);
        if outcomes.iter().step_by(2).any(|c| *c == Claim::Started) {
            even_won += 1;
        } else {
            odd_won += 1;
        }
    }
    eprintln!("mixed fingerprints: even body started {even_won} rounds, odd {odd_won}");
}

/// N racers claim a request whose record (completed or pending) just
/// expired: one replaces it, the rest see the new record.
pub async fn racing_claims_of_an_expired_record_replace_it_exactly_once(target: RaceTarget) {
    let fingerprints: Vec<Vec<u8>> = (0..RACERS)
        .map(|i| {
            if i % 3 == 0 {
                b"a".to_vec()
            } else {
                b"b".to_vec()
            }
        })
        .collect();
    for round in 0..rounds() {
        let id = create(&format!("expired-{round}"));
        let store = &target.store;
        assert_eq!(
            store.claim(&id, b"old", t0(), kept()).await,
            Ok(Claim::Started)
        );
        if round % 2 == 0 {
            let done = store.complete(&id, b"old", &answer(200, b"old")).await;
            assert_eq!(done, Ok(true));
        }
        let outcomes = race(&target, &id, &fingerprints, kept()).await;
        assert_one_start(round, &fingerprints, &outcomes);
    }
}
