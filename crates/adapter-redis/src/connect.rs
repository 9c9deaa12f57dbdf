//! Connecting a [`RedisBudgetStore`] with [`ConnectOptions`]: the server
//! checks, TLS files, and the dedicated write connections of a store that
//! waits for replicas.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::{StoreError, redact_url};

use crate::connection::{self, CONNECT_DEADLINE, ConnectOptions};
use crate::server_check;
use crate::store::RedisBudgetStore;

impl RedisBudgetStore<ConnectionManager> {
    /// [`Self::connect`] with TLS files for a `rediss://` URL and, when
    /// `options.replica_wait` is set, its dedicated write connections.
    ///
    /// # Errors
    /// As [`Self::connect`]; [`StoreError::InvalidInput`] also for TLS
    /// files that cannot be read or parsed, or are given with a plain
    /// `redis://` URL.
    pub async fn connect_with(
        url: &str,
        policy: BudgetPolicy,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let mut conn = connection::standalone(url, &options.tls).await?;
        tokio::time::timeout(
            CONNECT_DEADLINE,
            server_check::prepare_standalone(&mut conn),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("checking {} timed out", redact_url(url)))
        })??;
        let store = Self::new(conn, policy);
        let Some(wait) = options.replica_wait else {
            return Ok(store);
        };
        let mut writers = Vec::with_capacity(wait.connections());
        for _ in 0..wait.connections() {
            writers.push(connection::standalone(url, &options.tls).await?);
        }
        Ok(store.with_replica_wait(wait, writers))
    }
}

impl RedisBudgetStore<ClusterConnection> {
    /// [`Self::connect_cluster`] with TLS files for `rediss://` nodes and,
    /// when `options.replica_wait` is set, its dedicated write connections
    /// (each a cluster connection of its own).
    ///
    /// # Errors
    /// As [`Self::connect_with`].
    pub async fn connect_cluster_with<S: AsRef<str>>(
        urls: &[S],
        policy: BudgetPolicy,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let mut conn = connection::cluster(urls, &options.tls).await?;
        tokio::time::timeout(CONNECT_DEADLINE, server_check::prepare_cluster(&mut conn))
            .await
            .map_err(|_| {
                StoreError::Unavailable("checking the cluster's masters timed out".into())
            })??;
        let store = Self::new(conn, policy);
        let Some(wait) = options.replica_wait else {
            return Ok(store);
        };
        let mut writers = Vec::with_capacity(wait.connections());
        for _ in 0..wait.connections() {
            writers.push(connection::cluster(urls, &options.tls).await?);
        }
        Ok(store.with_replica_wait(wait, writers))
    }
}
