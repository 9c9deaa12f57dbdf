//! One simulated run: the real services and workers over the memory
//! adapters and the fault layer, driven by one seed, with the laws checked
//! after every step against the simulator's own ledger of the answers the
//! callers got.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use spendgate::workers::{FinalizeReplayJob, Job, ReaperJob};
use spendgate::{KnownHold, ReserveDecision, SettleRequest, Settled, Spendgate, Usage};
use spendgate_adapter_memory::ManualClock;
use spendgate_domain::{
    BudgetPolicy, CommunityId, FinalizeOutcome, HoldRef, IdempotencyKey, Limits, Micros,
    ModelAlias, Period, Reservation, Timestamp, Ttl, UserId,
};
use spendgate_ports::{BudgetStore, Clock};

use crate::faults::{Fault, FaultyStore};

/// What a run is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Steps before the run is brought to quiescence.
    pub steps: u32,
    /// Communities (tenants).
    pub communities: usize,
    /// Users per community.
    pub users: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            steps: 300,
            communities: 3,
            users: 3,
        }
    }
}

/// A broken law: where, which, and the events that led there.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run's seed (`SPENDGATE_SIM_SEED` replays it).
    pub seed: u64,
    /// The step the law broke at (`steps` for the quiescence checks).
    pub step: u32,
    /// The law, as the design brief numbers it.
    pub law: &'static str,
    /// What was seen against what the ledger says.
    pub detail: String,
    /// Every event of the run up to the failure.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} step {}: {}: {}",
            self.seed, self.step, self.law, self.detail
        )?;
        for event in &self.trace {
            writeln!(f, "  {event}")?;
        }
        Ok(())
    }
}

/// A hold a caller was told it has and has not settled yet.
#[derive(Debug, Clone)]
struct Live {
    community: usize,
    hold: HoldRef,
    known: KnownHold,
}

/// Money the callers were told was accepted, per (community, period).
#[derive(Debug, Default, Clone, Copy)]
struct Accepted {
    /// Answered as committed by the store.
    committed: i64,
    /// Answered as queued: committed once the replay applies it.
    queued: i64,
}

struct World {
    seed: u64,
    rng: TestRng,
    shape: Shape,
    clock: Arc<ManualClock>,
    store: Arc<FaultyStore>,
    sg: Spendgate,
    reaper: ReaperJob,
    replay: FinalizeReplayJob,
    communities: Vec<CommunityId>,
    limits: Vec<Micros>,
    live: Vec<Live>,
    /// Settled calls, the cost they were settled with, and whether the
    /// first answer was "queued", for replays.
    settled: Vec<(usize, HoldRef, KnownHold, Micros, bool)>,
    accepted: BTreeMap<(usize, Period), Accepted>,
    /// Costs refused at their first settlement and parked for an operator
    /// (the store no longer knew the call, the marker retention after its
    /// hold): never accepted, but among the dead letters.
    parked_unaccepted: BTreeMap<(usize, Period), i64>,
    periods: BTreeSet<Period>,
    next_key: u64,
    trace: Vec<String>,
    step: u32,
}

/// 2026-11-28T00:00:00Z: the month ends within the first clock jumps.
const START_MS: i64 = 1_795_824_000_000;

fn micros(n: i64) -> Micros {
    Micros::new(n).unwrap_or(Micros::ZERO)
}

