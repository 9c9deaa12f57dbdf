//! One simulated run: replicas of the real services and workers over the
//! memory adapters and the fault layers, driven by one seed, with the laws
//! checked after every step against the simulator's own ledger of the
//! answers the callers got.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use spendgate::{HoldGuard, KnownHold};
use spendgate_adapter_memory::{
    ManualClock, MemoryConfig, MemoryIdempotency, MemoryLease, MemoryUsageSource,
};
use spendgate_domain::{
    BudgetPolicy, CallId, CommunityId, HoldRef, Limits, Micros, Period, Timestamp,
};
use spendgate_ports::ConfigProvider;

use crate::backend::{Backend, Opened};
use crate::database::DatabasePorts;
use crate::faults::FaultyStore;
use crate::ledger::{CallKey, Ledger};
use crate::mutant::Mutant;
use crate::replica::{Durable, Replica};

/// What a run is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Steps before the run is brought to quiescence.
    pub steps: u32,
    /// Communities (tenants).
    pub communities: usize,
    /// Users per community.
    pub users: usize,
    /// `spendgate` processes sharing the store and the database.
    pub replicas: usize,
    /// A historical defect put back for this run.
    pub mutant: Option<Mutant>,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            steps: 300,
            communities: 3,
            users: 3,
            replicas: 2,
            mutant: None,
        }
    }
}

/// What a run leaves out: the shrinker's knobs. Each step draws from its
/// own generator (seed and step number), so leaving a step or a caller
/// out does not change what the other steps draw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps left out.
    pub skip: BTreeSet<u32>,
    /// Callers (community, user) left out: their steps do nothing.
    pub mask: BTreeSet<(usize, usize)>,
}

/// A broken law: where, which, and the events that led there.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run's seed (`SPENDGATE_SIM_SEED` replays it).
    pub seed: u64,
    /// The run's shape.
    pub shape: Shape,
    /// What the run left out.
    pub plan: Box<Plan>,
    /// The step the law broke at (`steps` for the quiescence checks).
    pub step: u32,
    /// The law, as the design brief numbers it.
    pub law: &'static str,
    /// What was seen against what the ledger says.
    pub detail: String,
    /// Every event of the run up to the failure.
    pub trace: Vec<String>,
}

fn joined<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} step {}: {}: {}",
            self.seed, self.step, self.law, self.detail
        )?;
        write!(
            f,
            "replay: SPENDGATE_SIM_SEED={} SPENDGATE_SIM_STEPS={}",
            self.seed, self.shape.steps
        )?;
        if !self.plan.skip.is_empty() {
            write!(f, " SPENDGATE_SIM_SKIP={}", joined(self.plan.skip.iter()))?;
        }
        if !self.plan.mask.is_empty() {
            let mask = joined(self.plan.mask.iter().map(|(c, u)| format!("{c}.{u}")));
            write!(f, " SPENDGATE_SIM_MASK={mask}")?;
        }
        if let Some(mutant) = self.shape.mutant {
            write!(f, " (mutant {mutant:?})")?;
        }
        writeln!(f)?;
        for event in &self.trace {
            writeln!(f, "  {event}")?;
        }
        Ok(())
    }
}

/// A hold a caller was told it has and has not settled yet.
pub(crate) struct Live {
    pub(crate) community: usize,
    pub(crate) user: usize,
    pub(crate) hold: HoldRef,
    pub(crate) known: KnownHold,
    /// The hold's period.
    pub(crate) period: Period,
    /// When the hold was made.
    pub(crate) created_at: Timestamp,
    /// The embedded caller's guard; `None` for a caller that settles by
    /// ids (over HTTP, or after its process restarted).
    pub(crate) guard: Option<HoldGuard>,
    /// The replica that made the hold.
    pub(crate) replica: usize,
    /// The cost of a settlement answered "not kept": retried with it.
    pub(crate) retry: Option<Micros>,
    /// The id the gateway gave the provider with the call.
    pub(crate) call_id: CallId,
}

