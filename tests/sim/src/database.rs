//! The fault layer around the database's ports: the configuration, the
//! usage log and the finalize queue live in one database, so one switch
//! takes them down (or slows them) together, as a PostgreSQL restart does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use spendgate_adapter_memory::{MemoryConfig, MemoryUsageLog, MemoryWorkQueue};
use spendgate_domain::{
    CommunityId, ConfigVersion, HoldRef, Limits, Micros, Period, Timestamp, Ttl, UserId,
};
use spendgate_ports::{
    Claimed, CommunityConfig, ConfigProvider, DeadLetter, Handover, PendingSettlement, QueueItem,
    RepoError, UsageLog, UsageRecord, WorkQueue,
};

use crate::mutant::Mutant;

/// How the database answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFault {
    /// Every call is served at once.
    Up,
    /// Every call is refused before it applies.
    Down,
    /// Every call is served after a delay of a few simulated
    /// milliseconds (different from call to call), so concurrent callers
    /// overtake each other.
    Slow,
}

/// The one switch every database port of a run shares.
#[derive(Debug)]
pub struct Database {
    fault: Mutex<DbFault>,
    calls: AtomicU64,
    mutant: Option<Mutant>,
}

impl Database {
    /// A database that is up.
    pub fn new(mutant: Option<Mutant>) -> Self {
        Self {
            fault: Mutex::new(DbFault::Up),
            calls: AtomicU64::new(0),
            mutant,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DbFault> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets how the database answers from now on.
    pub fn set(&self, fault: DbFault) {
        *self.lock() = fault;
    }

    /// How the database answers now.
    pub fn fault(&self) -> DbFault {
        *self.lock()
    }

    /// Before every call: refused when down, delayed when slow.
    async fn enter(&self) -> Result<(), RepoError> {
        let fault = self.fault();
        match fault {
            DbFault::Down => Err(RepoError::Unavailable("simulated: database down".into())),
            DbFault::Up => Ok(()),
            DbFault::Slow => {
                let n = self.calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1 + n.wrapping_mul(7_919) % 5)).await;
                Ok(())
            }
        }
    }
}

/// The database's ports, behind one [`Database`] switch.
#[derive(Clone)]
pub struct DatabasePorts {
    /// The switch.
    pub switch: Arc<Database>,
    /// Community configuration, faulted.
    pub config: Arc<FaultyConfig>,
    /// The usage log, faulted.
    pub usage_log: Arc<FaultyUsageLog>,
    /// The finalize queue, faulted.
    pub finalize_queue: Arc<FaultyQueue<PendingSettlement>>,
    /// The reconciliation queue, faulted.
    pub reconciliation: Arc<FaultyQueue<Handover>>,
    /// The configuration behind the faults, for the simulator's checks.
    pub config_truth: Arc<MemoryConfig>,
    /// The usage log behind the faults, for the simulator's checks.
    pub usage_truth: Arc<MemoryUsageLog>,
    /// The finalize queue behind the faults, for the simulator's checks.
    pub queue_truth: Arc<MemoryWorkQueue<PendingSettlement>>,
    /// The reconciliation queue behind the faults, for the simulator's
    /// checks.
    pub reconciliation_truth: Arc<MemoryWorkQueue<Handover>>,
}

impl DatabasePorts {
    /// Empty ports over `config` (which issues versions from the run's
    /// clock), up.
    pub fn new(config: MemoryConfig, mutant: Option<Mutant>) -> Self {
        let switch = Arc::new(Database::new(mutant));
        let config_truth = Arc::new(config);
        let usage_truth = Arc::new(MemoryUsageLog::default());
        let queue_truth = Arc::new(MemoryWorkQueue::new());
        let reconciliation_truth = Arc::new(MemoryWorkQueue::new());
        Self {
            config: Arc::new(FaultyConfig {
                db: switch.clone(),
                inner: config_truth.clone(),
            }),
            usage_log: Arc::new(FaultyUsageLog {
                db: switch.clone(),
                inner: usage_truth.clone(),
            }),
            finalize_queue: Arc::new(FaultyQueue {
                db: switch.clone(),
                inner: queue_truth.clone(),
            }),
            reconciliation: Arc::new(FaultyQueue {
                db: switch.clone(),
                inner: reconciliation_truth.clone(),
            }),
            switch,
            config_truth,
            usage_truth,
            queue_truth,
            reconciliation_truth,
        }
    }
}

