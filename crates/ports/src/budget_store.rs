//! The hot path: holding, settling and releasing budget.

use std::collections::BTreeMap;

use crate::listing::{PageSize, UsersCursor, UsersPage};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{
    BudgetError, CommunityBudget, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome,
    HoldRef, HoldState, Limits, Micros, Period, Reaped, Reservation, ReserveOutcome, Settlement,
    Timestamp, Ttl, UnheldCommit, UserId, UserSpend,
};

/// Why a [`BudgetStore`] call failed. Every failure leaves the store as it
/// was: no partial write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not answer (down, timed out, connection lost). For
    /// `reserve` this means **deny**: spendgate fails closed. The effect of
    /// a write that timed out is unknown; retrying with the same idempotency
    /// key is safe.
    #[error("budget store unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as malformed (for example a number a script
    /// re-checked and rejected). Retrying it unchanged fails again.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The community has no limits set; reserve denies until config sync
    /// (or `set_limits`) gives it some.
    #[error("community {0} has no budget configured")]
    NotConfigured(CommunityId),
    /// No hold, finalize marker or reap tombstone exists for (user, key):
    /// never reserved here, or settled longer ago than markers are kept.
    #[error("no reservation for user {user} and key {key}")]
    UnknownHold {
        /// The user given.
        user: String,
        /// The key given.
        key: String,
    },
    /// A counter would overflow (or go negative): the operation was refused
    /// whole. Negative results are drift and worth a bug report.
    #[error("counter out of range: {0}")]
    Overflow(String),
    /// The backend holds data the adapter cannot read back (drift or
    /// tampering); nothing was changed.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Maps a domain refusal for `community` to the port's error.
    pub fn from_domain(community: &CommunityId, error: BudgetError) -> Self {
        match error {
            BudgetError::NotConfigured => StoreError::NotConfigured(community.clone()),
            BudgetError::UnknownHold { user, key } => StoreError::UnknownHold { user, key },
            BudgetError::Money(e) => StoreError::Overflow(e.to_string()),
            other => StoreError::InvalidInput(other.to_string()),
        }
    }
}

/// A community's counters for one period, as a status page or a drift check
/// reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The period these counters belong to.
    pub period: Period,
    /// The community's limits, `None` when never configured.
    pub limits: Option<Limits>,
    /// Actual cost of finished calls of the period.
    pub committed: Micros,
    /// Sum of the estimates of the period's unreaped holds.
    pub reserved: Micros,
    /// How many holds of the period are not yet settled.
    pub holds: u64,
    /// Whether the warning already fired this period.
    pub warned: bool,
    /// The sums of the user the status was read for
    /// ([`BudgetStore::status_with_user`]; zeros when that user has none),
    /// `None` when no user was asked for. A status never carries every
    /// user: that is O(users), so the listing is paged
    /// ([`BudgetStore::users`]).
    pub user: Option<UserSpend>,
}

impl BudgetStatus {
    /// What the reference model says a community's status is for `period`;
    /// the in-memory store answers with it and the contract suite compares
    /// every other store against it.
    pub fn from_model(budget: &CommunityBudget, period: Period, user: Option<&UserId>) -> Self {
        let counters = budget.counters(period);
        Self {
            period,
            limits: budget.limits(),
            committed: counters.totals.committed,
            reserved: counters.totals.reserved,
            holds: counters.totals.holds,
            warned: counters.totals.warned,
            user: user.map(|u| counters.users.get(u).copied().unwrap_or_default()),
        }
    }
}

