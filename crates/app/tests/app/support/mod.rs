//! What the app tests share: environments per backend and fault injection
//! (a cuttable proxy is the `spendgate-fault-proxy` crate).

pub mod faults;
pub mod own_redis;
pub mod servers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use spendgate::domain::{
    CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, Timestamp, UserId,
};
use spendgate::ports::{FinalizeQueue, Handover, UsageLog};
use spendgate::{BudgetSettings, ReserveDecision, ReserveRequest, Spendgate};
use spendgate_adapter_memory::{ManualClock, MemoryUsageSource, MemoryWorkQueue};

use faults::{Faults, FaultyLog, FaultyQueue, FaultyStore};

/// 2026-11-15T00:00:00Z.
pub const MID_NOVEMBER_MS: i64 = 1_794_700_800_000;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A community id no other test uses, in this run or another.
pub fn community(label: &str) -> CommunityId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    CommunityId::parse(format!("app-{label}-{}-{nanos:x}-{n}", std::process::id())).unwrap()
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::parse(name).unwrap()
}

pub fn model(name: &str) -> ModelAlias {
    ModelAlias::parse(name).unwrap()
}

pub fn usd(dollars: u32) -> Micros {
    Micros::from_usd(dollars)
}

pub fn m(micros: i64) -> Micros {
    Micros::new(micros).unwrap()
}

/// The ports an [`Env`] was assembled from, before fault injection.
pub struct Parts {
    pub spendgate: Spendgate,
    pub keep: Box<dyn std::any::Any + Send + Sync>,
    pub wipe: Wipe,
}

/// How a backend loses the store's data, as Redis does on a restart
/// without persistence.
pub enum Wipe {
    /// The store is replaced by an empty memory store.
    FreshMemoryStore,
    /// The store is replaced by an empty SQL store on a new SQLite file.
    FreshSqliteStore,
    /// Every key of the community is deleted from this Redis.
    RedisKeys { url: String },
}