/// [`MemoryConfig`] behind the database switch.
pub struct FaultyConfig {
    db: Arc<Database>,
    inner: Arc<MemoryConfig>,
}

#[async_trait]
impl ConfigProvider for FaultyConfig {
    async fn active_communities(&self) -> Result<Vec<CommunityConfig>, RepoError> {
        self.db.enter().await?;
        self.inner.active_communities().await
    }

    async fn community(
        &self,
        community: &CommunityId,
    ) -> Result<Option<CommunityConfig>, RepoError> {
        self.db.enter().await?;
        self.inner.community(community).await
    }

    async fn upsert(&self, config: &CommunityConfig) -> Result<ConfigVersion, RepoError> {
        self.db.enter().await?;
        self.inner.upsert(config).await
    }

    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
    ) -> Result<ConfigVersion, RepoError> {
        self.db.enter().await?;
        if self.db.mutant == Some(Mutant::WholeRowBudgetChange) {
            // The defect: the whole row read, then written back with the
            // new limits, a round trip later.
            let Some(mut row) = self.inner.community(community).await? else {
                return self.inner.set_limits(community, limits).await;
            };
            self.db.enter().await?;
            row.limits = limits;
            return self.inner.upsert(&row).await;
        }
        self.inner.set_limits(community, limits).await
    }
}

/// [`MemoryUsageLog`] behind the database switch.
pub struct FaultyUsageLog {
    db: Arc<Database>,
    inner: Arc<MemoryUsageLog>,
}

#[async_trait]
impl UsageLog for FaultyUsageLog {
    async fn append(&self, records: &[UsageRecord]) -> Result<u64, RepoError> {
        self.db.enter().await?;
        self.inner.append(records).await
    }

    async fn logged(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        self.db.enter().await?;
        self.inner.logged(community, hold, since).await
    }

    async fn logged_use(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        hold_created_at: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        self.db.enter().await?;
        self.inner
            .logged_use(community, hold, hold_created_at)
            .await
    }

    async fn total_cost(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<Micros, RepoError> {
        self.db.enter().await?;
        self.inner.total_cost(community, period).await
    }

    async fn committed_by_user(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BTreeMap<UserId, Micros>, RepoError> {
        self.db.enter().await?;
        self.inner.committed_by_user(community, period).await
    }
}

/// A queue of the database ([`MemoryWorkQueue`]) behind its switch.
pub struct FaultyQueue<T: QueueItem> {
    db: Arc<Database>,
    inner: Arc<MemoryWorkQueue<T>>,
}

#[async_trait]
impl<T: QueueItem> WorkQueue<T> for FaultyQueue<T> {
    async fn enqueue(&self, item: &T, due_at: Timestamp) -> Result<bool, RepoError> {
        self.db.enter().await?;
        self.inner.enqueue(item, due_at).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<T>>, RepoError> {
        self.db.enter().await?;
        self.inner.claim_due(now, limit, lease).await
    }

    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        self.db.enter().await?;
        self.inner.complete(community, hold, instance).await
    }

    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.db.enter().await?;
        self.inner
            .retry_at(community, hold, instance, error, due_at)
            .await
    }

    async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.db.enter().await?;
        self.inner
            .dead_letter(community, hold, instance, error, at)
            .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter<T>>, RepoError> {
        self.db.enter().await?;
        self.inner.dead_letters(limit).await
    }

    async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        self.db.enter().await?;
        self.inner.dead_letter_count().await
    }

    async fn len(&self) -> Result<u64, RepoError> {
        self.db.enter().await?;
        self.inner.len().await
    }

    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        self.db.enter().await?;
        self.inner.pending(community).await
    }
}
