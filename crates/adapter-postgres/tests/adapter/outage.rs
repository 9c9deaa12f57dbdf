//! Calls during a database outage fail fast with `Unavailable` (for
//! `reserve`: deny) within the pool's acquire timeout, and the store
//! serves again once the database is back.

use std::time::{Duration, Instant};

use spendgate_adapter_postgres::{ConnectSettings, SqlBudgetStore, connect_with_settings};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, HoldRef, IdempotencyKey, Limits, Micros, ModelAlias,
    Period, Reservation, ReserveOutcome, Ttl, UserId,
};
use spendgate_fault_proxy::FaultProxy;
use spendgate_ports::{BudgetStore, RepoError, StoreError};
use tokio::net::TcpListener;

use crate::support::{Backend, TestDb, ts};

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` pointing at 127.0.0.1:`port` instead of its host.
fn through(url: &str, port: u16) -> String {
    let upstream = host_port(url);
    url.replacen(&upstream, &format!("127.0.0.1:{port}"), 1)
}

fn reservation(key: &str) -> Reservation {
    Reservation {
        user: UserId::parse("u").unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        estimate: Micros::new(1).unwrap(),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(60_000).unwrap(),
    }
}

const NOV: i64 = 1_763_942_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_an_outage_fail_fast_and_the_store_recovers() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let proxy = FaultProxy::start(host_port(&t.url)).await.unwrap();
    let acquire = Duration::from_millis(800);
    let settings = ConnectSettings {
        max_connections: 4,
        acquire_timeout: acquire,
        connect_timeout: Duration::from_secs(2),
        ..ConnectSettings::default()
    };
    let db = connect_with_settings(&through(&t.url, proxy.port()), settings)
        .await
        .unwrap();
    let store = SqlBudgetStore::new(db, BudgetPolicy::default());
    let c = CommunityId::parse("outage").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(1_000).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.reserve(&c, &reservation("before"), ts(NOV)).await,
        Ok(ReserveOutcome::Reserved { .. })
    ));

    proxy.set_cut(true);
    let period = Period::containing(ts(NOV)).unwrap();
    let hold = HoldRef {
        user: UserId::parse("u").unwrap(),
        key: IdempotencyKey::parse("before").unwrap(),
    };
    for i in 0..3 {
        let started = Instant::now();
        let reserve = store
            .reserve(&c, &reservation(&format!("during-{i}")), ts(NOV))
            .await;
        let elapsed = started.elapsed();
        assert!(
            matches!(reserve, Err(StoreError::Unavailable(_))),
            "{reserve:?}"
        );
        assert!(
            elapsed < acquire + Duration::from_secs(1),
            "reserve took {elapsed:?} to fail"
        );
    }
    let started = Instant::now();
    assert!(matches!(
        store.status(&c, period).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.lookup(&c, &hold, ts(NOV)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.due_communities(ts(NOV), 10).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < 3 * (acquire + Duration::from_secs(1)),
        "reads took {:?} to fail",
        started.elapsed()
    );

    proxy.set_cut(false);
    let back = Instant::now();
    let outcome = loop {
        match store.reserve(&c, &reservation("after"), ts(NOV)).await {
            Ok(outcome) => break outcome,
            Err(e) if back.elapsed() < Duration::from_secs(10) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still unavailable after the outage: {e:?}"),
        }
    };
    assert!(matches!(outcome, ReserveOutcome::Reserved { .. }));
    // The refused reserves held nothing.
    let status = store.status(&c, period).await.unwrap();
    assert_eq!((status.holds, status.reserved.get()), (2, 2));
}

/// A server that accepts but never answers: connecting gives up after the
/// connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_silent_server_gives_up_after_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = connect_with_settings(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        ConnectSettings {
            connect_timeout,
            ..ConnectSettings::default()
        },
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        elapsed < connect_timeout + Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
    silent.abort();
}

#[test]
fn default_settings_fail_within_seconds() {
    let s = ConnectSettings::default();
    assert_eq!(
        (s.max_connections, s.acquire_timeout, s.connect_timeout),
        (16, Duration::from_secs(5), Duration::from_secs(5))
    );
}