/// Atomic, idempotent budget bookkeeping for many communities.
///
/// Implementations MUST behave exactly like
/// [`spendgate_domain::CommunityBudget`] run per community with the policy
/// the store was built with; the contract suite checks that step by step.
///
/// * **Atomic**: each call is all-or-nothing; concurrent calls behave as if
///   run one at a time in some order (no overspend under any race).
/// * **Idempotent**: per (community, user, key). A replayed reserve returns
///   `AlreadyReserved` / `AlreadySettled`, a replayed finalize or cancel
///   `AlreadyFinalized`; a finalize racing the reaper commits once and
///   releases once.
/// * **Periods**: a hold belongs to the period of the `now` it was reserved
///   at; finalize, cancel and reap change that period whatever `now` is.
/// * **Isolation**: nothing done for one community reads or changes another.
///
/// `now` comes from the caller's [`crate::Clock`], so time is the same for
/// every store and testable.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Holds `reservation.estimate` if `committed + reserved + estimate <=
    /// limit` (and the user's cap), checked and applied atomically.
    ///
    /// # Errors
    /// * [`StoreError::Unavailable`]: the caller MUST deny the call.
    /// * [`StoreError::NotConfigured`]: no limits for the community.
    /// * [`StoreError::InvalidInput`]: `now + ttl` out of range.
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError>;

    /// Pushes a live hold's expiry to `now + ttl` (never earlier); a
    /// heartbeat for long streams. Idempotent.
    ///
    /// # Errors
    /// [`StoreError::UnknownHold`] when no hold or marker exists;
    /// [`StoreError::Unavailable`].
    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError>;

    /// Commits the actual cost to the hold's period and releases its
    /// estimate (`Finalized`); commits only if the hold was reaped
    /// (`LateFinalized`); changes nothing on a replay (`AlreadyFinalized`).
    ///
    /// # Errors
    /// [`StoreError::UnknownHold`], [`StoreError::Overflow`] (refused whole),
    /// [`StoreError::Unavailable`] (the caller keeps the settlement durably
    /// and replays it).
    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError>;

    /// Commits a cost even when the store holds nothing for (user, key):
    /// exactly [`CommunityBudget::commit_unheld`]. Where a hold, marker or
    /// tombstone exists it is a finalize (`Finalized`, `LateFinalized`,
    /// `AlreadyFinalized`); otherwise `actual` is committed to
    /// `commit.period` without a limit check and a marker is kept
    /// (`CommittedWithoutHold`). Idempotent per (community, user, key)
    /// while the marker lives; works on a community without limits. The
    /// services call it after [`StoreError::UnknownHold`], so a cost whose
    /// hold was lost (a Redis restart without persistence) still counts.
    ///
    /// # Errors
    /// [`StoreError::Overflow`] (refused whole); [`StoreError::Unavailable`]
    /// (the caller keeps the settlement durably and replays it).
    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError>;

    /// A finalize with an actual cost of zero.
    ///
    /// # Errors
    /// As [`BudgetStore::finalize`].
    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError>;

    /// Releases every hold of the community expired at `now` (expiry `<=
    /// now`), keeping a tombstone for late finalizes, and drops expired
    /// markers. Costs O(expired), not O(live).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Overflow`] on drift.
    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError>;

    /// Communities that may have a hold expired at `now`, so a reaper pass
    /// costs O(due), not O(configured): at most `limit`, earliest due
    /// first.
    ///
    /// The answer MUST name every community with an unreaped hold whose
    /// expiry is `<= now` (up to `limit`), except where an adapter documents
    /// a narrower promise (the Redis index can miss a community when its
    /// index write after a successful reserve failed; the reaper's periodic
    /// full sweep covers that). It MAY name communities with nothing due
    /// (holds settled or extended since it was indexed); a [`reap`] of such
    /// a community releases nothing and refreshes any index the store
    /// keeps, so a community reaped at `now` is not named again at `now`.
    ///
    /// [`reap`]: BudgetStore::reap
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`].
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError>;

    /// What the store keeps for (user, key) at `now`: the unsettled hold,
    /// the marker of its settlement (until marker retention ends), or
    /// nothing. Read-only; exactly [`CommunityBudget::lookup`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`].
    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError>;

    /// Sets `period`'s committed sums from an outside record, user by user
    /// (users left out get 0; the community's sum is their total),
    /// atomically, keeping reserved, holds, limits and markers: exactly
    /// [`CommunityBudget::restore_committed`]. Rebuilds a period from the
    /// usage log after the store lost data; works without limits (reserves
    /// stay `NotConfigured` until limits are set again).
    ///
    /// # Errors
    /// [`StoreError::Overflow`] (the total leaves the range; nothing
    /// changed); [`StoreError::Unavailable`].
    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError>;

    /// The community's limits and totals for `period`, without any user's
    /// sums: [`BudgetStore::status_with_user`] with no user. O(1) in the
    /// number of users.
    ///
    /// # Errors
    /// As [`BudgetStore::status_with_user`].
    async fn status(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BudgetStatus, StoreError> {
        self.status_with_user(community, period, None).await
    }

    /// The community's limits and totals for `period` and, when `user` is
    /// given, that user's sums (zeros when it has none), read at once.
    /// Implementations MUST answer in O(1) in the number of the period's
    /// users: this is what every hot path (balances, decide, dry run, the
    /// guard) reads, and one community's size must not stall another's
    /// calls on a shared store.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`].
    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError>;

    /// One page of `period`'s users whose sums are not both zero, at most
    /// `size` of them (a store that scans, Redis, may exceed a `size`
    /// below [`USERS_PAGE_MAX`](crate::USERS_PAGE_MAX) by the rest of one
    /// scan step, and never goes past that maximum with the server's
    /// default set encodings), resuming after `cursor` (`None`: from the
    /// start).
    /// The listing is complete when a page's `next` is `None`. Each call
    /// costs O(`size`), never O(users).
    ///
    /// Every user that has sums for the whole listing appears on some
    /// page. Pages are in [`UserId`] order where the store keeps one (the
    /// memory and SQL stores); on Redis they follow a set scan: unordered,
    /// and a user may appear on two pages when the set grew during the
    /// listing (callers that merge pages keep the later sums). A cursor
    /// is only valid for the store, community and period that issued it.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a cursor this store did not issue;
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`].
    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError>;

    /// Sets the community's limits for every period, atomically, unless
    /// the store holds limits of a newer configuration: exactly
    /// [`CommunityBudget::set_limits`]. Live holds stay; a lowered limit
    /// affects later reservations only.
    ///
    /// `version` is the [`ConfigVersion`] of the configuration the limits
    /// were read from (the database row's). The store keeps it with the
    /// limits and, in the same atomic step, applies limits only when
    /// `version` is at least the one it holds; limits of an older version
    /// change nothing and the call still succeeds. So a writer that read
    /// the configuration before a newer write (a config sync pass whose
    /// snapshot predates a budget change, on any replica) can never put
    /// the older limits back. A store that lost its data holds no version
    /// and takes any. Callers without a configuration row (tests, tools)
    /// pass [`ConfigVersion::ZERO`], which never replaces a versioned
    /// write.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError>;
}
