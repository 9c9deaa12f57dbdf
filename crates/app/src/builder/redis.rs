//! The Redis and Redis Cluster shapes: the budget store, and the tier
//! cache, lease and idempotency records on the same connection.

use std::sync::Arc;

use spendgate_adapter_redis::{RedisBudgetStore, RedisIdempotency, RedisLease, RedisTierCache};
use spendgate_domain::BudgetPolicy;

use super::{BuildError, RedisParts, RedisShared};

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

pub(super) async fn standalone(url: &str, policy: BudgetPolicy) -> Result<RedisParts, BuildError> {
    let store = RedisBudgetStore::connect(url, policy)
        .await
        .map_err(BuildError::Store)?;
    Ok(parts!(store))
}

pub(super) async fn cluster(
    urls: &[String],
    policy: BudgetPolicy,
) -> Result<RedisParts, BuildError> {
    let store = RedisBudgetStore::connect_cluster(urls, policy)
        .await
        .map_err(BuildError::Store)?;
    Ok(parts!(store))
}
