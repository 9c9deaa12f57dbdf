//! The Redis options given to the builder reach the Redis adapter, which
//! refuses bad ones before the store is used.

use std::time::Duration;

use spendgate::ports::StoreError;
use spendgate::{BuildError, RedisOptions, Spendgate};

use crate::support::servers::redis_url;

async fn build_error(options: RedisOptions) -> String {
    let result = Spendgate::builder()
        .redis(redis_url())
        .redis_options(options)
        .build()
        .await;
    match result {
        Err(BuildError::Store(StoreError::InvalidInput(message))) => message,
        other => panic!("not refused as invalid input: {other:?}"),
    }
}

#[tokio::test]
async fn a_replica_wait_without_a_timeout_is_refused() {
    let message = build_error(RedisOptions {
        wait_replicas: 1,
        wait_timeout: Duration::ZERO,
        ..RedisOptions::default()
    })
    .await;

    assert!(message.contains("timeout"), "{message}");
}

#[tokio::test]
async fn a_ca_file_with_a_plain_redis_url_is_refused() {
    let message = build_error(RedisOptions {
        tls_ca_file: Some("/etc/spendgate/redis-ca.pem".into()),
        ..RedisOptions::default()
    })
    .await;

    assert!(message.contains("rediss://"), "{message}");
}
