//! The model provider's usage endpoint, asked when a stream dropped before
//! its cost was known.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{IdempotencyKey, Micros, Timestamp, TokenCounts};

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
    /// The model the provider ran.
    pub model: String,
    /// Tokens used.
    pub tokens: TokenCounts,
    /// When the call completed.
    pub completed_at: Timestamp,
}

/// Looks up a call's usage at the provider by idempotency key.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The call's usage, or `None` when the provider does not know the key
    /// (404): the hold is then left to the reaper.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] (retry with backoff);
    /// [`ProviderError::InvalidResponse`].
    async fn usage(&self, key: &IdempotencyKey) -> Result<Option<ProviderUsage>, ProviderError>;
}
