//! Opening the connections every Redis adapter of this crate runs on: one
//! setup for the budget store and the tier cache, so both bound connecting
//! the same way and leave response times to their own operation timeout.
//! `rediss://` URLs connect through TLS ([`crate::tls`]).

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use spendgate_ports::{RepoError, StoreError, redact_url};

use crate::replicas::ReplicaWait;
use crate::store::DEFAULT_TIMEOUT;
use crate::tls::{self, TlsFiles};

/// The cluster client's own response timeout: longer than any operation
/// timeout, which is what actually bounds a call.
const CLIENT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the cluster client follows a redirection (`MOVED`, `ASK`) or
/// waits out a `TRYAGAIN` for one call: with the waits below, about 1.5 s
/// of `TRYAGAIN`, more than the default operation timeout allows, so that
/// timeout is what bounds a call (see
/// [`RedisBudgetStore`](crate::RedisBudgetStore)'s "Cluster resharding").
/// Kept well below 60: the client computes its wait as
/// `factor · 2^retry` in a `u64`, which overflows from there (a panic in a
/// debug build, which ends the connection's driver task).
const CLUSTER_RETRIES: u32 = 40;
/// The cluster client's wait before retrying after `TRYAGAIN` (or a lost
/// connection), in ms: a random time from [`RETRY_MIN_WAIT_MS`] up to
/// `RETRY_FACTOR_MS · 2^retry`, at most [`RETRY_MAX_WAIT_MS`]. The client's
/// default starts at 1.28 s, past any operation timeout, so a `TRYAGAIN`
/// during a slot migration would never be retried in time.
const RETRY_MIN_WAIT_MS: u64 = 2;
/// See [`RETRY_MIN_WAIT_MS`].
const RETRY_MAX_WAIT_MS: u64 = 50;
/// See [`RETRY_MIN_WAIT_MS`].
const RETRY_FACTOR_MS: u64 = 2;

/// How long connecting may take in all (the client's own connection
/// timeout applies per attempt).
pub(crate) const CONNECT_DEADLINE: Duration = DEFAULT_TIMEOUT.saturating_mul(4);

/// How [`RedisBudgetStore::connect_with`](crate::RedisBudgetStore::connect_with)
/// and [`connect_cluster_with`](crate::RedisBudgetStore::connect_cluster_with)
/// connect beyond their URLs. The default is what `connect` does: the
/// system's trust store for `rediss://`, no waiting for replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// CA and client certificate files for `rediss://` URLs.
    pub tls: TlsFiles,
    /// Wait for replicas after each budget write; `None` (the default)
    /// answers as soon as the primary has written.
    pub replica_wait: Option<ReplicaWait>,
}

/// Why a connection could not be opened; each adapter turns it into its
/// port's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The URL (or one of the cluster URLs) or a TLS file is malformed.
    #[error("{0}")]
    InvalidInput(String),
    /// A `rediss://` URL (shown redacted), but this build has no TLS.
    #[error(
        "{0}: rediss:// needs TLS support; build spendgate-adapter-redis with its `tls` feature \
         (the spendgate crate's `redis-tls` feature)"
    )]
    TlsDisabled(String),
    /// No server answered in time.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ConnectError> for StoreError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::InvalidInput(m) => StoreError::InvalidInput(m),
            ConnectError::TlsDisabled(_) => StoreError::InvalidInput(error.to_string()),
            ConnectError::Unavailable(m) => StoreError::Unavailable(m),
        }
    }
}

impl From<ConnectError> for RepoError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::InvalidInput(m) => RepoError::InvalidInput(m),
            ConnectError::TlsDisabled(_) => RepoError::InvalidInput(error.to_string()),
            ConnectError::Unavailable(m) => RepoError::Unavailable(m),
        }
    }
}

/// The client's message may quote a URL too: the whole text is redacted.
fn unavailable(what: &str, error: &RedisError) -> ConnectError {
    ConnectError::Unavailable(redact_url(&format!("{what}: {error}")))
}

/// A reconnecting [`ConnectionManager`] to the standalone Redis at `url`
/// (`redis://host:port/db`, or `rediss://` with `tls`).
pub(crate) async fn standalone(
    url: &str,
    tls: &TlsFiles,
) -> Result<ConnectionManager, ConnectError> {
    let client = tls::client(url, tls)?;
    // Responses are bounded by each adapter's own operation timeout
    // (`with_timeout`), not by the client's.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(DEFAULT_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(200));
    tokio::time::timeout(
        CONNECT_DEADLINE,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| ConnectError::Unavailable(format!("connecting to {} timed out", redact_url(url))))?
    .map_err(|e| unavailable(&format!("connecting to {}", redact_url(url)), &e))
}

/// A connection to the Redis Cluster reached through any of `urls`.
pub(crate) async fn cluster<S: AsRef<str>>(
    urls: &[S],
    tls: &TlsFiles,
) -> Result<ClusterConnection, ConnectError> {
    let nodes: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
    let shown: Vec<String> = nodes.iter().map(|url| redact_url(url)).collect();
    // Responses, and the redirections and retries a call goes through, are
    // bounded by each adapter's own operation timeout (`with_timeout`), not
    // by the client's: dropping a call at that timeout ends its retries.
    let builder = ClusterClient::builder(nodes.clone())
        .connection_timeout(DEFAULT_TIMEOUT)
        .response_timeout(CLIENT_RESPONSE_TIMEOUT)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(RETRY_MIN_WAIT_MS)
        .max_retry_wait(RETRY_MAX_WAIT_MS)
        .retry_wait_formula(RETRY_FACTOR_MS, 2);
    let client = tls::cluster(builder, &nodes, tls)?.build().map_err(|e| {
        ConnectError::InvalidInput(redact_url(&format!("cluster urls {shown:?}: {e}")))
    })?;
    tokio::time::timeout(CONNECT_DEADLINE, client.get_async_connection())
        .await
        .map_err(|_| ConnectError::Unavailable(format!("connecting to {shown:?} timed out")))?
        .map_err(|e| unavailable(&format!("connecting to {shown:?}"), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_urls_are_invalid_input() {
        let plain = TlsFiles::default();
        assert!(matches!(
            standalone("http://nowhere", &plain).await,
            Err(ConnectError::InvalidInput(_))
        ));
        assert!(matches!(
            cluster::<&str>(&[], &plain).await,
            Err(ConnectError::InvalidInput(_))
        ));
        assert!(matches!(
            RepoError::from(ConnectError::Unavailable("x".into())),
            RepoError::Unavailable(_)
        ));
    }
}
