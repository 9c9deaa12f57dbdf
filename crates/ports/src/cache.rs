//! A shared, short-lived cache of tier overrides, so a reserve does not
//! read the database every time.

use async_trait::async_trait;
use spendgate_domain::{CommunityId, ConfigVersion, TierOverrides, Ttl};

use crate::config::{RepoError, Versioned};

/// Tier overrides cached per community, with the version of the
/// configuration row they were read from.
///
/// A cached empty map is the negative entry: the community has no
/// overrides, and the database need not be asked again until it expires.
/// Implementations MAY expire entries by their own clock (Redis key TTLs);
/// a stale read is bounded by the TTL given to [`TierCache::put`].
///
/// An entry is never replaced by an older version: a reader that read the
/// database before a write and caches what it read after the writer
/// cached the new overrides leaves the new ones in place. (When the
/// writer's own `put` fails, such a reader's older value may stay until it
/// expires.)
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TierCache: Send + Sync {
    /// The cached overrides and their version, `None` on a miss.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] (the caller reads the database instead);
    /// [`RepoError::BadData`] for an entry that cannot be parsed (the
    /// caller treats it as a miss).
    async fn get(
        &self,
        community: &CommunityId,
    ) -> Result<Option<Versioned<TierOverrides>>, RepoError>;

    /// Caches `overrides` of `version` for `ttl`, replacing any entry of
    /// the same or an older version, atomically; an entry of a newer
    /// version stays (and its expiry with it), and the call succeeds.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn put(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
        version: ConfigVersion,
        ttl: Ttl,
    ) -> Result<(), RepoError>;
}
