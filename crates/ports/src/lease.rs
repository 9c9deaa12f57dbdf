//! Leases: one holder at a time for a singleton job across replicas.

use async_trait::async_trait;
use spendgate_domain::{Timestamp, Ttl};

use crate::config::RepoError;

/// A named lease held by at most one holder until it expires.
///
/// Holders identify themselves with a token unique per process (or per
/// job run). Implementations MUST make every call atomic, MUST compare the
/// token on renew and release (a holder that lost the lease cannot renew
/// or release another's), and MAY expire leases by their own clock (Redis
/// key TTLs) as long as a lease never outlives `ttl` from its last grant.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Lease: Send + Sync {
    /// Takes the lease `name` for `holder` until `now + ttl` if nobody
    /// holds it (or its holder let it expire); renews it if `holder` holds
    /// it already. Returns whether `holder` holds it now.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]: the caller MUST act as if it did not get
    /// the lease.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<bool, RepoError>;

    /// Gives the lease up if `holder` holds it; returns whether it did.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]: the lease then expires by itself.
    async fn release(&self, name: &str, holder: &str) -> Result<bool, RepoError>;
}
