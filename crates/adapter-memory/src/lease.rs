//! Leases kept in process memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Lease, RepoError};

/// Lease name → (holder, expires at).
type Leases = HashMap<String, (String, Timestamp)>;

/// A [`Lease`] in one process: a mutex over name → (holder, expiry).
///
/// Expiry is judged by the `now` each `acquire` is given: a lease granted
/// at `now` for `ttl` is held while a later caller's `now` is before
/// `now + ttl`. `release` has no `now`, so a holder whose lease expired
/// (but was not taken over) can still give it up. Names and holders are
/// checked like the other adapters check them: non-empty, at most 128
/// bytes, printable ASCII without whitespace, `{` or `}`; anything else is
/// [`RepoError::InvalidInput`]. It is useful within one process only (two
/// replicas never share it): as the embedded default and as a test double.
#[derive(Default)]
pub struct MemoryLease {
    leases: Mutex<Leases>,
}

impl std::fmt::Debug for MemoryLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLease").finish_non_exhaustive()
    }
}

impl MemoryLease {
    /// No lease held.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Leases>, RepoError> {
        self.leases
            .lock()
            .map_err(|_| RepoError::Unavailable("memory lease lock poisoned".into()))
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let expires = now
            .plus(ttl)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let mut leases = self.lock()?;
        if let Some((current, until)) = leases.get(name)
            && current != holder
            && now < *until
        {
            return Ok(false);
        }
        leases.insert(name.to_owned(), (holder.to_owned(), expires));
        Ok(true)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let mut leases = self.lock()?;
        if leases
            .get(name)
            .is_some_and(|(current, _)| current == holder)
        {
            leases.remove(name);
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn ttl(ms: i64) -> Ttl {
        Ttl::from_millis(ms).unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_expiry() {
        let lease = MemoryLease::new();
        assert_eq!(
            lease.acquire("reaper", "a", ttl(300), at(1_000)).await,
            Ok(true)
        );
        // Refused while it lives, up to the last millisecond.
        assert_eq!(
            lease.acquire("reaper", "b", ttl(300), at(1_000)).await,
            Ok(false)
        );
        assert_eq!(
            lease.acquire("reaper", "b", ttl(300), at(1_299)).await,
            Ok(false)
        );
        // The holder renews: the lease now runs to 1_250 + 300.
        assert_eq!(
            lease.acquire("reaper", "a", ttl(300), at(1_250)).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire("reaper", "b", ttl(300), at(1_549)).await,
            Ok(false)
        );
        // Expired: the next taker gets it, and the former holder is out.
        assert_eq!(
            lease.acquire("reaper", "b", ttl(300), at(1_550)).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire("reaper", "a", ttl(300), at(1_600)).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn only_the_holder_releases() {
        let lease = MemoryLease::new();
        assert_eq!(lease.release("sync", "a").await, Ok(false));
        assert_eq!(
            lease.acquire("sync", "a", ttl(60_000), at(0)).await,
            Ok(true)
        );
        assert_eq!(lease.release("sync", "b").await, Ok(false));
        assert_eq!(
            lease.acquire("sync", "b", ttl(60_000), at(10)).await,
            Ok(false)
        );
        assert_eq!(lease.release("sync", "a").await, Ok(true));
        assert_eq!(lease.release("sync", "a").await, Ok(false));
        assert_eq!(
            lease.acquire("sync", "b", ttl(60_000), at(20)).await,
            Ok(true)
        );
    }

    #[tokio::test]
    async fn names_are_independent() {
        let lease = MemoryLease::new();
        assert_eq!(
            lease.acquire("reaper", "a", ttl(60_000), at(0)).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire("sync", "b", ttl(60_000), at(0)).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire("reaper", "b", ttl(60_000), at(1)).await,
            Ok(false)
        );
        assert_eq!(
            lease.acquire("sync", "a", ttl(60_000), at(1)).await,
            Ok(false)
        );
        assert_eq!(lease.release("sync", "b").await, Ok(true));
        assert_eq!(
            lease.acquire("reaper", "b", ttl(60_000), at(2)).await,
            Ok(false)
        );
        assert_eq!(
            lease.acquire("sync", "a", ttl(60_000), at(2)).await,
            Ok(true)
        );
    }

    #[tokio::test]
    async fn bad_names_and_holders_are_invalid_input() {
        let lease = MemoryLease::new();
        let long = "x".repeat(spendgate_ports::MAX_LEASE_ARG_LEN + 1);
        let max = "x".repeat(spendgate_ports::MAX_LEASE_ARG_LEN);
        for bad in ["", "a b", "a{b", "b}", "tab\t", "é", long.as_str()] {
            assert!(
                matches!(
                    lease.acquire(bad, "a", ttl(1_000), at(0)).await,
                    Err(RepoError::InvalidInput(_))
                ),
                "name {bad:?}"
            );
            assert!(
                matches!(
                    lease.acquire("n", bad, ttl(1_000), at(0)).await,
                    Err(RepoError::InvalidInput(_))
                ),
                "holder {bad:?}"
            );
            assert!(
                matches!(
                    lease.release(bad, "a").await,
                    Err(RepoError::InvalidInput(_))
                ),
                "release name {bad:?}"
            );
            assert!(
                matches!(
                    lease.release("n", bad).await,
                    Err(RepoError::InvalidInput(_))
                ),
                "release holder {bad:?}"
            );
        }
        assert_eq!(lease.acquire(&max, &max, ttl(1_000), at(0)).await, Ok(true));
        // An expiry past the representable range is refused, nothing taken.
        assert!(matches!(
            lease
                .acquire("late", "a", ttl(Ttl::MAX_MS), Timestamp::MAX)
                .await,
            Err(RepoError::InvalidInput(_))
        ));
        assert_eq!(lease.acquire("late", "b", ttl(1), at(0)).await, Ok(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_acquirers_get_exactly_one_grant() {
        let lease = Arc::new(MemoryLease::new());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let lease = Arc::clone(&lease);
                tokio::spawn(async move {
                    lease
                        .acquire("race", &format!("holder-{i}"), ttl(60_000), at(0))
                        .await
                })
            })
            .collect();
        let mut granted = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                granted += 1;
            }
        }
        assert_eq!(granted, 1);
    }
}
