//! Same-key races: many callers of one (community, user, key) at once.
//!
//! Each scenario runs [`rounds`] rounds, each on a fresh community and a
//! fresh key: a short setup (limits, usually a hold), then N ≥ 8 racers
//! started together. When the store offers a [`CommunityLock`], the round
//! first takes the community's lock, starts the racers, lets them queue
//! behind it for [`LOCK_HOLD`] and then releases it, so the racers really
//! overlap inside the store instead of by luck.
//!
//! After every round the harness looks for a serial order of the racers in
//! which the domain model ([`CommunityBudget`]) gives every racer exactly
//! the outcome it saw and ends in exactly the status the store reports
//! (linearizability against the model). On top, each scenario asserts its
//! one effect in plain words (one `Finalized` or `LateFinalized`, the rest
//! `AlreadyFinalized`, …), so a failure reads as the broken law.
//!
//! Rounds default to 200; `SPENDGATE_RACE_ROUNDS` overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use spendgate_domain::{
    BudgetPolicy, CommunityBudget, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome,
    HoldRef, Limits, ModelAlias, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
    UnheldCommit, UserId, UserSpend,
};
use spendgate_ports::{BudgetStatus, BudgetStore, StoreError};

use crate::fixture::{TTL_MS, at, key, listing, m, mid_november, november, unique_community, user};

/// How long a round holds the community's lock while its racers queue.
pub const LOCK_HOLD: Duration = Duration::from_millis(25);

/// A future that releases a lock taken by [`CommunityLock::hold`].
pub type Release = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A test-only way to hold a community's lock inside the store, so that
/// racers queue behind it and are released together (for PostgreSQL, a
/// transaction holding `SELECT … FROM budget_community … FOR UPDATE`).
pub trait CommunityLock: Send + Sync {
    /// Takes the lock of `community`; resolves once it is held, to a
    /// future that releases it.
    fn hold<'a>(
        &'a self,
        community: &'a CommunityId,
    ) -> Pin<Box<dyn Future<Output = Release> + Send + 'a>>;
}

/// The store a race runs on, with its lock hook when it has one.
pub struct RaceTarget {
    /// The store under test.
    pub store: Arc<dyn BudgetStore>,
    /// Holds a community's lock, if the store can.
    pub lock: Option<Arc<dyn CommunityLock>>,
}

impl RaceTarget {
    /// A store without a lock hook: its racers just race.
    pub fn plain(store: Arc<dyn BudgetStore>) -> Self {
        Self { store, lock: None }
    }
}

/// Runs one race scenario on a fresh runtime (see [`crate::run`]).
pub fn run<F, Fut, S, SFut>(factory: F, scenario: S)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = RaceTarget>,
    S: FnOnce(RaceTarget) -> SFut,
    SFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let target = factory().await;
        scenario(target).await;
    });
}

/// Rounds per scenario: 200, or `SPENDGATE_RACE_ROUNDS`.
pub fn rounds() -> usize {
    std::env::var("SPENDGATE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One racer's call; every racer of a round uses the round's (user, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Reserve `estimate` for `ttl_ms` at `now`.
    Reserve {
        /// Estimate.
        estimate: i64,
        /// TTL.
        ttl_ms: i64,
        /// Caller's clock.
        now: Timestamp,
    },
    /// Finalize with `actual` at `now`.
    Finalize {
        /// Actual cost.
        actual: i64,
        /// Caller's clock.
        now: Timestamp,
    },
    /// Cancel at `now`.
    Cancel {
        /// Caller's clock.
        now: Timestamp,
    },
    /// Extend by `ttl_ms` at `now`.
    Extend {
        /// New TTL from `now`.
        ttl_ms: i64,
        /// Caller's clock.
        now: Timestamp,
    },
    /// Reap the community at `now`.
    Reap {
        /// Caller's clock.
        now: Timestamp,
    },
    /// Set the community's limit.
    SetLimit {
        /// New limit.
        limit: i64,
    },
    /// Commit `actual` to November whether or not a hold exists.
    CommitUnheld {
        /// Actual cost.
        actual: i64,
        /// Caller's clock.
        now: Timestamp,
    },
}

/// What one racer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A reserve's result.
    Reserve(Result<ReserveOutcome, StoreError>),
    /// A finalize, cancel or commit_unheld result.
    Finalize(Result<FinalizeOutcome, StoreError>),
    /// An extend's result.
    Extend(Result<ExtendOutcome, StoreError>),
    /// A reap's result.
    Reap(Result<Reaped, StoreError>),
    /// A set_limits result.
    Unit(Result<(), StoreError>),
}

