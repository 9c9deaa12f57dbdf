//! Optional durability: `WAIT` for replicas after each budget write (the
//! design, the outcome when replicas lag, and the cost are on
//! [`ReplicaWait`]), and the dedicated write connections it runs on.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use spendgate_ports::StoreError;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::CallError;

/// Optional durability: after each budget write, `WAIT` until N replicas
/// acknowledged it, so a failover to a replica does not lose holds or
/// settlements the callers were told about. This value says how many
/// replicas, how long to wait for them, and over how many dedicated
/// connections.
///
/// # Design
///
/// `WAIT` blocks the connection it is sent on until the replicas answer
/// or its timeout passes, and the store multiplexes every caller over one
/// connection: a `WAIT` there would hold up every other caller's reads and
/// writes behind it. So when waiting is on, the budget writes (reserve,
/// extend, finalize, cancel, commit_unheld, reap, set_limits,
/// restore_committed) go through a small fixed set of dedicated
/// connections; a call takes one for itself and sends the
/// script and the `WAIT` pipelined (one round trip), then gives it back.
/// Reads (status, lookup, the due index) and the due index scripts (a hint
/// the reaper's sweep repairs) stay on the multiplexed connection, as do
/// the tier cache, leases and idempotency records. On a Cluster the
/// pipeline is routed by the script's key, so the `WAIT` reaches the master
/// that ran the script.
///
/// # When fewer replicas acknowledge in time
///
/// The write has happened on the primary, and may or may not survive a
/// failover: its outcome is unknown, exactly as after a timeout. The call
/// answers `StoreError::Unavailable`, whose contract already says so
/// ("the effect of a write that timed out is unknown; retrying with the
/// same idempotency key is safe"); nothing is retried inside the adapter,
/// so nothing is applied twice. What follows, by the laws:
///
/// * reserve: the caller denies (fail closed, law 6). The hold exists on
///   the primary and holds its estimate until the caller retries with the
///   same key (which answers `AlreadyReserved`) or the reaper releases it
///   at its TTL: budget is withheld for a while, never overspent.
/// * finalize / cancel: the application keeps the settlement queued and
///   replays it (law 5); the replay answers `AlreadyFinalized` if the
///   write survived, or finalizes again if a failover lost it, so the
///   cost is committed once either way.
/// * reap, set_limits, restore_committed: the next pass or config sync
///   repeats them; all are idempotent.
///
/// Reporting success instead would hide exactly the case the setting is
/// for: a settlement lost on failover would come back as a live hold,
/// which the reaper then releases, and its cost would be missing from
/// the counters.
///
/// The rule is checked for every budget write, also one that wrote
/// nothing (a budget refusal, a replay): with a replica down every write
/// answers `Unavailable`, i.e. reserves are denied until it is back.
///
/// Limit: `WAIT` covers the writes made on its own connection. A replay
/// that finds an earlier call's write (`AlreadyReserved`,
/// `AlreadyFinalized`) wrote nothing itself, so while a replica is
/// connected but lagging behind that earlier write, the replay's `WAIT`
/// can succeed before the earlier write reached it.
///
/// # Cost
///
/// Each budget write waits for the slowest of the N replicas to
/// acknowledge (a replication round trip, typically well under a
/// millisecond on one network), and holds one of the dedicated
/// connections meanwhile: at most `connections` budget writes are in
/// flight at once, and the others queue for a free connection within their
/// operation timeout. A call's time limit is the operation timeout plus
/// the `WAIT` timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    replicas: u32,
    timeout: Duration,
    connections: usize,
}

impl ReplicaWait {
    /// Dedicated write connections unless [`Self::with_connections`] says
    /// otherwise: at most this many budget writes are in flight at once.
    pub const DEFAULT_CONNECTIONS: usize = 16;
    /// The most dedicated connections accepted.
    pub const MAX_CONNECTIONS: usize = 1024;

    /// Wait for `replicas` replicas, at most `timeout` per write.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for 0 replicas (leave waiting off
    /// instead) or a timeout under 1 ms (`WAIT` with 0 would block
    /// forever) or over a day.
    pub fn new(replicas: u32, timeout: Duration) -> Result<Self, StoreError> {
        if replicas == 0 {
            return Err(StoreError::InvalidInput(
                "replica wait: the number of replicas must be at least 1".into(),
            ));
        }
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(86_400) {
            return Err(StoreError::InvalidInput(format!(
                "replica wait: the timeout must be between 1 ms and a day, not {timeout:?}"
            )));
        }
        Ok(Self {
            replicas,
            timeout,
            connections: Self::DEFAULT_CONNECTIONS,
        })
    }

