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

/// The longest lease name or holder token, in bytes.
pub const MAX_LEASE_ARG_LEN: usize = 128;

/// The rule every [`Lease`] implementation applies to its arguments before
/// anything else: `name` and `holder` are non-empty, at most
/// [`MAX_LEASE_ARG_LEN`] bytes, printable ASCII without `{` or `}` (so a
/// name cannot leave a Redis hash tag).
///
/// # Errors
/// [`RepoError::InvalidInput`] naming the argument at fault.
pub fn check_lease_args(name: &str, holder: &str) -> Result<(), RepoError> {
    for (field, value) in [("name", name), ("holder", holder)] {
        if value.is_empty() {
            return Err(RepoError::InvalidInput(format!("lease {field} is empty")));
        }
        if value.len() > MAX_LEASE_ARG_LEN {
            return Err(RepoError::InvalidInput(format!(
                "lease {field} is {} bytes long; at most {MAX_LEASE_ARG_LEN} are allowed",
                value.len()
            )));
        }
        if let Some(position) = value
            .bytes()
            .position(|b| !b.is_ascii_graphic() || b == b'{' || b == b'}')
        {
            return Err(RepoError::InvalidInput(format!(
                "lease {field} contains a forbidden character at byte {position}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_and_holders_are_checked() {
        let long = "x".repeat(MAX_LEASE_ARG_LEN + 1);
        for bad in ["", "a b", "a{b", "b}", "nl\n", "é", long.as_str()] {
            assert!(
                matches!(check_lease_args(bad, "h"), Err(RepoError::InvalidInput(_))),
                "{bad:?}"
            );
            assert!(
                matches!(check_lease_args("n", bad), Err(RepoError::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_lease_args(&"x".repeat(MAX_LEASE_ARG_LEN), "pod-7"),
            Ok(())
        );
        assert_eq!(check_lease_args("reaper:v1/pod-7", "pod-7"), Ok(()));
    }
}
