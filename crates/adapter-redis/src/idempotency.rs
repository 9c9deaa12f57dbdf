//! [`RedisIdempotency`]: the [`IdempotencyStore`] port on one Redis hash
//! per request, beside the tenant's budget.
//!
//! The key is [`request_key`] (`sg:{<tenant>}:i:<digest>`, on the
//! tenant's hash tag); its fields are the fingerprint, the status (`0`
//! while pending), the body and `keep_until` (see [`crate::keys`]). Each
//! call is one script, one atomic round trip on one Cluster slot:
//!
//! * claim (`lua/idem_claim.lua`): a record whose `keep_until` is after the
//!   caller's `now` is compared (pending, completed or mismatch); none, or
//!   an expired one, is replaced by a pending record with a Redis TTL of
//!   `keep_until - now` (at least 1 ms);
//! * complete (`lua/idem_complete.lua`): a pending record with the same
//!   fingerprint takes the answer; a completed one keeps its first.
//!
//! Both scripts re-check their arguments before their first write, so a
//! refused call changes nothing. The TTL is the garbage collector: Redis
//! drops a record once it has been kept long enough, so
//! [`IdempotencyStore::purge`] has nothing left to do and returns 0.
//! Liveness is never the TTL's call: a record still in Redis past its
//! `keep_until` (by the caller's clock) counts as absent.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, Script};
use spendgate_domain::Timestamp;
use spendgate_ports::{
    Claim, IdempotencyStore, RepoError, RequestId, StoredResponse, check_fingerprint,
};

use crate::connection;
use crate::error::CallError;
use crate::keys::request_key;
use crate::script::{self, CORRUPT_PREFIX, IDEM_CLAIM, IDEM_COMPLETE, INVALID_PREFIX};
use crate::store::DEFAULT_TIMEOUT;
use crate::tls::TlsFiles;

/// An [`IdempotencyStore`] on Redis (standalone or Cluster).
///
/// `C` is any multiplexed async connection: [`ConnectionManager`]
/// (reconnects by itself) or the Cluster connection; the connection of a
/// [`RedisBudgetStore`](crate::RedisBudgetStore) can be shared
/// (`RedisIdempotency::new(store.connection())`), so the Cycles protocol's
/// records cost no other database. Every call is one script call bounded
/// by the timeout: no answer in time, or any connection or server error, is
/// [`RepoError::Unavailable`]; arguments failing the port's checks are
/// [`RepoError::InvalidInput`], with no call made.
#[derive(Clone)]
pub struct RedisIdempotency<C> {
    conn: C,
    timeout: Duration,
}

impl<C> fmt::Debug for RedisIdempotency<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotency")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisIdempotency<ConnectionManager> {
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

impl RedisIdempotency<ClusterConnection> {
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

impl<C> RedisIdempotency<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Records over an existing connection, with [`DEFAULT_TIMEOUT`].
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same records with another operation timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A clone of the underlying connection (for admin commands in tests
    /// and tools; the records themselves need nothing else).
    pub fn connection(&self) -> C {
        self.conn.clone()
    }

    /// Runs `script` on the record of `id` with `args`, within the
    /// timeout, reloading it if the script cache was flushed meanwhile.
    async fn call<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        id: &RequestId,
        args: &[&[u8]],
    ) -> Result<T, CallError> {
        let key = request_key(id);
        script::run(&self.conn, script, &[&key], args, self.timeout).await
    }
}

/// A script's refusal of an argument (which the checks above let through
/// only if the two disagree) is invalid input; stored data a script
/// cannot read, or another type under the key, is bad data; anything else
/// (no answer in time, a dropped or refused connection, a cluster that is
/// down) leaves the record unknown.
fn repo_error(op: &str, id: &RequestId, error: &CallError) -> RepoError {
    let text = error.to_string();
    let what = format!("idempotency {op} of {} {}", id.operation, id.key);
    let bad_data = |reason: String| RepoError::BadData {
        community: id.tenant.to_string(),
        field: "idempotency record".to_owned(),
        reason,
    };
    match error {
        CallError::Redis(e) if e.code() == Some("WRONGTYPE") => bad_data(text),
        CallError::Redis(_) if text.contains(INVALID_PREFIX) => {
            RepoError::InvalidInput(format!("{what}: {text}"))
        }
        CallError::Redis(_) if text.contains(CORRUPT_PREFIX) => bad_data(text),
        CallError::Redis(e)
            if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) =>
        {
            bad_data(format!("unreadable reply: {text}"))
        }
        _ => RepoError::Unavailable(format!("{what}: {text}")),
    }
}

/// Turns the claim script's `{code, status, body}` into a [`Claim`].
fn decode_claim(
    id: &RequestId,
    (code, status, body): (i64, i64, Vec<u8>),
) -> Result<Claim, RepoError> {
    let bad = |reason: String| RepoError::BadData {
        community: id.tenant.to_string(),
        field: "idempotency record".to_owned(),
        reason,
    };
    match code {
        0 => Ok(Claim::Started),
        1 => Ok(Claim::Pending),
        2 => {
            let status = u16::try_from(status)
                .map_err(|_| bad(format!("stored status {status} is not a status")))?;
            let response = StoredResponse { status, body };
            response.check().map_err(|e| bad(e.to_string()))?;
            Ok(Claim::Completed(response))
        }
        3 => Ok(Claim::Mismatch),
        other => Err(bad(format!("unknown claim outcome {other}"))),
    }
}

#[async_trait]
impl<C> IdempotencyStore for RedisIdempotency<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    #[tracing::instrument(skip_all, err, fields(tenant = %id.tenant, operation = %id.operation))]
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        let now = now.as_millis().to_string();
        let keep_until = keep_until.as_millis().to_string();
        let reply = self
            .call::<(i64, i64, Vec<u8>)>(
                &IDEM_CLAIM,
                id,
                &[fingerprint, now.as_bytes(), keep_until.as_bytes()],
            )
            .await
            .map_err(|e| repo_error("claim", id, &e))?;
        decode_claim(id, reply)
    }

    #[tracing::instrument(skip_all, err, fields(tenant = %id.tenant, operation = %id.operation))]
    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        response.check()?;
        let status = response.status.to_string();
        let done = self
            .call::<i64>(
                &IDEM_COMPLETE,
                id,
                &[fingerprint, status.as_bytes(), &response.body],
            )
            .await
            .map_err(|e| repo_error("complete", id, &e))?;
        Ok(done == 1)
    }

    /// Returns 0 and touches nothing: every record carries a Redis TTL that
    /// ends when it may be purged (`keep_until` by the claim's clock), so
    /// Redis deletes it itself, without a scan that a Cluster would have to
    /// run on every master.
    async fn purge(&self, _now: Timestamp, _limit: u32) -> Result<u64, RepoError> {
        Ok(0)
    }
}