    /// The same wait over `connections` dedicated write connections.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for 0 or more than
    /// [`Self::MAX_CONNECTIONS`].
    pub fn with_connections(mut self, connections: usize) -> Result<Self, StoreError> {
        if connections == 0 || connections > Self::MAX_CONNECTIONS {
            return Err(StoreError::InvalidInput(format!(
                "replica wait: the write connections must be between 1 and {}, not {connections}",
                Self::MAX_CONNECTIONS
            )));
        }
        self.connections = connections;
        Ok(self)
    }

    /// Replicas that must acknowledge each budget write.
    pub fn replicas(self) -> u32 {
        self.replicas
    }

    /// How long one write waits for them.
    pub fn timeout(self) -> Duration {
        self.timeout
    }

    /// Dedicated write connections.
    pub fn connections(self) -> usize {
        self.connections
    }

    /// The timeout as `WAIT` takes it (whole milliseconds, at least 1).
    pub(crate) fn timeout_ms(self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The dedicated write connections, each used by one call at a time.
pub(crate) struct Writers<C> {
    wait: ReplicaWait,
    idle: Mutex<Vec<C>>,
    free: Semaphore,
}

impl<C> Writers<C> {
    /// A set over `connections` (opened by the caller, one per slot).
    pub(crate) fn new(wait: ReplicaWait, connections: Vec<C>) -> Self {
        let free = Semaphore::new(connections.len());
        Self {
            wait,
            idle: Mutex::new(connections),
            free,
        }
    }

    pub(crate) fn wait(&self) -> ReplicaWait {
        self.wait
    }

    /// Waits for a free connection and takes it until the returned guard
    /// drops (also when the call is cancelled or times out).
    pub(crate) async fn take(&self) -> Result<Writer<'_, C>, CallError> {
        let permit = self.free.acquire().await.map_err(|_| CallError::NoWriter)?;
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(CallError::NoWriter)?;
        Ok(Writer {
            conn: Some(conn),
            writers: self,
            _permit: permit,
        })
    }
}

/// One taken write connection; given back on drop.
pub(crate) struct Writer<'a, C> {
    conn: Option<C>,
    writers: &'a Writers<C>,
    // Dropped after `drop` below has put the connection back.
    _permit: SemaphorePermit<'a>,
}

impl<C> Writer<'_, C> {
    /// The connection, exclusively this call's.
    pub(crate) fn conn(&mut self) -> Result<&mut C, CallError> {
        self.conn.as_mut().ok_or(CallError::NoWriter)
    }
}

impl<C> Drop for Writer<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.writers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_replicas_and_timeouts_under_a_millisecond_are_refused() {
        assert!(ReplicaWait::new(0, Duration::from_millis(100)).is_err());
        assert!(ReplicaWait::new(1, Duration::ZERO).is_err());
        assert!(ReplicaWait::new(1, Duration::from_micros(500)).is_err());
        assert!(ReplicaWait::new(1, Duration::from_secs(86_401)).is_err());
        let wait = ReplicaWait::new(2, Duration::from_millis(1)).unwrap();
        assert_eq!(wait.timeout_ms(), 1);
        assert_eq!(wait.connections(), ReplicaWait::DEFAULT_CONNECTIONS);
    }

    #[test]
    fn the_connection_count_is_bounded() {
        let wait = ReplicaWait::new(1, Duration::from_millis(50)).unwrap();
        assert!(wait.with_connections(0).is_err());
        assert!(
            wait.with_connections(ReplicaWait::MAX_CONNECTIONS + 1)
                .is_err()
        );
        assert_eq!(wait.with_connections(4).unwrap().connections(), 4);
    }

    #[tokio::test]
    async fn a_taken_connection_is_nobody_elses_until_given_back() {
        let wait = ReplicaWait::new(1, Duration::from_millis(50)).unwrap();
        let writers = Writers::new(wait, vec![7_u8]);
        let mut first = writers.take().await.unwrap();
        assert_eq!(*first.conn().unwrap(), 7);
        tokio::select! {
            biased;
            _ = writers.take() => panic!("a second caller got the only connection"),
            () = std::future::ready(()) => {}
        }
        drop(first);
        let mut again = writers.take().await.unwrap();
        assert_eq!(*again.conn().unwrap(), 7);
    }
}
