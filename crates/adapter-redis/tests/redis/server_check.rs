//! What the store checks of a server when it connects: no eviction policy
//! that could drop a budget record, and the scripts loaded on every master.

use redis::aio::ConnectionManager;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::script::Op;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::StoreError;

use crate::own_redis::OwnRedis;
use crate::support::cluster_urls;

async fn set_policy(url: &str, policy: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = ConnectionManager::new(client).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn scripts_loaded(url: &str) -> Vec<bool> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = ConnectionManager::new(client).await.unwrap();
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("EXISTS");
    for op in Op::ALL {
        cmd.arg(op.sha());
    }
    cmd.query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn a_server_that_may_evict_untimed_keys_is_refused_naming_the_setting() {
    let own = OwnRedis::start();
    set_policy(&own.url(), "allkeys-lru").await;

    let result = RedisBudgetStore::connect(&own.url(), BudgetPolicy::default()).await;

    let Err(StoreError::InvalidInput(message)) = result else {
        panic!("connected to an allkeys-lru server: {result:?}");
    };
    assert!(message.contains("maxmemory-policy"), "{message}");
    assert!(message.contains("allkeys-lru"), "{message}");
}

#[tokio::test]
async fn volatile_policies_are_accepted_and_the_scripts_are_loaded() {
    let own = OwnRedis::start();
    set_policy(&own.url(), "volatile-lru").await;

    RedisBudgetStore::connect(&own.url(), BudgetPolicy::default())
        .await
        .unwrap();

    assert!(
        scripts_loaded(&own.url())
            .await
            .iter()
            .all(|&loaded| loaded)
    );
}

#[tokio::test]
async fn connecting_to_the_cluster_loads_the_scripts_on_every_master() {
    let urls = cluster_urls();
    RedisBudgetStore::connect_cluster(&urls, BudgetPolicy::default())
        .await
        .unwrap_or_else(|e| panic!("cluster at {urls:?}: {e}"));

    for url in &urls {
        assert!(
            scripts_loaded(url).await.iter().all(|&loaded| loaded),
            "scripts missing on {url}"
        );
    }
}
