//! The fault layer around the budget store: a real adapter (memory,
//! Redis, Redis Cluster, PostgreSQL, SQLite) behind a switch the
//! simulator turns. A store that is down refuses before applying; a store
//! that loses a reply applies the write and then answers "unavailable",
//! as a Redis call that timed out after the script ran; a slow store
//! answers after a few simulated milliseconds, so concurrent callers
//! overtake each other; a store that loses its data starts again empty,
//! as a Redis restarted without persistence.
//!
//! A store reached through a [`FaultProxy`] ([`Network`]) gets the same
//! faults from the network instead: down cuts the proxy, slow slows it,
//! and a lost reply is the proxy dropping the server's answer to the next
//! request after the write applied; the adapter's own error is what the
//! caller sees.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use spendgate_domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, HoldState, Limits, Micros,
    Period, Reaped, Receipt, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit,
    UserId,
};
use spendgate_fault_proxy::{FaultProxy, Mode};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

use crate::mutant::Mutant;

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
    /// Every call is served after a delay of a few simulated
    /// milliseconds, different from call to call.
    Slow,
}

/// Makes an empty store of the same kind: a restart without persistence.
pub type Restart = Box<dyn Fn() -> Arc<dyn BudgetStore> + Send + Sync>;

/// A store reached over the network: the proxy its connection goes
/// through, and a direct connection to the same server for the laws'
/// reads.
pub struct Network {
    /// The proxy the faulted connection goes through.
    pub proxy: FaultProxy,
    /// The same store over a connection the faults never touch.
    pub direct: Arc<dyn BudgetStore>,
}

/// A budget store behind the simulator's faults.
pub struct FaultyStore {
    inner: Mutex<Arc<dyn BudgetStore>>,
    network: Option<Network>,
    restart: Option<Restart>,
    fault: Mutex<Fault>,
    calls: AtomicU64,
    mutant: Option<Mutant>,
    /// The version [`Mutant::StaleLimits`] wrote last.
    forced_version: AtomicI64,
}

fn lost() -> StoreError {
    StoreError::Unavailable("simulated: the reply was lost".into())
}

