//! A shared, short-lived cache of tier overrides, so a reserve does not
//! read the database every time.

use async_trait::async_trait;
use spendgate_domain::{CommunityId, TierOverrides, Ttl};

use crate::config::RepoError;

/// Tier overrides cached per community.
///
/// A cached empty map is the negative entry: the community has no
/// overrides, and the database need not be asked again until it expires.
/// Implementations MAY expire entries by their own clock (Redis key TTLs);
/// a stale read is bounded by the TTL given to [`TierCache::put`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TierCache: Send + Sync {
    /// The cached overrides, `None` on a miss.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] (the caller reads the database instead);
    /// [`RepoError::BadData`] for an entry that cannot be parsed (the
    /// caller treats it as a miss).
    async fn get(&self, community: &CommunityId) -> Result<Option<TierOverrides>, RepoError>;

    /// Caches `overrides` for `ttl`, replacing any entry.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn put(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
        ttl: Ttl,
    ) -> Result<(), RepoError>;

    /// Drops the community's entry, so the next read goes to the database.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn invalidate(&self, community: &CommunityId) -> Result<(), RepoError>;
}
