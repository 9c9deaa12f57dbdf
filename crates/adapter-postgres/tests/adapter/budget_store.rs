//! `SqlBudgetStore` against the shared contract suite, on PostgreSQL and
//! SQLite, plus what only a durable store can show.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_adapter_postgres::{SqlBudgetStore, connect};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef,
    IdempotencyKey, Limits, Micros, ModelAlias, Period, Reaped, Reservation, ReserveOutcome,
    Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

use crate::support::{Backend, TestDb, ts};

/// A store that owns its fresh database and drops it with the last `Arc`.
struct Owned {
    store: SqlBudgetStore,
    _db: TestDb,
}

#[async_trait]
impl BudgetStore for Owned {
    async fn reserve(
        &self,
        c: &CommunityId,
        r: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.store.reserve(c, r, now).await
    }
    async fn extend(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.store.extend(c, h, ttl, now).await
    }
    async fn finalize(
        &self,
        c: &CommunityId,
        s: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.store.finalize(c, s, now).await
    }
    async fn commit_unheld(
        &self,
        c: &CommunityId,
        u: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.store.commit_unheld(c, u, now).await
    }
    async fn cancel(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.store.cancel(c, h, now).await
    }
    async fn reap(&self, c: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        self.store.reap(c, now).await
    }
    async fn status_with_user<'a>(
        &self,
        c: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.store.status_with_user(c, period, user).await
    }
    async fn users<'a>(
        &self,
        c: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.store.users(c, period, cursor, size).await
    }
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.store.due_communities(now, limit).await
    }
    async fn lookup(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<spendgate_domain::HoldState, StoreError> {
        self.store.lookup(c, h, now).await
    }
    async fn restore_committed(
        &self,
        c: &CommunityId,
        p: Period,
        committed: &std::collections::BTreeMap<spendgate_domain::UserId, spendgate_domain::Micros>,
    ) -> Result<(), StoreError> {
        self.store.restore_committed(c, p, committed).await
    }
    async fn set_limits(
        &self,
        c: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.store.set_limits(c, limits, version).await
    }
}

async fn owned(backend: Backend) -> Arc<dyn BudgetStore> {
    let db = TestDb::fresh(backend).await;
    Arc::new(Owned {
        store: SqlBudgetStore::new(db.db.clone(), BudgetPolicy::default()),
        _db: db,
    })
}

/// Holds a community's row lock in a transaction of its own, as any other
/// writer of the community does for a moment.
struct RowLock {
    db: sea_orm::DatabaseConnection,
}

impl spendgate_contract::race::CommunityLock for RowLock {
    // Resolves, once the row is locked, to the future that releases it.
    #[allow(clippy::async_yields_async)]
    fn hold<'a>(
        &'a self,
        community: &'a CommunityId,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = spendgate_contract::race::Release> + Send + 'a>,
    > {
        Box::pin(async move {
            use sea_orm::{ConnectionTrait, TransactionTrait};
            let txn = self.db.begin().await.unwrap();
            let locked = txn
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT community_id FROM budget_community WHERE community_id = $1 FOR UPDATE",
                    [community.as_str().into()],
                ))
                .await
                .unwrap();
            assert!(locked.is_some(), "blocker found no community row");
            let release: spendgate_contract::race::Release = Box::pin(async move {
                txn.commit().await.unwrap();
            });
            release
        })
    }
}

async fn postgres_race_target() -> spendgate_contract::race::RaceTarget {
    let db = TestDb::fresh(Backend::Postgres).await;
    let lock = RowLock { db: db.db.clone() };
    let store = Arc::new(Owned {
        store: SqlBudgetStore::new(db.db.clone(), BudgetPolicy::default()),
        _db: db,
    });
    spendgate_contract::race::RaceTarget {
        store,
        lock: Some(Arc::new(lock)),
    }
}

mod postgres_contract {
    async fn store() -> std::sync::Arc<dyn spendgate_ports::BudgetStore> {
        super::owned(crate::support::Backend::Postgres).await
    }
    spendgate_contract::budget_store_contract!(store, races = super::postgres_race_target);
}

mod sqlite_contract {
    async fn store() -> std::sync::Arc<dyn spendgate_ports::BudgetStore> {
        super::owned(crate::support::Backend::Sqlite).await
    }
    spendgate_contract::budget_store_contract!(store);
}

