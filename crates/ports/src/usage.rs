//! The durable usage log: one row per committed cost.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{
    CommunityId, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, TokenCounts,
    UserId,
};

use crate::config::RepoError;

/// Which path committed a cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// A normal finalize of a live hold.
    Finalize,
    /// A finalize that arrived after its hold was reaped.
    LateFinalize,
    /// Reconciliation with the provider's usage endpoint.
    Reconciliation,
}

impl CostSource {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            CostSource::Finalize => "finalize",
            CostSource::LateFinalize => "late_finalize",
            CostSource::Reconciliation => "reconciliation",
        }
    }
}

/// One committed cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The community charged.
    pub community: CommunityId,
    /// The user who made the call.
    pub user: UserId,
    /// The call's idempotency key.
    pub key: IdempotencyKey,
    /// Which use of the key this cost belongs to: when its hold was made
    /// (or, for a cost whose hold nobody knows any more, when it was
    /// logged). A key can be used again once the store has forgotten its
    /// last settlement, so (community, user, key, hold_created_at) is what
    /// is unique: each use's cost is logged once, and every use is logged.
    pub hold_created_at: Timestamp,
    /// The model alias used.
    pub model: ModelAlias,
    /// Tokens used.
    pub tokens: TokenCounts,
    /// The committed cost.
    pub cost: Micros,
    /// The estimate that was held.
    pub estimate: Micros,
    /// Trace id for correlating logs, if the caller had one.
    pub trace_id: Option<String>,
    /// Which path committed it.
    pub source: CostSource,
    /// The period charged (the hold's, law 4).
    pub period: Period,
    /// When the cost was committed.
    pub created_at: Timestamp,
}

/// Append-only record of committed costs.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageLog: Send + Sync {
    /// Appends records, skipping any whose (community, user, key,
    /// hold_created_at) is already logged; returns how many were new.
    /// Atomic per call; replaying a batch adds nothing.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]: nothing was written, retry the batch.
    async fn append(&self, records: &[UsageRecord]) -> Result<u64, RepoError>;

    /// The latest record logged for (community, user, key) whose
    /// `created_at` is at or after `since`, if any. Answers "was this cost
    /// already committed?" when the store cannot: `since` =
    /// [`Timestamp::EPOCH`] asks about every use of the key, a later `since`
    /// only about a use settled since then.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for a row that
    /// cannot be read back.
    async fn logged(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError>;

    /// The record of one use of (community, user, key): the row whose
    /// `hold_created_at` is `hold_created_at`, if logged. Answers "was this
    /// use's cost already committed?" exactly, where [`UsageLog::logged`]
    /// cannot: a key used again after the store forgot it has a row per
    /// use, and a later use's row says nothing about an earlier one. A row
    /// logged before uses were told apart (its `hold_created_at` is
    /// [`Timestamp::EPOCH`]) is this use's when it was logged at or after
    /// `hold_created_at`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for a row that
    /// cannot be read back.
    async fn logged_use(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        hold_created_at: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError>;

    /// Sum of logged costs of a community in a period.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] if the sum leaves
    /// the micro-USD range.
    async fn total_cost(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<Micros, RepoError>;

    /// Sum of logged costs of a community in a period, per user (users
    /// with nothing logged are absent): what a rebuild of the store's
    /// committed sums starts from.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for a row that
    /// cannot be read back or a sum out of range.
    async fn committed_by_user(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BTreeMap<UserId, Micros>, RepoError>;
}
