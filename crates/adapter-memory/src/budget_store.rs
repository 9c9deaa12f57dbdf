//! The reference budget model behind a mutex.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{
    BudgetPolicy, CommunityBudget, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome,
    HoldRef, HoldState, Limits, Micros, Period, Reaped, Reservation, ReserveOutcome, Settlement,
    Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

/// A [`BudgetStore`] holding every community's [`CommunityBudget`] in
/// process memory. Each call takes one lock, so calls are atomic and
/// linearizable; a poisoned lock (a panic mid-update) reports
/// [`StoreError::Unavailable`] rather than serving possibly torn state.
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    policy: BudgetPolicy,
    communities: Mutex<HashMap<CommunityId, CommunityBudget>>,
}

impl MemoryBudgetStore {
    /// An empty store using `policy` (warning threshold, marker retention).
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            communities: Mutex::default(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<CommunityId, CommunityBudget>>, StoreError> {
        self.communities
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }

    /// Runs `op` on one community's budget under the lock, mapping domain
    /// refusals to the port's errors.
    fn with_budget<T>(
        &self,
        community: &CommunityId,
        op: impl FnOnce(&mut CommunityBudget) -> Result<T, spendgate_domain::BudgetError>,
    ) -> Result<T, StoreError> {
        let mut communities = self.lock()?;
        let budget = communities.entry(community.clone()).or_default();
        op(budget).map_err(|e| StoreError::from_domain(community, e))
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgetStore {
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.with_budget(community, |b| b.reserve(reservation, now, self.policy))
    }

    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.with_budget(community, |b| b.extend(hold, ttl, now))
    }

    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.with_budget(community, |b| b.finalize(settlement, now, self.policy))
    }

    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.with_budget(community, |b| b.commit_unheld(commit, now, self.policy))
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.with_budget(community, |b| b.cancel(hold, now, self.policy))
    }

    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        self.with_budget(community, |b| b.reap(now, self.policy))
    }

    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        let communities = self.lock()?;
        let mut due: Vec<(Timestamp, &CommunityId)> = communities
            .iter()
            .filter_map(|(c, b)| {
                b.holds()
                    .map(|h| h.expires_at)
                    .filter(|at| *at <= now)
                    .min()
                    .map(|at| (at, c))
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        let communities = self.lock()?;
        Ok(communities
            .get(community)
            .map_or(HoldState::Unknown, |b| b.lookup(hold, now)))
    }

    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        self.with_budget(community, |b| b.restore_committed(period, committed))
    }

    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        let communities = self.lock()?;
        let empty = CommunityBudget::default();
        let budget = communities.get(community).unwrap_or(&empty);
        Ok(BudgetStatus::from_model(budget, period, user))
    }

    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        let communities = self.lock()?;
        let empty = CommunityBudget::default();
        let budget = communities.get(community).unwrap_or(&empty);
        UsersPage::from_model(budget, period, cursor, size)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))
    }

    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.with_budget(community, |b| {
            b.set_limits(limits, version);
            Ok(())
        })
    }
}
