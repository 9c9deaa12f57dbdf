//! [`RedisLease`]: the [`Lease`] port on one Redis string per lease,
//! expired by Redis itself.
//!
//! The key is [`lease_key`] (`sg:{lease:<name>}`): hash-tagged on the lease
//! name, so each lease is one key on one slot, outside every community's
//! tag. The value is the holder token; the key's Redis TTL (`PX`) is the
//! lease's expiry. Two small scripts make each call one atomic round trip:
//!
//! * acquire: no key → `SET key holder PX ttl`, granted; the key holds
//!   `holder` → `PEXPIRE key ttl`, renewed; anything else → refused;
//! * release: the key holds `holder` → `DEL`, released; else nothing.
//!
//! Expiry is by Redis' clock (the port allows it): the `now` given to
//! `acquire` is not used, and a lease lasts `ttl` from the moment Redis
//! ran the grant, never longer.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Lease, RepoError};

use crate::connection;
use crate::error::CallError;
use crate::keys::lease_key;
use crate::script;
use crate::store::DEFAULT_TIMEOUT;
use crate::tls::TlsFiles;

/// `KEYS[1]` the lease key, `ARGV[1]` the holder, `ARGV[2]` the TTL in ms;
/// returns 1 when `holder` holds the lease afterwards, else 0.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `KEYS[1]` the lease key, `ARGV[1]` the holder; returns 1 when it
/// deleted the holder's lease, else 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// A [`Lease`] on Redis (standalone or Cluster).
///
/// `C` is any multiplexed async connection: [`ConnectionManager`]
/// (reconnects by itself) or the Cluster connection; the connection of a
/// [`RedisBudgetStore`](crate::RedisBudgetStore) can be shared
/// (`RedisLease::new(store.connection())`). Every call is one script call
/// bounded by the timeout: no answer in time, or any connection or server
/// error, is [`RepoError::Unavailable`]. Names and holders must be
/// non-empty, at most 128 bytes, printable ASCII without whitespace, `{` or
/// `}` (so a name cannot leave its hash tag); anything else is
/// [`RepoError::InvalidInput`], with no call made.
#[derive(Clone)]
pub struct RedisLease<C> {
    conn: C,
    timeout: Duration,
}

impl<C> fmt::Debug for RedisLease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLease")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLease<ConnectionManager> {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`)
    /// through a reconnecting [`ConnectionManager`].
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for a malformed URL,
    /// [`RepoError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, RepoError> {
        Ok(Self::new(
            connection::standalone(url, &TlsFiles::default()).await?,
        ))
    }
}

impl RedisLease<ClusterConnection> {
    /// Connects to a Redis Cluster through any of `urls`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for malformed URLs,
    /// [`RepoError::Unavailable`] when no node can be reached.
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S]) -> Result<Self, RepoError> {
        Ok(Self::new(
            connection::cluster(urls, &TlsFiles::default()).await?,
        ))
    }
}

impl<C> RedisLease<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Leases over an existing connection, with [`DEFAULT_TIMEOUT`].
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same leases with another operation timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A clone of the underlying connection (for admin commands in tests
    /// and tools; the leases themselves need nothing else).
    pub fn connection(&self) -> C {
        self.conn.clone()
    }

    /// Runs `script` on the lease key of `name` with `args`, within the
    /// timeout, reloading it if the script cache was flushed meanwhile.
    async fn call(&self, script: &Script, name: &str, args: &[&[u8]]) -> Result<i64, CallError> {
        let key = lease_key(name);
        script::run(&self.conn, script, &[&key], args, self.timeout).await
    }
}

/// No answer in time, a dropped or refused connection, a cluster that is
/// down, a server error (including another type under the key): the lease
/// could not be decided.
fn unavailable(op: &str, name: &str, error: &CallError) -> RepoError {
    RepoError::Unavailable(format!("lease {op} of {name}: {error}"))
}

#[async_trait]
impl<C> Lease for RedisLease<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    #[tracing::instrument(skip_all, err, fields(name = %name, holder = %holder))]
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Ttl,
        _now: Timestamp,
    ) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let ttl_ms = ttl.as_millis().to_string();
        let granted = self
            .call(
                &ACQUIRE_SCRIPT,
                name,
                &[holder.as_bytes(), ttl_ms.as_bytes()],
            )
            .await
            .map_err(|e| unavailable("acquire", name, &e))?;
        Ok(granted == 1)
    }

    #[tracing::instrument(skip_all, err, fields(name = %name, holder = %holder))]
    async fn release(&self, name: &str, holder: &str) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let released = self
            .call(&RELEASE_SCRIPT, name, &[holder.as_bytes()])
            .await
            .map_err(|e| unavailable("release", name, &e))?;
        Ok(released == 1)
    }
}
