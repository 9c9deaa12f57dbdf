//! The model provider's usage endpoint, asked when a stream dropped before
//! its cost was known.
//!
//! The provider knows a call by its [`CallId`], which the gateway passes
//! with the call (the reserve's answer gives it), never by the caller's
//! idempotency key alone: keys are chosen per tenant and per user, so a
//! key names no call across communities.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{CallId, Micros, Timestamp, TokenCounts};

/// Why a provider look-up failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider could not be reached or answered 5xx; try again later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered something that is not valid usage (bad JSON,
    /// negative or non-finite cost); retrying will not help.
    #[error("invalid provider answer: {0}")]
    InvalidResponse(String),
}

/// What the provider says a call cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderUsage {
    /// The real cost.
    pub cost: Micros,
    /// The model the call ran, as the gateway named it with the call: the
    /// hold's model alias. Reconciliation refuses an answer naming another.
    pub model: String,
    /// Tokens used.
    pub tokens: TokenCounts,
    /// When the call completed.
    pub completed_at: Timestamp,
}

/// Looks up a call's usage at the provider by its call id.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The usage of the call named `call`, or `None` when the provider does
    /// not know it (yet): reconciliation asks again, and after its last
    /// try settles the hold without the provider's word.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] (retry with backoff);
    /// [`ProviderError::InvalidResponse`].
    async fn usage(&self, call: &CallId) -> Result<Option<ProviderUsage>, ProviderError>;
}