pub(crate) fn reservation(user: &str, key: &str, estimate: i64, ttl_ms: i64) -> Reservation {
    Reservation {
        user: UserId::parse(user).unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        estimate: Micros::new(estimate).unwrap(),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

pub(crate) const NOV: i64 = 1_763_942_400_000; // 2025-11-24

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_sqlite_file_keeps_counters_and_holds() {
    let t = TestDb::fresh(Backend::Sqlite).await;
    let c = CommunityId::parse("durable").unwrap();
    let period = Period::containing(ts(NOV)).unwrap();
    let before = {
        let store = SqlBudgetStore::new(t.reconnect().await, BudgetPolicy::default());
        store
            .set_limits(
                &c,
                Limits::new(Micros::new(1_000).unwrap()),
                ConfigVersion::ZERO,
            )
            .await
            .unwrap();
        store
            .reserve(&c, &reservation("u1", "k1", 100, 60_000), ts(NOV))
            .await
            .unwrap();
        store
            .reserve(&c, &reservation("u2", "k2", 50, 60_000), ts(NOV))
            .await
            .unwrap();
        let settle = Settlement {
            user: UserId::parse("u2").unwrap(),
            key: IdempotencyKey::parse("k2").unwrap(),
            actual: Micros::new(40).unwrap(),
        };
        store.finalize(&c, &settle, ts(NOV + 1)).await.unwrap();
        store.status(&c, period).await.unwrap()
        // the store and its pool are dropped here
    };
    t.db.clone().close().await.unwrap();

    let reopened = SqlBudgetStore::new(connect(&t.url).await.unwrap(), BudgetPolicy::default());
    assert_eq!(reopened.status(&c, period).await.unwrap(), before);
    assert_eq!(
        (before.committed.get(), before.reserved.get(), before.holds),
        (40, 100, 1)
    );
    // The hold is still there, and still idempotent.
    assert!(matches!(
        reopened
            .reserve(&c, &reservation("u1", "k1", 100, 60_000), ts(NOV + 2))
            .await
            .unwrap(),
        ReserveOutcome::AlreadyReserved { .. }
    ));
    // So is the marker of the finalized call.
    let replay = Settlement {
        user: UserId::parse("u2").unwrap(),
        key: IdempotencyKey::parse("k2").unwrap(),
        actual: Micros::new(999).unwrap(),
    };
    assert_eq!(
        reopened.finalize(&c, &replay, ts(NOV + 3)).await.unwrap(),
        FinalizeOutcome::AlreadyFinalized {
            actual: Micros::new(40).unwrap()
        }
    );
    // And the reaper still finds the hold after the restart.
    let reaped = reopened.reap(&c, ts(NOV + 60_000)).await.unwrap();
    assert_eq!((reaped.count, reaped.reclaimed.get()), (1, 100));
}

async fn expired_markers_are_cleaned_in_bounded_batches(t: &TestDb) {
    let store = SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default());
    let c = CommunityId::parse("markers").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(1_000_000).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    let n = 1_500;
    for i in 0..n {
        let r = reservation("u", &format!("k{i}"), 1, 1_000);
        store.reserve(&c, &r, ts(NOV)).await.unwrap();
        let hold = HoldRef {
            user: r.user.clone(),
            key: r.key.clone(),
        };
        store.cancel(&c, &hold, ts(NOV)).await.unwrap();
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM budget_marker").await, n);
    let day = Ttl::DAY.as_millis();
    // Past retention: every marker counts as absent at once…
    let gone = HoldRef {
        user: UserId::parse("u").unwrap(),
        key: IdempotencyKey::parse("k7").unwrap(),
    };
    assert!(matches!(
        store.cancel(&c, &gone, ts(NOV + day)).await,
        Err(StoreError::UnknownHold { .. })
    ));
    // …and reaping deletes them a bounded batch at a time.
    store.reap(&c, ts(NOV + day)).await.unwrap();
    let batch = i64::from(spendgate_adapter_postgres::MARKER_CLEANUP_BATCH);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM budget_marker").await,
        n - batch
    );
    store.reap(&c, ts(NOV + day)).await.unwrap();
    assert_eq!(t.count("SELECT COUNT(*) FROM budget_marker").await, 0);
}

async fn corrupt_rows_are_reported_not_trusted(t: &TestDb) {
    let store = SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default());
    let c = CommunityId::parse("corrupt").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(100).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    store
        .reserve(&c, &reservation("u", "k", 10, 60_000), ts(NOV))
        .await
        .unwrap();
    t.exec("UPDATE budget_hold SET period = 'garbage'", vec![])
        .await
        .unwrap();
    let hold = HoldRef {
        user: UserId::parse("u").unwrap(),
        key: IdempotencyKey::parse("k").unwrap(),
    };
    assert!(matches!(
        store.cancel(&c, &hold, ts(NOV)).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        t.exec("UPDATE budget_period SET reserved_micros = -1", vec![])
            .await
            .is_err(),
        "CHECK"
    );
}

async fn a_closed_pool_is_unavailable_and_reserve_denies(t: &TestDb) {
    let store = SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default());
    let c = CommunityId::parse("down").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(100).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    t.db.clone().close().await.unwrap();
    let result = store
        .reserve(&c, &reservation("u", "k", 1, 1_000), ts(NOV))
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

/// Every pooled SQLite connection commits with `synchronous = FULL` (2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connections_commit_with_synchronous_full() {
    let t = TestDb::fresh(Backend::Sqlite).await;
    for _ in 0..4 {
        assert_eq!(t.count("PRAGMA synchronous").await, 2);
    }
}

