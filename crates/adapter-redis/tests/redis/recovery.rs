//! Scripts flushed and servers killed: the store recovers by itself, and
//! never accepts a reservation it could not record.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_contract::fixture::{key, m, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, ConfigVersion, FinalizeOutcome, Limits, ModelAlias, Reservation, ReserveOutcome,
    Settlement, Timestamp, Ttl,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::own_redis::OwnRedis;
use crate::support::{cluster_redis, standalone_redis};

/// 2026-11-15T00:00:00Z
const NOV_15: i64 = 1_794_700_800_000;

fn reservation(k: &str) -> Reservation {
    Reservation {
        user: user("alice"),
        key: key(k),
        estimate: m(10),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(60_000).unwrap(),
    }
}

fn now() -> Timestamp {
    Timestamp::from_millis(NOV_15).unwrap()
}

/// Runs lifecycles on four tasks while `SCRIPT FLUSH` empties the script
/// cache five times: every call still succeeds (NOSCRIPT → load → retry).
async fn lifecycles_survive_script_flush<C>(store: RedisBudgetStore<C>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let c = unique_community("script-flush");
    store
        .set_limits(&c, Limits::new(m(1_000_000_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let k = format!("t{t}-{i}");
                let r = store.reserve(&c, &reservation(&k), now()).await.unwrap();
                assert!(matches!(r, ReserveOutcome::Reserved { .. }), "{r:?}");
                let s = Settlement {
                    user: user("alice"),
                    key: key(&k),
                    actual: m(3),
                };
                let f = store.finalize(&c, &s, now()).await.unwrap();
                assert!(matches!(f, FinalizeOutcome::Finalized(_)), "{f:?}");
            }
        }));
    }
    let mut conn = store.connection();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(&mut conn)
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    // And right after a flush, the next call recovers too.
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec_async(&mut conn)
        .await
        .unwrap();
    let status = store
        .status(&c, spendgate_domain::Period::containing(now()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(2_400), m(0), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_recovers_on_standalone() {
    lifecycles_survive_script_flush(standalone_redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_recovers_on_the_cluster() {
    lifecycles_survive_script_flush(cluster_redis().await).await;
}

/// A server killed under the store: reserve answers `Unavailable` (deny),
/// never an accept. Restarted on the same port, the same store serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_denies_and_the_same_store_serves_after_restart() {
    let mut server = OwnRedis::start();
    let port = server.port;
    let store = RedisBudgetStore::connect(&server.url(), BudgetPolicy::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(Duration::from_millis(300));
    let c = unique_community("killed");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let r = store
        .reserve(&c, &reservation("before"), now())
        .await
        .unwrap();
    assert!(matches!(r, ReserveOutcome::Reserved { .. }), "{r:?}");

    server.kill();
    for i in 0..5 {
        let result = store
            .reserve(&c, &reservation(&format!("down{i}")), now())
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "reserve against a dead server must be Unavailable, got {result:?}"
        );
    }

    let _server = OwnRedis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The restarted server is empty (no persistence): configure again.
        let outcome = match store
            .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
            .await
        {
            Ok(()) => store.reserve(&c, &reservation("after"), now()).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(r) => {
                assert!(matches!(r, ReserveOutcome::Reserved { .. }), "{r:?}");
                break;
            }
            Err(StoreError::Unavailable(e)) => {
                assert!(Instant::now() < deadline, "store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected error while reconnecting: {e:?}"),
        }
    }
}