impl Live {
    pub(crate) fn call(&self) -> CallKey {
        (self.community, self.hold.clone(), self.created_at)
    }
}

/// A settled call a caller may replay.
#[derive(Clone)]
pub(crate) struct Done {
    pub(crate) community: usize,
    pub(crate) user: usize,
    pub(crate) hold: HoldRef,
    pub(crate) known: KnownHold,
    pub(crate) period: Period,
    pub(crate) created_at: Timestamp,
    pub(crate) actual: Micros,
    /// When it was first settled.
    pub(crate) at: Timestamp,
}

impl Done {
    pub(crate) fn call(&self) -> CallKey {
        (self.community, self.hold.clone(), self.created_at)
    }
}

/// The configuration each community should have, by what its writers
/// were told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) limit: Micros,
    pub(crate) ai: bool,
    /// The limit the store is known to enforce: `None` while a change is
    /// saved but not yet in the store.
    pub(crate) store_limit: Option<Micros>,
}

/// A settlement accepted by a replica while the database was down: until
/// its usage row or its queue entry is in the database, it lives in that
/// replica's memory only.
pub(crate) struct Risk {
    pub(crate) call: CallKey,
    pub(crate) period: Period,
    pub(crate) actual: Micros,
    pub(crate) replica: usize,
}

pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) shape: Shape,
    pub(crate) plan: Plan,
    pub(crate) rng: TestRng,
    pub(crate) step: u32,
    pub(crate) durable: Durable,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) communities: Vec<CommunityId>,
    pub(crate) config: Vec<Config>,
    pub(crate) ledger: Ledger,
    pub(crate) live: Vec<Live>,
    pub(crate) settled: Vec<Done>,
    pub(crate) periods: BTreeSet<Period>,
    pub(crate) next_key: u64,
    pub(crate) trace: Vec<String>,
    pub(crate) risks: Vec<Risk>,
    /// The store lost its data and no rebuild has finished since.
    pub(crate) lost: bool,
    /// The store lost its data at some point: until quiescence the
    /// counters may lack costs answered committed before (the rebuild
    /// restores what the usage log holds; the rest lands as the queues
    /// replay).
    pub(crate) ever_lost: bool,
}

/// 2026-11-28T00:00:00Z: the month ends within the first clock jumps.
const START_MS: i64 = 1_795_824_000_000;

pub(crate) fn micros(n: i64) -> Micros {
    Micros::new(n).unwrap_or(Micros::ZERO)
}

/// SplitMix64's output function: spreads a counter over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator of one step: XorShift (cheap; the simulator needs
/// spread, not secrecy), its state mixed from the run's seed and the
/// step so neighbouring steps and seeds start far apart.
fn rng_for(seed: u64, step: u32) -> TestRng {
    let first = mix(seed ^ mix(u64::from(step)));
    let second = mix(first);
    let mut bytes = [0_u8; 16];
    bytes[..8].copy_from_slice(&first.to_le_bytes());
    bytes[8..].copy_from_slice(&second.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::XorShift, &bytes)
}

impl World {
    async fn new(seed: u64, shape: Shape, plan: Plan, store: Opened) -> Result<Self, String> {
        let start = Timestamp::from_millis(START_MS).map_err(|e| e.to_string())?;
        let clock = Arc::new(ManualClock::new(start));
        let durable = Durable {
            store: Arc::new(FaultyStore::new(
                store.store,
                store.restart,
                store.network,
                shape.mutant,
            )),
            db: DatabasePorts::new(MemoryConfig::with_clock(clock.clone()), shape.mutant),
            lease: Arc::new(MemoryLease::new()),
            idempotency: Arc::new(MemoryIdempotency::new()),
            provider: Arc::new(MemoryUsageSource::default()),
            clock,
        };
        let mut replicas = Vec::new();
        for _ in 0..shape.replicas.max(1) {
            replicas.push(Replica::start(&durable).await?);
        }
        let mut world = Self {
            seed,
            shape,
            plan,
            rng: rng_for(seed, u32::MAX),
            step: 0,
            durable,
            replicas,
            communities: Vec::new(),
            config: Vec::new(),
            ledger: Ledger::default(),
            live: Vec::new(),
            settled: Vec::new(),
            periods: BTreeSet::new(),
            next_key: 0,
            trace: Vec::new(),
            risks: Vec::new(),
            lost: false,
            ever_lost: false,
        };
        for c in 0..shape.communities {
            let community =
                CommunityId::parse(format!("sim-{}{c}", store.tag)).map_err(|e| e.to_string())?;
            let limit = micros(world.below(40_000) + 5_000);
            world.replicas[0]
                .sg
                .budget()
                .set_budget(&community, Limits::new(limit))
                .await
                .map_err(|e| e.to_string())?;
            world.communities.push(community);
            world.config.push(Config {
                limit,
                ai: true,
                store_limit: Some(limit),
            });
        }
        Ok(world)
    }