/// More expired holds than one reap batch: one `reap` releases them all,
/// a batch of [`spendgate_adapter_postgres::REAP_BATCH`] at a time.
async fn reap_releases_more_than_one_batch(t: &TestDb) {
    let store = SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default());
    let c = CommunityId::parse("many").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(1_000_000).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    let batch = spendgate_adapter_postgres::REAP_BATCH;
    let n = i64::from(batch) * 2 + 5;
    for i in 0..n {
        store
            .reserve(
                &c,
                &reservation("u", &format!("k{i}"), 2, 1_000 + i),
                ts(NOV),
            )
            .await
            .unwrap();
    }
    let reaped = store.reap(&c, ts(NOV + 1_000 + n)).await.unwrap();
    assert_eq!(
        (reaped.count, reaped.reclaimed.get()),
        (u64::try_from(n).unwrap(), 2 * n)
    );
    let status = store
        .status(&c, Period::containing(ts(NOV)).unwrap())
        .await
        .unwrap();
    assert_eq!((status.reserved.get(), status.holds), (0, 0));
    assert_eq!(t.count("SELECT COUNT(*) FROM budget_hold").await, 0);
    assert_eq!(t.count("SELECT COUNT(*) FROM budget_marker").await, n);
}

/// A reserve of estimate 0 (and its cancel, and its reap) keeps no user
/// row: users whose sums are both zero have none, so a free call cannot
/// grow a period's user list. A cost adds the row.
async fn a_reserve_of_estimate_zero_keeps_no_user_row(t: &TestDb) {
    let store = SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default());
    let c = CommunityId::parse("free-calls").unwrap();
    store
        .set_limits(
            &c,
            Limits::new(Micros::new(1_000_000).unwrap()),
            ConfigVersion::ZERO,
        )
        .await
        .unwrap();
    for k in ["k1", "k2", "k3"] {
        store
            .reserve(&c, &reservation("free", k, 0, 1_000), ts(NOV))
            .await
            .unwrap();
    }
    let k1 = HoldRef {
        user: UserId::parse("free").unwrap(),
        key: IdempotencyKey::parse("k1").unwrap(),
    };
    store.cancel(&c, &k1, ts(NOV + 1)).await.unwrap();
    store.reap(&c, ts(NOV + 5_000)).await.unwrap();
    let rows = "SELECT COUNT(*) FROM budget_user_period";
    assert_eq!(t.count(rows).await, 0);

    store
        .reserve(&c, &reservation("free", "k4", 0, 1_000), ts(NOV + 6_000))
        .await
        .unwrap();
    let k4 = Settlement {
        user: UserId::parse("free").unwrap(),
        key: IdempotencyKey::parse("k4").unwrap(),
        actual: Micros::new(40).unwrap(),
    };
    store.finalize(&c, &k4, ts(NOV + 6_001)).await.unwrap();
    assert_eq!(t.count(rows).await, 1, "a cost adds the user");
}

crate::on_both_backends!(
    expired_markers_are_cleaned_in_bounded_batches,
    corrupt_rows_are_reported_not_trusted,
    a_closed_pool_is_unavailable_and_reserve_denies,
    reap_releases_more_than_one_batch,
    a_reserve_of_estimate_zero_keeps_no_user_row,
);