impl FaultyStore {
    /// `inner`, up, with `mutant`'s defect if it is a store's; `restart`
    /// empties it when [`FaultyStore::lose_everything`] is asked; with a
    /// `network`, `inner` goes through its proxy and the faults are made
    /// there.
    pub fn new(
        inner: Arc<dyn BudgetStore>,
        restart: Option<Restart>,
        network: Option<Network>,
        mutant: Option<Mutant>,
    ) -> Self {
        Self {
            inner: Mutex::new(inner),
            network,
            restart,
            fault: Mutex::new(Fault::Up),
            calls: AtomicU64::new(0),
            mutant,
            forced_version: AtomicI64::new(0),
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
        if let Some(network) = &self.network {
            network.proxy.set_mode(match fault {
                Fault::Down => Mode::Cut,
                Fault::Slow => Mode::Slow { max_ms: 5 },
                Fault::Up | Fault::LoseNextReply => Mode::Pass,
            });
        }
    }

    /// How the store answers now.
    pub fn fault(&self) -> Fault {
        *self.fault_lock()
    }

    fn inner(&self) -> Arc<dyn BudgetStore> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drops every hold, marker, counter and limit, as a Redis restarted
    /// without persistence; `false` (nothing lost) for a store without a
    /// restart.
    pub fn lose_everything(&self) -> bool {
        let Some(restart) = &self.restart else {
            return false;
        };
        *self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = restart();
        true
    }

    /// The store behind the faults, for a read the simulator makes to
    /// check the laws (never faulted).
    pub fn truth(&self) -> Arc<dyn BudgetStore> {
        match &self.network {
            Some(network) => Arc::clone(&network.direct),
            None => self.inner(),
        }
    }

    async fn delay(&self) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1 + n.wrapping_mul(7_919) % 5)).await;
    }

    /// Before a read: refused when down, delayed when slow (by the
    /// network, when there is one).
    async fn read(&self) -> Result<Arc<dyn BudgetStore>, StoreError> {
        if self.network.is_some() {
            return Ok(self.inner());
        }
        match self.fault() {
            Fault::Down => Err(StoreError::Unavailable("simulated: down".into())),
            Fault::Slow => {
                self.delay().await;
                Ok(self.inner())
            }
            Fault::Up | Fault::LoseNextReply => Ok(self.inner()),
        }
    }

    /// Around a write: refused when down; applied and answered "lost"
    /// once when the next reply is to be lost.
    fn write<T>(&self, applied: Result<T, StoreError>, lose: bool) -> Result<T, StoreError> {
        if !lose {
            return applied;
        }
        self.set(Fault::Up);
        match &self.network {
            // The proxy lost the reply (the adapter's error is the answer)
            // or, when the write never reached the server, nothing.
            Some(network) => {
                network.proxy.disarm();
                applied
            }
            None => applied.and(Err(lost())),
        }
    }

    async fn before_write(&self) -> Result<(Arc<dyn BudgetStore>, bool), StoreError> {
        if let Some(network) = &self.network {
            let lose = self.fault() == Fault::LoseNextReply;
            if lose {
                network.proxy.lose_next_reply(b"");
            }
            return Ok((self.inner(), lose));
        }
        match self.fault() {
            Fault::Down => Err(StoreError::Unavailable("simulated: down".into())),
            Fault::Up => Ok((self.inner(), false)),
            Fault::Slow => {
                self.delay().await;
                Ok((self.inner(), false))
            }
            Fault::LoseNextReply => Ok((self.inner(), true)),
        }
    }

    /// [`Mutant::ReadBeforeLock`]: the hold read first, the lock taken a
    /// moment later, and the answer decided by the read.
    async fn finalize_reading_first(
        &self,
        store: &dyn BudgetStore,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold_ref = HoldRef {
            user: settlement.user.clone(),
            key: settlement.key.clone(),
        };
        let seen = store.lookup(community, &hold_ref, now).await?;
        tokio::task::yield_now().await;
        let outcome = store.finalize(community, settlement, now).await?;
        Ok(match (seen, outcome) {
            (HoldState::Held { hold }, FinalizeOutcome::AlreadyFinalized { .. }) => {
                FinalizeOutcome::Finalized(Receipt::for_hold(
                    &hold,
                    settlement.actual,
                    Micros::ZERO,
                ))
            }
            (_, outcome) => outcome,
        })
    }

    /// [`Mutant::StaleLimits`]: a version newer than any written, so the
    /// last write wins whatever it carries.
    fn forced(&self, version: ConfigVersion) -> ConfigVersion {
        let last = self.forced_version.load(Ordering::Relaxed);
        let next = version.get().max(last + 1);
        self.forced_version.store(next, Ordering::Relaxed);
        ConfigVersion::new(next).unwrap_or(version)
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
        let (store, lose) = self.before_write().await?;
        self.write(store.reserve(community, reservation, now).await, lose)
    }

    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let (store, lose) = self.before_write().await?;
        self.write(store.extend(community, hold, ttl, now).await, lose)
    }

    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write().await?;
        let outcome = if self.mutant == Some(Mutant::ReadBeforeLock) {
            self.finalize_reading_first(store.as_ref(), community, settlement, now)
                .await
        } else {
            store.finalize(community, settlement, now).await
        };
        self.write(outcome, lose)
    }

    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write().await?;
        self.write(store.commit_unheld(community, commit, now).await, lose)
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let (store, lose) = self.before_write().await?;
        self.write(store.cancel(community, hold, now).await, lose)
    }

    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        let (store, lose) = self.before_write().await?;
        self.write(store.reap(community, now).await, lose)
    }

    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.read().await?.due_communities(now, limit).await
    }

    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        self.read().await?.lookup(community, hold, now).await
    }

    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        let (store, lose) = self.before_write().await?;
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
        self.read()
            .await?
            .status_with_user(community, period, user)
            .await
    }

    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.read()
            .await?
            .users(community, period, cursor, size)
            .await
    }

    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        let (store, lose) = self.before_write().await?;
        let version = if self.mutant == Some(Mutant::StaleLimits) {
            self.forced(version)
        } else {
            version
        };
        self.write(store.set_limits(community, limits, version).await, lose)
    }
}
