//! Community configuration: limits, pricing and tier overrides.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{CommunityId, ConfigVersion, Limits, PricingOverrides, TierOverrides};

/// Why a repository (configuration, tier overrides, usage log) call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The database could not answer; the caller may fall back to the last
    /// known value (tier look-ups) or retry later (writes).
    #[error("repository unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as malformed before reaching storage.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A stored value could not be parsed (for example malformed override
    /// JSON); names the community and the field. Callers log it and use
    /// defaults.
    #[error("bad data for community {community} in {field}: {reason}")]
    BadData {
        /// The community whose row is bad.
        community: String,
        /// The column or JSON path at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bounded store (the in-memory fallback of the finalize queue)
    /// holds as many items as it may; nothing was written. It accepts
    /// again once items leave it.
    #[error("full: {capacity} items held, the most it may hold")]
    Full {
        /// The most items it holds.
        capacity: u64,
    },
}

/// Everything configured for one community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunityConfig {
    /// The community.
    pub community: CommunityId,
    /// Whether agent calls are enabled at all.
    pub ai_enabled: bool,
    /// Monthly limit and optional per-user cap.
    pub limits: Limits,
    /// Replacement prices for some aliases.
    pub pricing_overrides: PricingOverrides,
    /// The version of the row this was read from ([`ConfigVersion::ZERO`]
    /// for one not read from a repository). Copies (the budget store's
    /// limits, the caches) keep the newest version they are given;
    /// [`ConfigProvider::upsert`] ignores it and issues the next.
    #[serde(default)]
    pub version: ConfigVersion,
}

/// A value read from a community's configuration row, with the row's
/// version, so a cache can keep the newer of two reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The row's version when it was read; [`ConfigVersion::ZERO`] when the
    /// community has no row.
    pub version: ConfigVersion,
}

/// Reads and writes community configuration.
///
/// Every write of a community's row issues its next [`ConfigVersion`]
/// ([`ConfigVersion::next`] of the row's, at the repository's clock) in the
/// same atomic step, whichever method writes it (tier overrides share the
/// row), and every read returns the version it read.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ConfigProvider: Send + Sync {
    /// Every community with `ai_enabled`, in id order.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for a row that
    /// cannot be parsed (implementations MUST NOT drop it silently).
    async fn active_communities(&self) -> Result<Vec<CommunityConfig>, RepoError>;

    /// One community's configuration, `None` if it has none.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`].
    async fn community(
        &self,
        community: &CommunityId,
    ) -> Result<Option<CommunityConfig>, RepoError>;

    /// Creates or replaces a community's configuration, atomically, and
    /// returns the version it issued (`config.version` is ignored).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::InvalidInput`].
    async fn upsert(&self, config: &CommunityConfig) -> Result<ConfigVersion, RepoError>;

    /// Sets a community's limits alone, atomically, creating its
    /// configuration (AI enabled, default pricing) when it has none, and
    /// returns the version it issued. Implementations MUST NOT write the
    /// AI switch or the pricing here: a budget change is then one write,
    /// not a read and a write of the whole row, so a concurrent change of
    /// those (an AI switch turned off) is never undone by it.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::InvalidInput`].
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
    ) -> Result<ConfigVersion, RepoError>;
}

/// Reads a community's tier → access level overrides.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TierOverrideRepo: Send + Sync {
    /// The community's overrides (empty when it has none) and the version
    /// of the row they were read from ([`ConfigVersion::ZERO`] without a
    /// row).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] naming the
    /// community and field when stored overrides are malformed.
    async fn tier_overrides(
        &self,
        community: &CommunityId,
    ) -> Result<Versioned<TierOverrides>, RepoError>;

    /// Replaces a community's overrides (an empty map removes them),
    /// atomically, and returns the row's new version
    /// ([`ConfigVersion::ZERO`] when nothing was written: an empty map for
    /// a community without a row).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::InvalidInput`].
    async fn set_tier_overrides(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
    ) -> Result<ConfigVersion, RepoError>;
}
