//! Adapters that fail, or stop for good, at a chosen step, wrapped around
//! real ones: the services' failure paths driven without mocks.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use spendgate::domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, Limits, Period, Reaped,
    Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate::ports::{
    BudgetStatus, BudgetStore, Claimed, DeadLetter, PageSize, PendingSettlement, RepoError,
    StoreError, UsageLog, UsageRecord, UsersCursor, UsersPage, WorkQueue,
};

/// A step of the settlement path after which an adapter may stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The write-ahead entry was written.
    Enqueued,
    /// The store committed.
    StoreCommitted,
    /// The usage row was written.
    Logged,
    /// The queue entry was completed.
    Completed,
}

/// Switches shared by the wrappers.
#[derive(Debug, Default)]
pub struct Faults {
    store_down: AtomicBool,
    log_down: AtomicBool,
    queue_down: AtomicBool,
    stop_after: Mutex<Option<Step>>,
    reap_fails_for: Mutex<Option<CommunityId>>,
    extends: std::sync::atomic::AtomicU64,
    stopped: AtomicBool,
}

impl Faults {
    pub fn set_store_down(&self, down: bool) {
        self.store_down.store(down, Ordering::SeqCst);
    }

    pub fn set_log_down(&self, down: bool) {
        self.log_down.store(down, Ordering::SeqCst);
    }

    pub fn set_queue_down(&self, down: bool) {
        self.queue_down.store(down, Ordering::SeqCst);
    }

    /// Whether a call stopped at the step set by [`Faults::stop_after`].
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// How many extends reached the store.
    pub fn extends(&self) -> u64 {
        self.extends.load(Ordering::SeqCst)
    }

    /// Reaps of `community` fail (one community's failure in a pass).
    pub fn fail_reaps_of(&self, community: Option<CommunityId>) {
        *self.reap_fails_for.lock().unwrap() = community;
    }

    /// The next call that finishes `step` never returns, as if the process
    /// died right after it.
    pub fn stop_after(&self, step: Option<Step>) {
        *self.stop_after.lock().unwrap() = step;
    }

    async fn reached(&self, step: Step) {
        let stop = *self.stop_after.lock().unwrap() == Some(step);
        if stop {
            self.stopped.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }

    fn store(&self) -> Result<(), StoreError> {
        if self.store_down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected: store down".into()))
        } else {
            Ok(())
        }
    }

    fn repo(&self, flag: &AtomicBool, what: &str) -> Result<(), RepoError> {
        if flag.load(Ordering::SeqCst) {
            Err(RepoError::Unavailable(format!("injected: {what} down")))
        } else {
            Ok(())
        }
    }
}

pub struct FaultyStore {
    inner: std::sync::RwLock<Arc<dyn BudgetStore>>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn BudgetStore>, faults: Arc<Faults>) -> Self {
        Self {
            inner: std::sync::RwLock::new(inner),
            faults,
        }
    }

    /// Replaces the store behind the wrapper: everything it held is lost,
    /// as after a Redis restart without persistence.
    pub fn replace(&self, store: Arc<dyn BudgetStore>) {
        *self.inner.write().unwrap() = store;
    }

    fn inner(&self) -> Arc<dyn BudgetStore> {
        self.inner.read().unwrap().clone()
    }
}

#[async_trait]
impl BudgetStore for FaultyStore {
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.faults.store()?;
        self.inner().reserve(community, reservation, now).await
    }

    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.faults.store()?;
        let outcome = self.inner().extend(community, hold, ttl, now).await;
        self.faults.extends.fetch_add(1, Ordering::SeqCst);
        outcome
    }

    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.faults.store()?;
        let outcome = self.inner().finalize(community, settlement, now).await;
        self.faults.reached(Step::StoreCommitted).await;
        outcome
    }

    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.faults.store()?;
        let outcome = self.inner().commit_unheld(community, commit, now).await;
        self.faults.reached(Step::StoreCommitted).await;
        outcome
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.faults.store()?;
        self.inner().cancel(community, hold, now).await
    }

    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        self.faults.store()?;
        if self.faults.reap_fails_for.lock().unwrap().as_ref() == Some(community) {
            return Err(StoreError::Unavailable("injected: reap fails".into()));
        }
        self.inner().reap(community, now).await
    }

    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.faults.store()?;
        self.inner().status_with_user(community, period, user).await
    }

    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.faults.store()?;
        self.inner().users(community, period, cursor, size).await
    }

    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.faults.store()?;
        self.inner().due_communities(now, limit).await
    }
    async fn lookup(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<spendgate::domain::HoldState, StoreError> {
        self.faults.store()?;
        self.inner().lookup(c, h, now).await
    }
    async fn restore_committed(
        &self,
        c: &CommunityId,
        p: Period,
        committed: &std::collections::BTreeMap<
            spendgate::domain::UserId,
            spendgate::domain::Micros,
        >,
    ) -> Result<(), StoreError> {
        self.faults.store()?;
        self.inner().restore_committed(c, p, committed).await
    }
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.faults.store()?;
        self.inner().set_limits(community, limits, version).await
    }
}

pub struct FaultyLog {
    pub inner: Arc<dyn UsageLog>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl UsageLog for FaultyLog {
    async fn append(&self, records: &[UsageRecord]) -> Result<u64, RepoError> {
        self.faults.repo(&self.faults.log_down, "usage log")?;
        let added = self.inner.append(records).await;
        self.faults.reached(Step::Logged).await;
        added
    }

    async fn logged(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        self.faults.repo(&self.faults.log_down, "usage log")?;
        self.inner.logged(community, hold, since).await
    }

    async fn logged_use(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        hold_created_at: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        self.faults.repo(&self.faults.log_down, "usage log")?;
        self.inner
            .logged_use(community, hold, hold_created_at)
            .await
    }

    async fn total_cost(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<spendgate::domain::Micros, RepoError> {
        self.faults.repo(&self.faults.log_down, "usage log")?;
        self.inner.total_cost(community, period).await
    }

    async fn committed_by_user(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<
        std::collections::BTreeMap<spendgate::domain::UserId, spendgate::domain::Micros>,
        RepoError,
    > {
        self.faults.repo(&self.faults.log_down, "usage log")?;
        self.inner.committed_by_user(community, period).await
    }
}

pub struct FaultyQueue {
    pub inner: Arc<dyn WorkQueue<PendingSettlement>>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl WorkQueue<PendingSettlement> for FaultyQueue {
    async fn enqueue(
        &self,
        item: &PendingSettlement,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        let queued = self.inner.enqueue(item, due_at).await;
        self.faults.reached(Step::Enqueued).await;
        queued
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<PendingSettlement>>, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner.claim_due(now, limit, lease).await
    }

    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        let done = self.inner.complete(community, hold, instance).await;
        self.faults.reached(Step::Completed).await;
        done
    }

    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
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
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner
            .dead_letter(community, hold, instance, error, at)
            .await
    }

    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<Vec<DeadLetter<PendingSettlement>>, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner.dead_letters(limit).await
    }

    async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner.dead_letter_count().await
    }

    async fn len(&self) -> Result<u64, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner.len().await
    }

    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        self.faults
            .repo(&self.faults.queue_down, "finalize queue")?;
        self.inner.pending(community).await
    }
}