/// `restore_committed` racing `finalize` of a live hold of the same
/// community on PostgreSQL, all queued behind the community's row lock
/// and released together: every restore succeeds, exactly one finalize
/// takes effect, and the period ends as one of the two serial orders
/// leaves it in the model (finalize last: its cost on top of the restored
/// sums; a restore last: the restored sums alone, the hold released
/// either way), never a mix of the two. Rounds alternate which kind
/// queues first, so both orders are exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_committed_racing_finalize_leaves_one_serial_outcome() {
    use std::collections::BTreeMap;

    use spendgate_contract::fixture::{at, key, m, mid_november, november, unique_community, user};
    use spendgate_contract::race::CommunityLock;
    use spendgate_domain::CommunityBudget;

    let t = TestDb::fresh(Backend::Postgres).await;
    let lock = RowLock { db: t.db.clone() };
    let store = Arc::new(SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default()));
    let policy = BudgetPolicy::default();
    let t0 = mid_november(0);
    let restored: BTreeMap<UserId, Micros> = [(user("alice"), m(50)), (user("carol"), m(70))]
        .into_iter()
        .collect();
    // Three restores and three finalizes a round: the last of them waits
    // for the other five under the lock timeout (2 s), even on a loaded
    // test machine.
    const RACERS: usize = 6;
    let rounds = spendgate_contract::race::rounds().min(50);
    let (mut finalize_last, mut restore_last) = (0, 0);
    for n in 0..rounds {
        let c = unique_community("race-restore");
        let reservation = Reservation {
            user: user("alice"),
            key: key("k"),
            estimate: m(300),
            model: ModelAlias::parse("cheap").unwrap(),
            ttl: Ttl::from_millis(60_000).unwrap(),
        };
        let bob = Reservation {
            user: user("bob"),
            key: key("b"),
            ..reservation.clone()
        };
        let settle = |u: &str, k: &str, actual| Settlement {
            user: user(u),
            key: key(k),
            actual: m(actual),
        };
        let mut model = CommunityBudget::default();
        model.set_limits(Limits::new(m(10_000)), ConfigVersion::ZERO);
        store
            .set_limits(&c, Limits::new(m(10_000)), ConfigVersion::ZERO)
            .await
            .unwrap();
        for r in [&reservation, &bob] {
            model.reserve(r, t0, policy).unwrap();
            store.reserve(&c, r, t0).await.unwrap();
        }
        model
            .finalize(&settle("bob", "b", 200), t0, policy)
            .unwrap();
        store
            .finalize(&c, &settle("bob", "b", 200), t0)
            .await
            .unwrap();

        let release = lock.hold(&c).await;
        let start = Arc::new(tokio::sync::Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, c, start, restored) = (
                    Arc::clone(&store),
                    c.clone(),
                    Arc::clone(&start),
                    restored.clone(),
                );
                let settlement = settle("alice", "k", 250);
                // Every racer queues behind the lock; the later kind of
                // the round starts a little after the other, so that both
                // serial orders come up (the lock is held far longer).
                let restores_first = n % 2 == 0;
                tokio::spawn(async move {
                    start.wait().await;
                    let restore = i % 2 == 0;
                    if restore != restores_first {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    if restore {
                        Err(store.restore_committed(&c, november(), &restored).await)
                    } else {
                        Ok(store.finalize(&c, &settlement, at(t0, 1)).await)
                    }
                })
            })
            .collect();
        tokio::time::sleep(spendgate_contract::race::LOCK_HOLD).await;
        release.await;
        let mut finalized = 0;
        for task in tasks {
            match task.await.unwrap() {
                Err(restore) => assert_eq!(restore, Ok(()), "round {n}"),
                Ok(Ok(FinalizeOutcome::Finalized(_))) => finalized += 1,
                Ok(Ok(FinalizeOutcome::AlreadyFinalized { actual })) => {
                    assert_eq!(actual, m(250), "round {n}");
                }
                Ok(other) => panic!("round {n}: finalize saw {other:?}"),
            }
        }
        assert_eq!(finalized, 1, "round {n}: exactly one finalize takes effect");

        let mut then_finalize = model.clone();
        then_finalize
            .restore_committed(november(), &restored)
            .unwrap();
        then_finalize
            .finalize(&settle("alice", "k", 250), at(t0, 1), policy)
            .unwrap();
        let mut then_restore = model;
        then_restore
            .finalize(&settle("alice", "k", 250), at(t0, 1), policy)
            .unwrap();
        then_restore
            .restore_committed(november(), &restored)
            .unwrap();
        let alice = UserId::parse("alice").unwrap();
        let status = store
            .status_with_user(&c, november(), Some(&alice))
            .await
            .unwrap();
        if status == BudgetStatus::from_model(&then_finalize, november(), Some(&alice)) {
            finalize_last += 1;
        } else if status == BudgetStatus::from_model(&then_restore, november(), Some(&alice)) {
            restore_last += 1;
        } else {
            panic!("round {n}: no serial order explains {status:#?}");
        }
    }
    eprintln!("{finalize_last} rounds ended with the finalize last, {restore_last} with a restore");
    assert!(
        rounds < 10 || (finalize_last > 0 && restore_last > 0),
        "both serial orders should come up: {finalize_last} / {restore_last}"
    );
}
