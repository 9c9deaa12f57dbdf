//! Why a budget service call failed, one enum per call, each variant one a
//! caller can act on.

use spendgate_domain::{AccessLevel, CommunityId, ModelAlias, PricingError, TierError};
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
    /// The store refused the settlement (a counter out of range, corrupt
    /// data). It stays in the finalize queue, where an operator finds it.
    #[error("budget store refused the settlement: {0}")]
    Store(#[source] StoreError),
    /// Neither the store nor the finalize queue could take the settlement:
    /// nothing durable holds it, so the caller must retry it.
    #[error("settlement not kept: store and finalize queue both unavailable: {0}")]
    NotKept(#[source] RepoError),
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
}

/// Why a hold could not be handed to reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// The reconciliation queue could not take it; the hold is left to the
    /// reaper, which releases its estimate.
    #[error("reconciliation queue unavailable: {0}")]
    Queue(#[source] RepoError),
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
}
