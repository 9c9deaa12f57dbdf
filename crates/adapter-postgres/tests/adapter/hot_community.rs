//! A community whose row is locked (a hot community, or a stuck writer):
//! its writes give up within the bounds, and the other communities keep
//! being served meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use spendgate_adapter_postgres::{
    ConnectSettings, SqlBudgetStore, StoreTimeouts, connect_with_settings,
};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, Limits, Micros, Period, ReserveOutcome,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::budget_store::{NOV, reservation};
use crate::support::{Backend, TestDb, test_settings, ts};

/// Locks `community`'s row in a transaction of the test's own pool.
async fn block(t: &TestDb, community: &str) -> DatabaseTransaction {
    let blocker = t.db.begin().await.unwrap();
    blocker
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT community_id FROM budget_community WHERE community_id = $1 FOR UPDATE",
            [community.into()],
        ))
        .await
        .unwrap();
    blocker
}

/// A blocker holds one community's row: that community's reserves give up
/// with `Unavailable` within the lock timeout (reserve denies), while
/// another community's reserves keep succeeding meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_community_times_out_while_others_keep_reserving() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let lock = Duration::from_millis(300);
    let store = Arc::new(
        SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default()).with_timeouts(StoreTimeouts {
            lock,
            statement: Duration::from_secs(5),
        }),
    );
    let hot = CommunityId::parse("hot").unwrap();
    let other = CommunityId::parse("other").unwrap();
    for c in [&hot, &other] {
        store
            .set_limits(
                c,
                Limits::new(Micros::new(1_000_000).unwrap()),
                ConfigVersion::ZERO,
            )
            .await
            .unwrap();
    }
    let blocker = block(&t, "hot").await;

    let started = Instant::now();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (store, hot) = (Arc::clone(&store), hot.clone());
            tokio::spawn(async move {
                let r = reservation("u", &format!("hot-{i}"), 1, 60_000);
                let result = store.reserve(&hot, &r, ts(NOV)).await;
                (result, started.elapsed())
            })
        })
        .collect();
    // Meanwhile the other community is served.
    let mut served = 0;
    while started.elapsed() < lock {
        let r = reservation("u", &format!("other-{served}"), 1, 60_000);
        let outcome = store.reserve(&other, &r, ts(NOV)).await.unwrap();
        assert!(
            matches!(outcome, ReserveOutcome::Reserved { .. }),
            "{outcome:?}"
        );
        served += 1;
    }
    assert!(served > 0);
    for waiter in waiters {
        let (result, elapsed) = waiter.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            elapsed >= lock,
            "gave up after {elapsed:?}, before the timeout"
        );
        assert!(
            elapsed < lock + Duration::from_secs(2),
            "waited {elapsed:?}"
        );
    }
    blocker.rollback().await.unwrap();
    // Released: the community is served again, and the refused reserves
    // held nothing.
    let outcome = store
        .reserve(&hot, &reservation("u", "hot-0", 1, 60_000), ts(NOV))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved { .. }),
        "{outcome:?}"
    );
    let status = store
        .status(&hot, Period::containing(ts(NOV)).unwrap())
        .await
        .unwrap();
    assert_eq!(status.holds, 1);
}

/// The pool's `statement_timeout` bounds a one-statement call that waits
/// for a lock the store's own timeout would still wait for: the reserve
/// behind the blocker is cancelled by the server after 300 ms and returns
/// `Unavailable`, and it held nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_statement_timeout_bounds_a_one_statement_call() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let pool = connect_with_settings(
        &t.url,
        ConnectSettings {
            statement_timeout: Some(Duration::from_millis(300)),
            ..test_settings()
        },
    )
    .await
    .unwrap();
    let store = SqlBudgetStore::new(pool, BudgetPolicy::default()).with_timeouts(StoreTimeouts {
        lock: Duration::from_secs(60),
        statement: Duration::from_secs(60),
    });
    let hot = CommunityId::parse("hot").unwrap();
    store
        .set_limits(
            &hot,
            Limits::new(Micros::new(1_000_000).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    let blocker = block(&t, "hot").await;
    let result = store
        .reserve(&hot, &reservation("u", "k", 1, 60_000), ts(NOV))
        .await;
    match &result {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("statement timeout"), "{why}"),
        other => panic!("{other:?}"),
    }
    blocker.rollback().await.unwrap();
    let status = store
        .status(&hot, Period::containing(ts(NOV)).unwrap())
        .await
        .unwrap();
    assert_eq!(status.holds, 0);
}

/// A pool of 4 connections (2 for one community's writes), a blocker on
/// one community's row and 8 reserves of that community behind it: 2 wait
/// for the lock on a connection, the others for a place of their
/// community and give up with `Unavailable` after the pool's acquire
/// timeout. Meanwhile the other community's reserves are served: the
/// waiters never took the whole pool. Once the blocker is gone, the two
/// that waited for the lock are served too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_a_locked_community_leave_the_pool_to_the_others() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let pool = connect_with_settings(
        &t.url,
        ConnectSettings {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(2),
            ..test_settings()
        },
    )
    .await
    .unwrap();
    let store = Arc::new(
        SqlBudgetStore::new(pool, BudgetPolicy::default()).with_timeouts(StoreTimeouts {
            lock: Duration::from_secs(30),
            statement: Duration::from_secs(60),
        }),
    );
    assert_eq!(store.connections_per_community(), 2);
    let hot = CommunityId::parse("hot").unwrap();
    let other = CommunityId::parse("other").unwrap();
    for c in [&hot, &other] {
        store
            .set_limits(
                c,
                Limits::new(Micros::new(1_000_000).unwrap()),
                ConfigVersion::ZERO,
            )
            .await
            .unwrap();
    }
    let blocker = block(&t, "hot").await;
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let (store, hot) = (Arc::clone(&store), hot.clone());
            tokio::spawn(async move {
                let r = reservation("u", &format!("hot-{i}"), 1, 60_000);
                store.reserve(&hot, &r, ts(NOV)).await
            })
        })
        .collect();
    // Let the waiters queue (the lock waits far longer than this).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..8 {
        let r = reservation("u", &format!("other-{i}"), 1, 60_000);
        let outcome = store.reserve(&other, &r, ts(NOV)).await;
        assert!(
            matches!(outcome, Ok(ReserveOutcome::Reserved { .. })),
            "{outcome:?}"
        );
    }
    // Past the acquire timeout: the waiters without a place gave up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocker.rollback().await.unwrap();
    let (mut reserved, mut refused) = (0, 0);
    for waiter in waiters {
        match waiter.await.unwrap() {
            Ok(ReserveOutcome::Reserved { .. }) => reserved += 1,
            Err(StoreError::Unavailable(_)) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reserved + refused, 8);
    assert!(reserved <= 2 && refused >= 6, "{reserved} reserved");
    let status = store
        .status(&hot, Period::containing(ts(NOV)).unwrap())
        .await
        .unwrap();
    assert_eq!(status.holds, reserved);
}