const USER: &str = "racer";
const LIMIT: i64 = 10_000;

fn hold_ref(k: &str) -> HoldRef {
    HoldRef {
        user: user(USER),
        key: key(k),
    }
}

fn reservation(k: &str, estimate: i64, ttl_ms: i64) -> Reservation {
    Reservation {
        user: user(USER),
        key: key(k),
        estimate: m(estimate),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

fn settlement(k: &str, actual: i64) -> Settlement {
    Settlement {
        user: user(USER),
        key: key(k),
        actual: m(actual),
    }
}

fn unheld(k: &str, actual: i64) -> UnheldCommit {
    UnheldCommit {
        user: user(USER),
        key: key(k),
        actual: m(actual),
        period: november(),
        model: ModelAlias::parse("cheap").unwrap(),
    }
}

impl Call {
    async fn on_store(&self, store: &dyn BudgetStore, c: &CommunityId, k: &str) -> Seen {
        match *self {
            Call::Reserve {
                estimate,
                ttl_ms,
                now,
            } => Seen::Reserve(
                store
                    .reserve(c, &reservation(k, estimate, ttl_ms), now)
                    .await,
            ),
            Call::Finalize { actual, now } => {
                Seen::Finalize(store.finalize(c, &settlement(k, actual), now).await)
            }
            Call::Cancel { now } => Seen::Finalize(store.cancel(c, &hold_ref(k), now).await),
            Call::Extend { ttl_ms, now } => Seen::Extend(
                store
                    .extend(c, &hold_ref(k), Ttl::from_millis(ttl_ms).unwrap(), now)
                    .await,
            ),
            Call::Reap { now } => Seen::Reap(store.reap(c, now).await),
            Call::SetLimit { limit } => Seen::Unit(
                store
                    .set_limits(c, Limits::new(m(limit)), ConfigVersion::ZERO)
                    .await,
            ),
            Call::CommitUnheld { actual, now } => {
                Seen::Finalize(store.commit_unheld(c, &unheld(k, actual), now).await)
            }
        }
    }

    fn on_model(&self, model: &mut CommunityBudget, c: &CommunityId, k: &str) -> Seen {
        let policy = BudgetPolicy::default();
        let err = |e| StoreError::from_domain(c, e);
        match *self {
            Call::Reserve {
                estimate,
                ttl_ms,
                now,
            } => Seen::Reserve(
                model
                    .reserve(&reservation(k, estimate, ttl_ms), now, policy)
                    .map_err(err),
            ),
            Call::Finalize { actual, now } => Seen::Finalize(
                model
                    .finalize(&settlement(k, actual), now, policy)
                    .map_err(err),
            ),
            Call::Cancel { now } => {
                Seen::Finalize(model.cancel(&hold_ref(k), now, policy).map_err(err))
            }
            Call::Extend { ttl_ms, now } => Seen::Extend(
                model
                    .extend(&hold_ref(k), Ttl::from_millis(ttl_ms).unwrap(), now)
                    .map_err(err),
            ),
            Call::Reap { now } => Seen::Reap(model.reap(now, policy).map_err(err)),
            Call::SetLimit { limit } => {
                model.set_limits(Limits::new(m(limit)), ConfigVersion::ZERO);
                Seen::Unit(Ok(()))
            }
            Call::CommitUnheld { actual, now } => Seen::Finalize(
                model
                    .commit_unheld(&unheld(k, actual), now, policy)
                    .map_err(err),
            ),
        }
    }
}

/// Is there an order of `pending` (indices into `calls`/`seen`) in which
/// the model, starting from `model`, answers each call as the store did
/// and ends at `status`?
fn linearizable(
    model: &CommunityBudget,
    c: &CommunityId,
    k: &str,
    calls: &[Call],
    seen: &[Seen],
    pending: &[usize],
    end: &(BudgetStatus, BTreeMap<UserId, UserSpend>),
) -> bool {
    if pending.is_empty() {
        let (status, users) = end;
        return BudgetStatus::from_model(model, status.period, None) == *status
            && model.counters(status.period).users == *users;
    }
    // Racers with the same call and the same result are interchangeable:
    // try one of each kind.
    let mut tried: BTreeSet<String> = BTreeSet::new();
    for (at_pos, &i) in pending.iter().enumerate() {
        if !tried.insert(format!("{:?}/{:?}", calls[i], seen[i])) {
            continue;
        }
        let mut next = model.clone();
        if calls[i].on_model(&mut next, c, k) != seen[i] {
            continue;
        }
        let mut rest = pending.to_vec();
        rest.remove(at_pos);
        if linearizable(&next, c, k, calls, seen, &rest, end) {
            return true;
        }
    }
    false
}

/// One round: a fresh community with [`LIMIT`], `setup` applied to the
/// store and the model one by one, then `racers` at once (behind the
/// store's lock when it has one). Checks linearizability against the
/// model and returns what each racer saw.
async fn round(
    target: &RaceTarget,
    label: &str,
    n: usize,
    setup: &[Call],
    racers: &[Call],
) -> Vec<Seen> {
    let c = unique_community(label);
    let k = format!("k{n}");
    let store = Arc::clone(&target.store);
    store
        .set_limits(&c, Limits::new(m(LIMIT)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let mut model = CommunityBudget::default();
    model.set_limits(Limits::new(m(LIMIT)), ConfigVersion::ZERO);
    for call in setup {
        let got = call.on_store(store.as_ref(), &c, &k).await;
        let want = call.on_model(&mut model, &c, &k);
        assert_eq!(got, want, "round {n}: setup {call:?}");
    }

    let release = match &target.lock {
        Some(lock) => Some(lock.hold(&c).await),
        None => None,
    };
    let start = Arc::new(tokio::sync::Barrier::new(racers.len()));
    let tasks: Vec<_> = racers
        .iter()
        .cloned()
        .map(|call| {
            let (store, c, k, start) =
                (Arc::clone(&store), c.clone(), k.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                call.on_store(store.as_ref(), &c, &k).await
            })
        })
        .collect();
    if let Some(release) = release {
        tokio::time::sleep(LOCK_HOLD).await;
        release.await;
    }
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await.unwrap());
    }

    let end = (
        store.status(&c, november()).await.unwrap(),
        listing(store.as_ref(), &c, november()).await,
    );
    let pending: Vec<usize> = (0..racers.len()).collect();
    assert!(
        linearizable(&model, &c, &k, racers, &seen, &pending, &end),
        "round {n}: no serial order of the racers explains what they saw and the status \
         the store ended in (conservation or exactly-once broken)\n racers: {racers:#?}\n \
         seen: {seen:#?}\n end: {end:#?}"
    );
    seen
}

fn t0() -> Timestamp {
    mid_november(0)
}

fn finalized(seen: &[Seen]) -> Vec<&FinalizeOutcome> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Finalize(Ok(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// Exactly one of `seen` finalized (`Finalized`, `LateFinalized` or
/// `CommittedWithoutHold`); every other finalize-like racer saw
/// `AlreadyFinalized` with the winner's actual.
fn assert_one_settlement(n: usize, seen: &[Seen]) {
    let outcomes = finalized(seen);
    let winners: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            FinalizeOutcome::Finalized(r)
            | FinalizeOutcome::LateFinalized(r)
            | FinalizeOutcome::CommittedWithoutHold(r) => Some(r.actual),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "round {n}: exactly one settlement must take effect, saw {seen:#?}"
    );
    for o in outcomes {
        if let FinalizeOutcome::AlreadyFinalized { actual } = o {
            assert_eq!(
                *actual, winners[0],
                "round {n}: replays report the first actual"
            );
        }
    }
    let settling = seen
        .iter()
        .filter(|s| matches!(s, Seen::Finalize(_)))
        .count();
    assert_eq!(
        finalized(seen).len(),
        settling,
        "round {n}: no settling racer may fail: {seen:#?}"
    );
}

fn reaped_total(seen: &[Seen]) -> u64 {
    seen.iter()
        .map(|s| match s {
            Seen::Reap(Ok(r)) => r.count,
            Seen::Reap(Err(e)) => panic!("reap failed: {e:?}"),
            _ => 0,
        })
        .sum()
}

const RACERS: usize = 10;

/// N reserves of one key: one `Reserved`, the rest `AlreadyReserved`.
pub async fn race_reserve_of_one_key_holds_once(target: RaceTarget) {
    for n in 0..rounds() {
        let racers = vec![
            Call::Reserve {
                estimate: 300,
                ttl_ms: TTL_MS,
                now: t0(),
            };
            RACERS
        ];
        let seen = round(&target, "race-reserve", n, &[], &racers).await;
        let reserved = seen
            .iter()
            .filter(|s| matches!(s, Seen::Reserve(Ok(ReserveOutcome::Reserved { .. }))))
            .count();
        let replays = seen
            .iter()
            .filter(|s| matches!(s, Seen::Reserve(Ok(ReserveOutcome::AlreadyReserved { .. }))))
            .count();
        assert_eq!(
            (reserved, replays),
            (1, RACERS - 1),
            "round {n}: one Reserved, the rest AlreadyReserved: {seen:#?}"
        );
    }
}

fn held(estimate: i64, ttl_ms: i64) -> Vec<Call> {
    vec![Call::Reserve {
        estimate,
        ttl_ms,
        now: t0(),
    }]
}

/// N finalizes with one actual: one `Finalized`, the rest
/// `AlreadyFinalized`.
pub async fn race_finalize_with_one_actual_commits_once(target: RaceTarget) {
    for n in 0..rounds() {
        let racers = vec![
            Call::Finalize {
                actual: 250,
                now: at(t0(), 1),
            };
            RACERS
        ];
        let seen = round(&target, "race-fin-same", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
    }
}

/// N finalizes with different actuals: one wins, every replay reports the
/// winner's actual.
pub async fn race_finalize_with_different_actuals_commits_one(target: RaceTarget) {
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| Call::Finalize {
                actual: 100 + 37 * i64::try_from(i).unwrap(),
                now: at(t0(), 1),
            })
            .collect();
        let seen = round(&target, "race-fin-diff", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
    }
}

/// Cancels against finalizes: one settles, with its own actual.
pub async fn race_cancel_against_finalize_settles_once(target: RaceTarget) {
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 2 == 0 {
                    Call::Cancel { now: at(t0(), 1) }
                } else {
                    Call::Finalize {
                        actual: 250,
                        now: at(t0(), 1),
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-cancel", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
    }
}

/// Finalizes and reaps at the expiry millisecond: either the finalize wins
/// (`Finalized`, nothing reaped) or the reaper does (one reaped, one
/// `LateFinalized`); the estimate is released once, the cost committed
/// once.
pub async fn race_finalize_against_reap_at_expiry_commits_once(target: RaceTarget) {
    let expiry = at(t0(), TTL_MS);
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 2 == 0 {
                    Call::Reap { now: expiry }
                } else {
                    Call::Finalize {
                        actual: 250,
                        now: expiry,
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-fin-reap", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
        let reaped = reaped_total(&seen);
        let late = finalized(&seen)
            .iter()
            .filter(|o| matches!(o, FinalizeOutcome::LateFinalized(_)))
            .count();
        assert!(
            (reaped, late) == (0, 0) || (reaped, late) == (1, 1),
            "round {n}: reaped {reaped} and {late} late finalizes: {seen:#?}"
        );
    }
}

/// Extends (just before expiry) against reaps (at expiry): either every
/// extend wins and nothing is reaped, or the hold is reaped once and every
/// extend sees it not live.
pub async fn race_extend_against_reap_releases_at_most_once(target: RaceTarget) {
    let expiry = at(t0(), TTL_MS);
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 2 == 0 {
                    Call::Reap { now: expiry }
                } else {
                    Call::Extend {
                        ttl_ms: TTL_MS,
                        now: at(expiry, -1),
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-ext-reap", n, &held(300, TTL_MS), &racers).await;
        let reaped = reaped_total(&seen);
        let extended = seen
            .iter()
            .filter(|s| matches!(s, Seen::Extend(Ok(ExtendOutcome::Extended { .. }))))
            .count();
        assert!(
            (reaped == 0 && extended == RACERS / 2) || (reaped == 1 && extended == 0),
            "round {n}: reaped {reaped} with {extended} extends: {seen:#?}"
        );
    }
}

/// Finalizes against limit changes: the finalize commits once and the
/// limits end as one of the writes left them.
pub async fn race_finalize_against_set_limits_commits_once(target: RaceTarget) {
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 3 == 0 {
                    Call::SetLimit {
                        limit: LIMIT + 1_000 * i64::try_from(i).unwrap(),
                    }
                } else {
                    Call::Finalize {
                        actual: 250,
                        now: at(t0(), 1),
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-fin-limits", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
        assert!(
            seen.iter().all(|s| !matches!(s, Seen::Unit(Err(_)))),
            "round {n}: set_limits failed: {seen:#?}"
        );
    }
}

/// Reserves of a key whose hold expired, against reaps: the hold is
/// reaped once; a reserve sees it held (`AlreadyReserved`) before the reap
/// and settled (`AlreadySettled`) after, never holds it again.
pub async fn race_reserve_against_reap_of_an_expired_hold_holds_nothing_new(target: RaceTarget) {
    let after = at(t0(), TTL_MS + 1);
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 2 == 0 {
                    Call::Reap { now: after }
                } else {
                    Call::Reserve {
                        estimate: 300,
                        ttl_ms: TTL_MS,
                        now: after,
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-res-reap", n, &held(300, TTL_MS), &racers).await;
        assert_eq!(reaped_total(&seen), 1, "round {n}: {seen:#?}");
        assert!(
            seen.iter().all(|s| matches!(
                s,
                Seen::Reap(_)
                    | Seen::Reserve(Ok(
                        ReserveOutcome::AlreadyReserved { .. } | ReserveOutcome::AlreadySettled
                    ))
            )),
            "round {n}: a reserve held the key again or failed: {seen:#?}"
        );
    }
}

/// commit_unheld against finalize on a live hold: both are a finalize
/// there, so one `Finalized` and the rest `AlreadyFinalized`.
pub async fn race_commit_unheld_against_finalize_on_a_live_hold_commits_once(target: RaceTarget) {
    for n in 0..rounds() {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                if i % 2 == 0 {
                    Call::CommitUnheld {
                        actual: 250,
                        now: at(t0(), 1),
                    }
                } else {
                    Call::Finalize {
                        actual: 250,
                        now: at(t0(), 1),
                    }
                }
            })
            .collect();
        let seen = round(&target, "race-unheld-fin", n, &held(300, TTL_MS), &racers).await;
        assert_one_settlement(n, &seen);
        assert!(
            finalized(&seen)
                .iter()
                .all(|o| !matches!(o, FinalizeOutcome::CommittedWithoutHold(_))),
            "round {n}: a live hold was committed without it: {seen:#?}"
        );
    }
}
