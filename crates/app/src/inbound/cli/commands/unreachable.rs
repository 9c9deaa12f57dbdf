//! The budget store of a settling command whose configured store could not
//! be reached at start: every call answers "unavailable", so `finalize` and
//! `cancel` keep their settlement in the finalize queue (in the database)
//! for `serve`'s replay worker instead of refusing to run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use spendgate_domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, HoldState, Limits, Micros,
    Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

/// A [`BudgetStore`] that was not reached: every call is
/// [`StoreError::Unavailable`] with the reason.
pub(crate) struct UnreachableStore {
    reason: String,
}

impl UnreachableStore {
    pub(crate) fn new(reason: String) -> Self {
        Self { reason }
    }

    fn unavailable<T>(&self) -> Result<T, StoreError> {
        Err(StoreError::Unavailable(format!(
            "not reached at start: {}",
            self.reason
        )))
    }
}

#[async_trait]
impl BudgetStore for UnreachableStore {
    async fn reserve(
        &self,
        _: &CommunityId,
        _: &Reservation,
        _: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.unavailable()
    }

    async fn extend(
        &self,
        _: &CommunityId,
        _: &HoldRef,
        _: Ttl,
        _: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.unavailable()
    }

    async fn finalize(
        &self,
        _: &CommunityId,
        _: &Settlement,
        _: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.unavailable()
    }

    async fn commit_unheld(
        &self,
        _: &CommunityId,
        _: &UnheldCommit,
        _: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.unavailable()
    }

    async fn cancel(
        &self,
        _: &CommunityId,
        _: &HoldRef,
        _: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.unavailable()
    }

    async fn reap(&self, _: &CommunityId, _: Timestamp) -> Result<Reaped, StoreError> {
        self.unavailable()
    }

    async fn due_communities(
        &self,
        _: Timestamp,
        _: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.unavailable()
    }

    async fn lookup(
        &self,
        _: &CommunityId,
        _: &HoldRef,
        _: Timestamp,
    ) -> Result<HoldState, StoreError> {
        self.unavailable()
    }

    async fn restore_committed(
        &self,
        _: &CommunityId,
        _: Period,
        _: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        self.unavailable()
    }

    async fn status_with_user<'a>(
        &self,
        _: &CommunityId,
        _: Period,
        _: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.unavailable()
    }

    async fn users<'a>(
        &self,
        _: &CommunityId,
        _: Period,
        _: Option<&'a UsersCursor>,
        _: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.unavailable()
    }

    async fn set_limits(
        &self,
        _: &CommunityId,
        _: Limits,
        _: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.unavailable()
    }
}
