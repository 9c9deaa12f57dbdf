//! The fault layer around the budget store: the real memory adapter
//! behind a switch the simulator turns. A store that is down refuses
//! before applying; a store that loses a reply applies the write and then
//! answers "unavailable", as a Redis call that timed out after the script
//! ran; a store that loses its data starts again empty, as a Redis
//! restarted without persistence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, HoldState,
    Limits, Micros, Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
    UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

/// How the store answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call is served.
    Up,
    /// Every call is refused before it applies.
    Down,
    /// The next write applies and then answers "unavailable"; the store
    /// is up again after it.
    LoseNextReply,
}

/// A [`MemoryBudgetStore`] behind the simulator's faults.
pub struct FaultyStore {
    policy: BudgetPolicy,
    inner: Mutex<Arc<MemoryBudgetStore>>,
    fault: Mutex<Fault>,
}

fn lost() -> StoreError {
    StoreError::Unavailable("simulated: the reply was lost".into())
}

impl FaultyStore {
    /// An empty store, up.
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(Arc::new(MemoryBudgetStore::new(policy))),
            fault: Mutex::new(Fault::Up),
        }
    }

    fn fault_lock(&self) -> MutexGuard<'_, Fault> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets how the store answers from now on.
    pub fn set(&self, fault: Fault) {
        *self.fault_lock() = fault;
    }

    /// How the store answers now.
    pub fn fault(&self) -> Fault {
        *self.fault_lock()
    }

    /// Drops every hold, marker, counter and limit: a restart without
    /// persistence.
    pub fn lose_everything(&self) {
        let fresh = Arc::new(MemoryBudgetStore::new(self.policy));
        *self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    fn inner(&self) -> Arc<MemoryBudgetStore> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The store behind the faults, for a read the simulator makes to
    /// check the laws (never faulted).
    pub fn truth(&self) -> Arc<MemoryBudgetStore> {
        self.inner()
    }

    /// Before a read: refused when down.
    fn read(&self) -> Result<Arc<MemoryBudgetStore>, StoreError> {
        match self.fault() {
            Fault::Down => Err(StoreError::Unavailable("simulated: down".into())),
            Fault::Up | Fault::LoseNextReply => Ok(self.inner()),
        }
    }

    /// Around a write: refused when down; applied and answered "lost"
    /// once when the next reply is to be lost.
    fn write<T>(&self, applied: Result<T, StoreError>, lose: bool) -> Result<T, StoreError> {
        if lose {
            self.set(Fault::Up);
            return applied.and(Err(lost()));
        }
        applied
    }

    fn before_write(&self) -> Result<(Arc<MemoryBudgetStore>, bool), StoreError> {
        match self.fault() {
            Fault::Down => Err(StoreError::Unavailable("simulated: down".into())),
            Fault::Up => Ok((self.inner(), false)),
            Fault::LoseNextReply => Ok((self.inner(), true)),
        }
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
        let (store, lose) = self.before_write()?;
        self.write(store.reserve(community, reservation, now).await, lose)
    }

    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.extend(community, hold, ttl, now).await, lose)
    }

    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.finalize(community, settlement, now).await, lose)
    }

    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.commit_unheld(community, commit, now).await, lose)
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.cancel(community, hold, now).await, lose)
    }

    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.reap(community, now).await, lose)
    }

    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.read()?.due_communities(now, limit).await
    }

    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        self.read()?.lookup(community, hold, now).await
    }

    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(
            store.restore_committed(community, period, committed).await,
            lose,
        )
    }

    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.read()?.status_with_user(community, period, user).await
    }

    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.read()?.users(community, period, cursor, size).await
    }

    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        let (store, lose) = self.before_write()?;
        self.write(store.set_limits(community, limits, version).await, lose)
    }
}