impl World {
    async fn new(seed: u64, shape: Shape) -> Result<Self, String> {
        let mut bytes = [0_u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let start = Timestamp::from_millis(START_MS).map_err(|e| e.to_string())?;
        let clock = Arc::new(ManualClock::new(start));
        let store = Arc::new(FaultyStore::new(BudgetPolicy::default()));
        let sg = Spendgate::builder()
            .clock(clock.clone())
            .store(store.clone())
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let reaper = ReaperJob::new(sg.ports().store.clone(), sg.ports().config.clone());
        let replay = FinalizeReplayJob::new(sg.budget().clone(), 100);
        let mut world = Self {
            seed,
            rng,
            shape,
            clock,
            store,
            sg,
            reaper,
            replay,
            communities: Vec::new(),
            limits: Vec::new(),
            live: Vec::new(),
            settled: Vec::new(),
            accepted: BTreeMap::new(),
            parked_unaccepted: BTreeMap::new(),
            periods: BTreeSet::new(),
            next_key: 0,
            trace: Vec::new(),
            step: 0,
        };
        for c in 0..shape.communities {
            let community = CommunityId::parse(format!("sim-{c}")).map_err(|e| e.to_string())?;
            let limit = micros(world.below(40_000) + 5_000);
            world
                .sg
                .budget()
                .set_budget(&community, Limits::new(limit))
                .await
                .map_err(|e| e.to_string())?;
            world.communities.push(community);
            world.limits.push(limit);
        }
        Ok(world)
    }

    fn below(&mut self, n: i64) -> i64 {
        let n = u64::try_from(n.max(1)).unwrap_or(1);
        i64::try_from(self.rng.next_u64() % n).unwrap_or(0)
    }

    fn chance(&mut self, percent: i64) -> bool {
        self.below(100) < percent
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn note(&mut self, event: String) {
        self.trace.push(format!("{:>5} {event}", self.step));
    }

    fn fail(&self, law: &'static str, detail: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            law,
            detail,
            trace: self.trace.clone(),
        }
    }

    async fn reserve(&mut self) -> Result<(), Failure> {
        let c = usize::try_from(self.below(i64::try_from(self.shape.communities).unwrap_or(1)))
            .unwrap_or(0);
        let u = self.below(i64::try_from(self.shape.users).unwrap_or(1));
        self.next_key += 1;
        let key = format!("k{}", self.next_key);
        let limit = self.limits[c].get();
        let estimate = if self.chance(10) {
            0
        } else {
            self.below(limit / 4) + 1
        };
        let ttl = Ttl::from_millis(self.below(540_000) + 60_000)
            .map_err(|e| self.fail("setup", e.to_string()))?;
        let reservation = Reservation {
            user: UserId::parse(format!("u{u}")).map_err(|e| self.fail("setup", e.to_string()))?,
            key: IdempotencyKey::parse(&key).map_err(|e| self.fail("setup", e.to_string()))?,
            estimate: micros(estimate),
            model: ModelAlias::parse("cheap").map_err(|e| self.fail("setup", e.to_string()))?,
            ttl,
        };
        let fault = self.store.fault();
        let community = self.communities[c].clone();
        let answer = self
            .sg
            .budget()
            .reserve_priced(&community, reservation, None)
            .await;
        match answer {
            Ok(ReserveDecision::Reserved(guard)) => {
                let ticket = guard.into_ticket();
                self.note(format!(
                    "reserve {community} u{u} {key} {estimate} -> held in {} (store {fault:?})",
                    ticket.hold.period
                ));
                if fault == Fault::Down {
                    return Err(self.fail(
                        "law 6",
                        "a reserve was accepted while its store was down".into(),
                    ));
                }
                let period = ticket.hold.period;
                self.periods.insert(period);
                let status = self.counters(&community, period).await?;
                let used = status.committed.get() + status.reserved.get();
                if used > limit {
                    return Err(self.fail(
                        "law 1",
                        format!("after an accepted reserve committed + reserved = {used} > limit {limit}"),
                    ));
                }
                self.live.push(Live {
                    community: c,
                    hold: ticket.hold_ref(),
                    known: KnownHold::from(&ticket.hold),
                });
            }
            Ok(ReserveDecision::BudgetExceeded { .. }) => {
                self.note(format!(
                    "reserve {community} u{u} {key} {estimate} -> exceeded"
                ));
            }
            Ok(other) => {
                return Err(self.fail(
                    "answer",
                    format!("reserve {community} u{u} {key} (a new key) answered {other:?}"),
                ));
            }
            Err(e) => self.note(format!(
                "reserve {community} u{u} {key} {estimate} -> refused: {e} (store {fault:?})"
            )),
        }
        Ok(())
    }

    fn cost_for(&mut self, estimate: i64) -> i64 {
        match self.below(100) {
            0..=39 => estimate,
            40..=59 => self.below(estimate + 1),
            60..=74 => estimate + self.below(estimate + 1) + 1,
            _ => 0,
        }
    }

    async fn settle(&mut self) -> Result<(), Failure> {
        if self.live.is_empty() {
            return Ok(());
        }
        let at =
            usize::try_from(self.below(i64::try_from(self.live.len()).unwrap_or(1))).unwrap_or(0);
        let live = self.live.swap_remove(at);
        let estimate = live.known.estimate.map_or(0, Micros::get);
        let actual = micros(self.cost_for(estimate));
        let community = self.communities[live.community].clone();
        let fault = self.store.fault();
        let request = SettleRequest::new(community.clone(), live.hold.clone(), Usage::cost(actual))
            .with_known(live.known.clone());
        let answer = self.sg.budget().settle(request).await;
        let mut queued = false;
        let period = live.known.period.unwrap_or(
            Period::containing(self.now()).map_err(|e| self.fail("setup", e.to_string()))?,
        );
        let what = format!(
            "settle {community} {} {} {} (est {estimate}, store {fault:?})",
            live.hold.user, live.hold.key, actual
        );
        match answer {
            Ok(Settled::Committed { outcome }) => {
                match &outcome {
                    FinalizeOutcome::Finalized(r)
                    | FinalizeOutcome::LateFinalized(r)
                    | FinalizeOutcome::CommittedWithoutHold(r) => {
                        if r.period != period {
                            return Err(self.fail(
                                "law 4",
                                format!("{what}: committed to {} not {period}", r.period),
                            ));
                        }
                        self.accepted
                            .entry((live.community, r.period))
                            .or_default()
                            .committed += r.actual.get();
                    }
                    other => {
                        return Err(self.fail(
                            "law 3",
                            format!("{what}: a first settlement answered {other:?}"),
                        ));
                    }
                }
                self.note(format!("{what} -> {outcome:?}"));
            }
            Ok(Settled::Queued { actual }) => {
                queued = true;
                self.accepted
                    .entry((live.community, period))
                    .or_default()
                    .queued += actual.get();
                self.note(format!("{what} -> queued"));
            }
            Ok(other) => {
                return Err(self.fail("answer", format!("{what}: {other:?}")));
            }
            Err(spendgate::FinalizeError::UnknownHold { .. }) if actual.get() == 0 => {
                self.note(format!(
                    "{what} -> unknown (a cancel of a hold the store lost)"
                ));
            }
            Err(spendgate::FinalizeError::Store(spendgate_ports::StoreError::UnknownHold {
                ..
            })) => {
                *self
                    .parked_unaccepted
                    .entry((live.community, period))
                    .or_default() += actual.get();
                self.note(format!(
                    "{what} -> refused and parked (unknown, long after its hold)"
                ));
            }
            Err(e) => {
                return Err(self.fail("answer", format!("{what}: {e}")));
            }
        }
        self.settled
            .push((live.community, live.hold, live.known, actual, queued));
        Ok(())
    }

    async fn replay_a_settlement(&mut self) -> Result<(), Failure> {
        if self.settled.is_empty() {
            return Ok(());
        }
        let at = usize::try_from(self.below(i64::try_from(self.settled.len()).unwrap_or(1)))
            .unwrap_or(0);
        let (c, hold, known, actual, queued) = self.settled[at].clone();
        let community = self.communities[c].clone();
        let request = SettleRequest::new(community.clone(), hold.clone(), Usage::cost(actual))
            .with_known(known);
        let answer = self.sg.budget().settle(request).await;
        let what = format!("replay {community} {} {} {actual}", hold.user, hold.key);
        match answer {
            Ok(Settled::Committed {
                outcome: FinalizeOutcome::AlreadyFinalized { .. },
            })
            | Ok(Settled::Queued { .. })
            | Err(spendgate::FinalizeError::UnknownHold { .. })
            | Err(spendgate::FinalizeError::Store(spendgate_ports::StoreError::UnknownHold {
                ..
            })) => {
                self.note(format!("{what} -> {answer:?}"));
                Ok(())
            }
            // The first answer was "queued" and the queue has not applied
            // it yet: this replay is the one that applies it (the queue
            // entry then finds it applied).
            Ok(Settled::Committed {
                outcome:
                    FinalizeOutcome::Finalized(ref r)
                    | FinalizeOutcome::LateFinalized(ref r)
                    | FinalizeOutcome::CommittedWithoutHold(ref r),
            }) if queued && r.actual == actual => {
                self.note(format!(
                    "{what} -> applies the queued settlement: {answer:?}"
                ));
                Ok(())
            }
            other => Err(self.fail("law 3", format!("{what}: a replay answered {other:?}"))),
        }
    }

    /// Time passes with the workers running: the finalize replay ticks
    /// at least once an hour of it (a worker stopped for longer than the
    /// marker retention is a fault of its own, not simulated yet).
    async fn advance(&mut self, ms: i64) -> Result<(), Failure> {
        let mut left = ms;
        while left > 0 {
            let slice = left.min(3_600_000);
            left -= slice;
            let now = self
                .clock
                .advance(slice)
                .map_err(|e| self.fail("setup", e.to_string()))?;
            self.note(format!("clock +{slice} ms -> {}", now.as_millis()));
            self.workers(false).await;
        }
        Ok(())
    }

    async fn workers(&mut self, reap: bool) {
        let now = self.now();
        let outcome = if reap {
            self.reaper.tick(now).await
        } else {
            self.replay.tick(now).await
        };
        let name = if reap { "reaper" } else { "replay" };
        self.note(format!(
            "{name} tick: {} items, {} failures",
            outcome.items, outcome.failures
        ));
    }

    fn change_fault(&mut self) {
        let fault = match self.below(3) {
            0 => Fault::Down,
            1 => Fault::LoseNextReply,
            _ => Fault::Up,
        };
        self.store.set(fault);
        self.note(format!("store -> {fault:?}"));
    }

    /// The store's counters for `period`, read past the faults.
    async fn counters(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<spendgate_ports::BudgetStatus, Failure> {
        self.store
            .truth()
            .status(community, period)
            .await
            .map_err(|e| self.fail("read", e.to_string()))
    }

    /// Law 2 after a step: each period's committed is at least what was
    /// answered as committed and at most that plus what was queued.
    async fn check(&self) -> Result<(), Failure> {
        for (c, community) in self.communities.iter().enumerate() {
            for period in &self.periods {
                let status = self.counters(community, *period).await?;
                let accepted = self
                    .accepted
                    .get(&(c, *period))
                    .copied()
                    .unwrap_or_default();
                let got = status.committed.get();
                if got < accepted.committed || got > accepted.committed + accepted.queued {
                    return Err(self.fail(
                        "law 2",
                        format!(
                            "{community} {period}: committed {got}, answered committed {} + queued {}",
                            accepted.committed, accepted.queued
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn step_once(&mut self) -> Result<(), Failure> {
        match self.below(100) {
            0..=29 => self.reserve().await?,
            30..=59 => self.settle().await?,
            60..=64 => self.replay_a_settlement().await?,
            65..=76 => {
                let ms = self.below(300_000) + 1_000;
                self.advance(ms).await?;
            }
            77..=78 => {
                let ms = self.below(40 * 3_600_000) + 3_600_000;
                self.advance(ms).await?;
            }
            79..=86 => self.workers(true).await,
            87..=94 => self.workers(false).await,
            _ => self.change_fault(),
        }
        self.check().await
    }

    /// Heals the store, lets the workers run out, and checks law 5: every
    /// accepted cost committed exactly once, in the counters and in the
    /// usage log, and no hold left.
    async fn quiesce(&mut self) -> Result<(), Failure> {
        self.store.set(Fault::Up);
        self.note("store -> Up (quiescence)".into());
        for _ in 0..50 {
            self.advance(60_000).await?;
            let outcome = self.replay.tick(self.now()).await;
            if outcome.items == 0 && outcome.failures == 0 {
                break;
            }
        }
        self.advance(24 * 3_600_000).await?;
        self.reaper.tick(self.now()).await;
        self.step = self.shape.steps;
        // Settlements parked for an operator: the store no longer knew
        // them long after an attempt that may have applied.
        let mut parked: BTreeMap<(usize, Period), i64> = BTreeMap::new();
        let letters = self
            .sg
            .ports()
            .finalize_queue
            .dead_letters(10_000)
            .await
            .map_err(|e| self.fail("read", e.to_string()))?;
        for letter in letters {
            let c = self
                .communities
                .iter()
                .position(|c| *c == letter.item.community)
                .ok_or_else(|| self.fail("law 7", "a dead letter of no community".into()))?;
            self.note(format!("dead letter: {:?}", letter.item.settlement));
            *parked.entry((c, letter.item.period)).or_default() +=
                letter.item.settlement.actual.get();
        }
        for (c, community) in self.communities.iter().enumerate() {
            for period in &self.periods {
                let status = self.counters(community, *period).await?;
                let logged = self
                    .sg
                    .ports()
                    .usage_log
                    .total_cost(community, *period)
                    .await
                    .map_err(|e| self.fail("read", e.to_string()))?;
                let accepted = self
                    .accepted
                    .get(&(c, *period))
                    .copied()
                    .unwrap_or_default();
                let want = accepted.committed + accepted.queued;
                let dead = parked.get(&(c, *period)).copied().unwrap_or(0)
                    - self
                        .parked_unaccepted
                        .get(&(c, *period))
                        .copied()
                        .unwrap_or(0);
                // A parked settlement is in the counters once or not at
                // all (its lost attempt applied or not), never twice, and
                // in the usage log not at all.
                let got = status.committed.get();
                if got < want - dead || got > want || logged.get() != want - dead {
                    return Err(self.fail(
                        "law 5",
                        format!(
                            "{community} {period}: store committed {got}, usage log {}, accepted {want}, parked {dead}",
                            logged.get()
                        ),
                    ));
                }
                if status.holds != 0 || status.reserved != Micros::ZERO {
                    return Err(self.fail(
                        "law 5",
                        format!(
                            "{community} {period}: {} holds ({} reserved) left at quiescence",
                            status.holds,
                            status.reserved.get()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs one seed: `shape.steps` steps, then quiescence. Returns the trace
/// when every law held.
///
/// # Errors
/// The first broken law, with the trace up to it.
pub async fn run(seed: u64, shape: Shape) -> Result<Vec<String>, Failure> {
    let mut world = World::new(seed, shape).await.map_err(|detail| Failure {
        seed,
        step: 0,
        law: "setup",
        detail,
        trace: Vec::new(),
    })?;
    for step in 0..shape.steps {
        world.step = step;
        world.step_once().await?;
    }
    world.quiesce().await?;
    Ok(world.trace)
}
