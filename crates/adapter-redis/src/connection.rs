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

fn unavailable(what: &str, error: &RedisError) -> ConnectError {
    ConnectError::Unavailable(format!("{what}: {error}"))
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
    // Responses are bounded by each adapter's own operation timeout
    // (`with_timeout`), not by the client's.
    let builder = ClusterClient::builder(nodes.clone())
        .connection_timeout(DEFAULT_TIMEOUT)
        .response_timeout(CLIENT_RESPONSE_TIMEOUT)
        .retries(2);
    let client = tls::cluster(builder, &nodes, tls)?
        .build()
        .map_err(|e| ConnectError::InvalidInput(format!("cluster urls {shown:?}: {e}")))?;
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