/// One spendgate with its faults and the real adapters behind them.
pub struct Env {
    pub sg: Spendgate,
    pub clock: Arc<ManualClock>,
    pub faults: Arc<Faults>,
    pub store: Arc<FaultyStore>,
    /// The real usage log, for assertions.
    pub log: Arc<dyn UsageLog>,
    /// The real finalize queue, for assertions.
    pub queue: Arc<FinalizeQueue>,
    pub reconciliation: Arc<MemoryWorkQueue<Handover>>,
    /// What the provider's usage endpoint answers.
    pub provider: Arc<MemoryUsageSource>,
    pub wipe: Wipe,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Env {
    /// Wraps the store, log and queue of `parts` in fault switches and
    /// builds the spendgate under test on them, with `clock`.
    pub async fn assemble(parts: Parts, clock: Arc<ManualClock>) -> Self {
        Self::assemble_with(parts, clock, BudgetSettings::default()).await
    }

    /// [`Env::assemble`] with the service's `settings`.
    pub async fn assemble_with(
        parts: Parts,
        clock: Arc<ManualClock>,
        settings: BudgetSettings,
    ) -> Self {
        let ports = parts.spendgate.ports().clone();
        let faults = Arc::new(Faults::default());
        let store = Arc::new(FaultyStore::new(ports.store.clone(), faults.clone()));
        let reconciliation = Arc::new(MemoryWorkQueue::<Handover>::new());
        let provider = Arc::new(MemoryUsageSource::default());
        let sg = Spendgate::builder()
            .store(store.clone())
            .config(ports.config.clone())
            .tier_overrides(ports.tier_overrides.clone())
            .tier_cache(ports.tier_cache.clone())
            .usage_log(Arc::new(FaultyLog {
                inner: ports.usage_log.clone(),
                faults: faults.clone(),
            }))
            .finalize_queue(Arc::new(FaultyQueue {
                inner: ports.finalize_queue.clone(),
                faults: faults.clone(),
            }))
            .reconciliation_queue(reconciliation.clone())
            .usage_source(provider.clone())
            .lease(ports.lease.clone())
            .clock(clock.clone())
            .settings(settings)
            .build()
            .await
            .unwrap();
        Self {
            sg,
            clock,
            faults,
            store,
            log: ports.usage_log.clone(),
            queue: ports.finalize_queue.clone(),
            reconciliation,
            provider,
            wipe: parts.wipe,
            _keep: parts.keep,
        }
    }

    pub fn clock_at_mid_november() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            Timestamp::from_millis(MID_NOVEMBER_MS).unwrap(),
        ))
    }

    /// A configured community with a limit of `dollars`.
    pub async fn community(&self, label: &str, dollars: u32) -> CommunityId {
        let c = community(label);
        self.sg
            .budget()
            .set_budget(&c, Limits::new(usd(dollars)))
            .await
            .unwrap();
        c
    }

    /// A reserve of model `cheap` at tier 1 for 1,200 + 800 tokens (660
    /// micro-USD).
    pub fn request(&self, c: &CommunityId, k: &str) -> ReserveRequest {
        ReserveRequest::tokens(
            c.clone(),
            user("alice"),
            key(k),
            model("cheap"),
            1,
            1_200,
            800,
        )
    }

    pub async fn reserve(&self, request: ReserveRequest) -> spendgate::HoldGuard {
        match self.sg.budget().reserve(request).await.unwrap() {
            ReserveDecision::Reserved(guard) => guard,
            other => panic!("expected a hold, got {other:?}"),
        }
    }

    /// Waits (a bounded while) until the finalize queue holds at most
    /// `n` settlements.
    pub async fn queue_down_to(&self, n: u64) {
        for _ in 0..1_000 {
            if self.queue.len().await.unwrap() <= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the finalize queue never got down to {n}");
    }

    pub fn advance_ms(&self, ms: i64) {
        self.clock.advance(ms).unwrap();
    }

    /// Waits (a bounded while) until `n` holds were handed over, then
    /// returns them: a dropped guard hands over from a spawned task.
    pub async fn handovers(&self, n: usize) -> Vec<Handover> {
        for _ in 0..200 {
            if self.reconciliation.items().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.reconciliation
            .items()
            .unwrap()
            .into_iter()
            .map(|c| c.item)
            .collect()
    }
}

/// An environment on memory alone.
pub async fn memory() -> Env {
    memory_with(BudgetSettings::default()).await
}

/// [`memory`] with the service's `settings`.
pub async fn memory_with(settings: BudgetSettings) -> Env {
    let clock = Env::clock_at_mid_november();
    let spendgate = Spendgate::builder()
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let parts = Parts {
        spendgate,
        keep: Box::new(()),
        wipe: Wipe::FreshMemoryStore,
    };
    Env::assemble_with(parts, clock, settings).await
}

/// An environment on one SQLite file: budgets, configuration, usage log
/// and finalize queue together, as the embedded default runs.
pub async fn sqlite() -> Env {
    let clock = Env::clock_at_mid_november();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let spendgate = Spendgate::builder()
        .database(url)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let parts = Parts {
        spendgate,
        keep: Box::new(dir),
        wipe: Wipe::FreshSqliteStore,
    };
    Env::assemble(parts, clock).await
}

/// Loses everything the store held for `c` (and, for the replacing kinds,
/// for every community), keeping configuration, log and queues.
pub async fn lose_store_data(env: &Env, c: &CommunityId) {
    match &env.wipe {
        Wipe::FreshMemoryStore => {
            env.store
                .replace(Arc::new(spendgate_adapter_memory::MemoryBudgetStore::new(
                    Default::default(),
                )))
        }
        Wipe::FreshSqliteStore => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}/lost.db?mode=rwc", dir.path().display());
            let fresh = Spendgate::builder()
                .database(url)
                .sql_store()
                .build()
                .await
                .unwrap();
            env.store.replace(fresh.ports().store.clone());
            std::mem::forget(dir);
        }
        Wipe::RedisKeys { url } => {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let pattern = format!("sg:{{{c}}}:*");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!keys.is_empty(), "no keys matched {pattern}");
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// Waits until `done` holds, polling for up to 10 s (machines under load
/// are slow; nothing here measures time), and fails naming `what`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