    pub(crate) fn below(&mut self, n: i64) -> i64 {
        let n = u64::try_from(n.max(1)).unwrap_or(1);
        i64::try_from(self.rng.next_u64() % n).unwrap_or(0)
    }

    pub(crate) fn pick(&mut self, len: usize) -> usize {
        usize::try_from(self.below(i64::try_from(len).unwrap_or(1))).unwrap_or(0)
    }

    pub(crate) fn chance(&mut self, percent: i64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn now(&self) -> Timestamp {
        spendgate_ports::Clock::now(self.durable.clock.as_ref())
    }

    pub(crate) fn masked(&self, community: usize, user: usize) -> bool {
        self.plan.mask.contains(&(community, user))
    }

    pub(crate) fn note(&mut self, event: String) {
        self.trace.push(format!("{:>5} {event}", self.step));
    }

    pub(crate) fn fail(&self, law: &'static str, detail: String) -> Failure {
        Failure {
            seed: self.seed,
            shape: self.shape,
            plan: Box::new(self.plan.clone()),
            step: self.step,
            law,
            detail,
            trace: self.trace.clone(),
        }
    }

    /// The store's counters for `period`, read past the faults.
    pub(crate) async fn counters(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<spendgate_ports::BudgetStatus, Failure> {
        self.durable
            .store
            .truth()
            .status(community, period)
            .await
            .map_err(|e| self.fail("read", e.to_string()))
    }

    /// The sum of `period`'s costs in the usage log, read past the faults.
    pub(crate) async fn logged(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<i64, Failure> {
        let users = spendgate_ports::UsageLog::committed_by_user(
            self.durable.db.usage_truth.as_ref(),
            community,
            period,
        )
        .await
        .map_err(|e| self.fail("read", e.to_string()))?;
        Ok(users.values().map(|m| m.get()).sum())
    }

    /// The laws that hold after every step: law 2 (each period's
    /// committed between what was answered committed and that plus what
    /// may still land), and the configuration its writers were told.
    pub(crate) async fn check(&self) -> Result<(), Failure> {
        for (c, community) in self.communities.iter().enumerate() {
            for period in &self.periods {
                let status = self.counters(community, *period).await?;
                let money = self.ledger.money(c, *period);
                let got = status.committed.get();
                let most =
                    money.committed + money.queued + money.uncertain + money.parked_unaccepted;
                if (got < money.committed && !self.ever_lost) || got > most {
                    return Err(self.fail(
                        "law 2",
                        format!(
                            "{community} {period}: committed {got}, answered committed {} + queued {} + uncertain {}",
                            money.committed, money.queued, money.uncertain
                        ),
                    ));
                }
            }
            let row = self
                .durable
                .db
                .config_truth
                .community(community)
                .await
                .map_err(|e| self.fail("read", e.to_string()))?;
            let want = self.config[c];
            match row {
                Some(row) if row.limits.limit == want.limit && row.ai_enabled == want.ai => {}
                other => {
                    return Err(self.fail(
                        "law 5",
                        format!(
                            "{community}: configuration {:?} / AI {:?}, its writers were told limit {} / AI {}",
                            other.as_ref().map(|r| r.limits.limit.get()),
                            other.as_ref().map(|r| r.ai_enabled),
                            want.limit.get(),
                            want.ai
                        ),
                    ));
                }
            }
            if let Some(limit) = want.store_limit {
                let status = self
                    .counters(
                        community,
                        Period::containing(self.now())
                            .map_err(|e| self.fail("setup", e.to_string()))?,
                    )
                    .await?;
                let enforced = status.limits.map(|l| l.limit);
                if enforced != Some(limit) {
                    return Err(self.fail(
                        "law 1",
                        format!(
                            "{community}: the store enforces {:?}, a budget change to {} was told it applied",
                            enforced.map(Micros::get),
                            limit.get()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn step_once(&mut self) -> Result<(), Failure> {
        match self.below(1000) {
            0..=259 => self.reserve().await?,
            260..=499 => self.settle().await?,
            500..=539 => self.race_settle().await?,
            540..=579 => self.replay_a_settlement().await?,
            580..=604 => self.heartbeat().await,
            605..=629 => self.hand_over().await?,
            630..=649 => self.drop_guard().await?,
            650..=669 => self.change_budget().await?,
            670..=684 => self.race_budget_and_switch().await?,
            685..=699 => self.race_budget_and_sync().await?,
            700..=709 => self.switch_ai().await,
            710..=819 => {
                let ms = self.below(300_000) + 1_000;
                self.advance(ms).await?;
            }
            820..=839 => {
                let ms = self.below(40 * 3_600_000) + 3_600_000;
                self.advance(ms).await?;
            }
            840..=939 => self.worker().await,
            940..=969 => self.change_store_fault(),
            970..=993 => self.change_db_fault(),
            994..=998 => self.crash_and_restart().await?,
            _ => {
                if self.chance(10) {
                    self.lose_the_store().await;
                }
            }
        }
        if self.lost && self.chance(10) {
            self.rebuild().await;
        }
        self.check().await
    }
}

/// Runs one seed on the memory store: `shape.steps` steps, then
/// quiescence. Returns the trace when every law held.
///
/// # Errors
/// The first broken law, with the trace up to it.
pub async fn run(seed: u64, shape: Shape) -> Result<Vec<String>, Failure> {
    run_plan(seed, shape, Plan::default()).await
}

/// [`run`], leaving out what `plan` says.
///
/// # Errors
/// As [`run`].
pub async fn run_plan(seed: u64, shape: Shape, plan: Plan) -> Result<Vec<String>, Failure> {
    run_on(&Backend::Memory, seed, shape, plan).await
}

/// [`run_plan`] on `backend`'s store.
///
/// # Errors
/// As [`run`]; a store that cannot be opened is a failure of law "setup".
pub async fn run_on(
    backend: &Backend,
    seed: u64,
    shape: Shape,
    plan: Plan,
) -> Result<Vec<String>, Failure> {
    let setup = |plan: Plan, detail: String| Failure {
        seed,
        shape,
        plan: Box::new(plan),
        step: 0,
        law: "setup",
        detail,
        trace: Vec::new(),
    };
    let opened = match backend.open(BudgetPolicy::default()).await {
        Ok(opened) => opened,
        Err(detail) => return Err(setup(plan, detail)),
    };
    let file = opened.file.clone();
    let result = async {
        let mut world = World::new(seed, shape, plan.clone(), opened)
            .await
            .map_err(|detail| setup(plan, detail))?;
        for step in 0..shape.steps {
            if world.plan.skip.contains(&step) {
                continue;
            }
            world.step = step;
            world.rng = rng_for(seed, step);
            world.step_once().await?;
        }
        world.step = shape.steps;
        world.rng = rng_for(seed, shape.steps);
        world.quiesce().await?;
        Ok(std::mem::take(&mut world.trace))
    }
    .await;
    if let Some(file) = file {
        let _ = std::fs::remove_file(file);
    }
    result
}
