//! Why a budget service call failed, one enum per call, each variant one a
//! caller can act on.

use spendgate_domain::{AccessLevel, CommunityId, Micros, ModelAlias, PricingError, TierError};
use spendgate_ports::{RepoError, StoreError};

/// Why no estimate could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EstimateError {
    /// No price for the model, or the estimate leaves the micro-USD range.
    #[error("cannot price the call: {0}")]
    Pricing(#[source] PricingError),
    /// The community's pricing could not be read and nothing is cached.
    #[error("community pricing unavailable: {0}")]
    ConfigUnavailable(#[source] RepoError),
}

/// Why a reserve was refused. Every variant means **do not make the call**;
/// none holds any budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// The community has agent calls turned off.
    #[error("AI is disabled for community {0}")]
    AiDisabled(CommunityId),
    /// The tier is outside 1–9 (checked before any override is read).
    #[error("invalid tier: {0}")]
    InvalidTier(#[source] TierError),
    /// The community's tier may not use the model.
    #[error("access level {level} does not allow model {model}")]
    ModelNotAllowed {
        /// The model asked for.
        model: ModelAlias,
        /// The tier's access level.
        level: AccessLevel,
    },
    /// The call could not be priced (unknown model, overflowing estimate).
    #[error("cannot price the call: {0}")]
    Pricing(#[source] PricingError),
    /// The community has no configuration, or the store has no limits for
    /// it yet (config sync restores them).
    #[error("community {0} has no budget configured")]
    NotConfigured(CommunityId),
    /// A request field is malformed (a trace id too long, a TTL past the
    /// supported range).
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The community's configuration could not be read and nothing is
    /// cached: denied (fail closed).
    #[error("configuration unavailable, denied: {0}")]
    ConfigUnavailable(#[source] RepoError),
    /// The budget store could not answer: denied (fail closed). Retrying
    /// with the same key is safe.
    #[error("budget store unavailable, denied: {0}")]
    StoreUnavailable(#[source] StoreError),
    /// The store refused the reservation for another reason (corrupt data,
    /// a counter out of range): denied.
    #[error("budget store refused the reservation: {0}")]
    Store(#[source] StoreError),
}

/// Why a finalize or cancel did not end in [`super::Settled`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizeError {
    /// The usage could not be costed (unknown model, overflow); nothing
    /// was written. The hold stays until it is settled or reaped.
    #[error("cannot cost the usage: {0}")]
    Pricing(#[source] PricingError),
    /// A request field is malformed (a trace id too long).
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The cost would take a counter out of the micro-USD range: the
    /// store refused the settlement whole and the hold stays until it is
    /// settled with a cost that fits, or reaped. Retrying it unchanged
    /// cannot succeed; its finalize queue entry is a dead letter, which
    /// an operator lists with `spendgate dead-letters`.
    #[error("cost out of range: {0}")]
    CostOutOfRange(#[source] StoreError),
    /// The store refused the settlement for another reason (invalid input,
    /// corrupt data, no limits yet). A refusal that cannot pass is kept
    /// as a dead letter, one that may pass stays queued for a later replay.
    #[error("budget store refused the settlement: {0}")]
    Store(#[source] StoreError),
    /// Neither the store nor the finalize queue could take the settlement:
    /// nothing durable holds it, so the caller must retry it.
    #[error("settlement not kept: store and finalize queue both unavailable: {0}")]
    NotKept(#[source] RepoError),
    /// A release (a cost of 0) of a call the store knows nothing of: nothing
    /// is held and nothing is to be committed, so nothing was written.
    #[error("no hold for user {user} and key {key}: nothing to release")]
    UnknownHold {
        /// The user given.
        user: String,
        /// The key given.
        key: String,
    },
    /// Token usage of a call whose model nobody knows: the store has no
    /// hold for it and the caller named no model. Nothing was written;
    /// settle it with the model or with the cost.
    #[error(
        "the store has no hold for this call, so its model is unknown: give the model or the cost"
    )]
    ModelUnknown,
    /// Token usage whose model had to be read from the store, which could
    /// not answer. Nothing was written; retry, or settle with the model or
    /// with the cost (which is then kept even while the store is down).
    #[error("cannot cost the tokens: the store could not tell the call's model: {0}")]
    ModelUnavailable(#[source] StoreError),
    /// The call was already settled with another cost: a second settlement
    /// of the same call changes nothing.
    #[error("the call was already settled with {first} USD; this settlement asks {asked} USD")]
    SettledOtherwise {
        /// The cost committed the first time.
        first: Micros,
        /// The cost this settlement asked for.
        asked: Micros,
    },
}

/// Why a provider's answer did not settle a handed-over hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The provider reported another model than the hold's: the answer is
    /// about another call (or the gateway named the model otherwise), so
    /// nothing was committed from it.
    #[error("provider reported model {reported:?} for a hold of model {expected}; not committed")]
    ModelMismatch {
        /// The hold's model alias.
        expected: ModelAlias,
        /// The model the provider reported.
        reported: String,
    },
    /// The settlement itself failed.
    #[error(transparent)]
    Finalize(#[from] FinalizeError),
}

/// Why an extend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtendError {
    /// The store has no hold or marker for the key.
    #[error("unknown hold: {0}")]
    UnknownHold(#[source] StoreError),
    /// The store could not answer; the hold keeps its old expiry.
    #[error("budget store unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// The store refused it (TTL out of range, corrupt data).
    #[error("budget store refused the extend: {0}")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ExtendError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownHold { .. } => ExtendError::UnknownHold(error),
            StoreError::Unavailable(_) => ExtendError::Unavailable(error),
            other => ExtendError::Store(other),
        }
    }
}

/// Why a budget status could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The store could not answer or returned unreadable data.
    #[error("budget store: {0}")]
    Store(#[source] StoreError),
    /// The period is outside the supported range.
    #[error("invalid period: {0}")]
    Period(String),
}

/// Why a budget change did not fully apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetChangeError {
    /// The database refused or could not take the change; nothing changed.
    #[error("budget not saved: {0}")]
    Database(#[source] RepoError),
    /// Saved in the database, but the store still has the old limits; the
    /// next config sync applies the new ones.
    #[error(
        "budget saved in the database but not yet in the store (the next config sync applies it): {0}"
    )]
    StoreNotUpdated(#[source] StoreError),
    /// Saved in the database, but the store held no limits for the
    /// community (a new one, or the store lost its data) and its period
    /// could not be rebuilt from the usage log, so the limits were not
    /// pushed: reserves stay refused until the next config sync rebuilds
    /// and pushes them.
    #[error(
        "budget saved in the database; the store holds no limits for the community and its period is not rebuilt yet (the next config sync does it): {0}"
    )]
    StoreNotRebuilt(#[source] RebuildError),
}

/// Why a hold could not be handed to reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// No provider usage source is configured: nothing would ever ask what
    /// the call cost, and the reaper would release it for free. Settle it
    /// with its cost instead.
    #[error("no provider usage source is configured: settle the call with its cost")]
    NoUsageSource,
    /// The reconciliation queue could not take it; the hold is left to the
    /// reaper, which releases its estimate.
    #[error("reconciliation queue unavailable: {0}")]
    Queue(#[source] RepoError),
    /// The store has no hold (nor reap tombstone) for the call.
    #[error("no hold for user {user} and key {key}")]
    UnknownHold {
        /// The user given.
        user: String,
        /// The key given.
        key: String,
    },
    /// The call was already finalized or cancelled: there is nothing left
    /// to reconcile.
    #[error("the call was already settled with {actual} USD")]
    AlreadySettled {
        /// The cost it was settled with.
        actual: Micros,
    },
    /// The store could not say what it holds for the call; nothing was
    /// queued and the hold is unchanged, so retrying is safe.
    #[error("budget store unavailable: {0}")]
    StoreUnavailable(#[source] StoreError),
    /// The store answered with data it cannot read back.
    #[error("budget store: {0}")]
    Store(#[source] StoreError),
}

/// Why a period could not be rebuilt from the usage log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The period is outside the supported range.
    #[error("invalid period: {0}")]
    Period(String),
    /// The usage log could not be read; nothing changed.
    #[error("usage log unavailable: {0}")]
    UsageLog(#[source] RepoError),
    /// The store refused or could not take the sums; nothing changed.
    #[error("budget store: {0}")]
    Store(#[source] StoreError),
    /// The finalize queue could not be read; nothing changed.
    #[error("finalize queue unavailable: {0}")]
    Queue(#[source] RepoError),
    /// Settlements of the community are still queued after the replay
    /// pass (leased to their callers or to another replica, or failing):
    /// the store may count them while the log does not yet, so nothing
    /// was restored. Run the rebuild again once they are replayed.
    #[error(
        "{pending} settlement(s) of the community are still queued; nothing rebuilt, run it again once they are replayed"
    )]
    SettlementsPending {
        /// How many are queued.
        pending: u64,
    },
}
