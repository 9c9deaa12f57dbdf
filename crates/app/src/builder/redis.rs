//! The Redis and Redis Cluster shapes: the budget store, and the tier
//! cache, lease and idempotency records on the same connection.

use std::sync::Arc;

use spendgate_adapter_redis::{
    ClientIdentity, ConnectOptions, RedisBudgetStore, RedisIdempotency, RedisLease, RedisTierCache,
    ReplicaWait, TlsFiles,
};
use spendgate_domain::BudgetPolicy;

use super::{BuildError, RedisOptions, RedisParts, RedisShared};

/// The store, with the ports that share its connection (one macro for
/// both connection types, which share no trait this crate can name).
macro_rules! parts {
    ($store:expr) => {{
        let store = $store;
        let shared = RedisShared {
            tier_cache: Arc::new(RedisTierCache::new(store.connection())),
            lease: Arc::new(RedisLease::new(store.connection())),
            idempotency: Arc::new(RedisIdempotency::new(store.connection())),
        };
        let parts: RedisParts = (Arc::new(store), Some(shared));
        parts
    }};
}

/// The adapter's options; the adapter checks the values.
fn connect_options(options: &RedisOptions) -> Result<ConnectOptions, BuildError> {
    let replica_wait = match options.wait_replicas {
        0 => None,
        replicas => {
            let wait =
                ReplicaWait::new(replicas, options.wait_timeout).map_err(BuildError::Store)?;
            Some(match options.wait_connections {
                Some(connections) => wait
                    .with_connections(connections)
                    .map_err(BuildError::Store)?,
                None => wait,
            })
        }
    };
    Ok(ConnectOptions {
        tls: TlsFiles {
            ca_file: options.tls_ca_file.clone(),
            client: options
                .tls_client
                .clone()
                .map(|(cert_file, key_file)| ClientIdentity {
                    cert_file,
                    key_file,
                }),
        },
        replica_wait,
    })
}

pub(super) async fn standalone(
    url: &str,
    policy: BudgetPolicy,
    options: &RedisOptions,
) -> Result<RedisParts, BuildError> {
    let store = RedisBudgetStore::connect_with(url, policy, &connect_options(options)?)
        .await
        .map_err(BuildError::Store)?;
    Ok(parts!(store))
}

pub(super) async fn cluster(
    urls: &[String],
    policy: BudgetPolicy,
    options: &RedisOptions,
) -> Result<RedisParts, BuildError> {
    let store = RedisBudgetStore::connect_cluster_with(urls, policy, &connect_options(options)?)
        .await
        .map_err(BuildError::Store)?;
    Ok(parts!(store))
}
