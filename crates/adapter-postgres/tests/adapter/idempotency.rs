//! `SqlIdempotency` against the shared idempotency scenarios and races, on
//! PostgreSQL and SQLite, plus what only SQL can show: rows the port could
//! not have written, and a closed pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use spendgate_adapter_postgres::SqlIdempotency;
use spendgate_contract::idempotency::{answer, create, kept, t0};
use spendgate_contract::idempotency_race::{RACERS, RaceTarget, WriteGate};
use spendgate_contract::race::Release;
use spendgate_domain::Timestamp;
use spendgate_ports::{Claim, IdempotencyStore, RepoError, RequestId, StoredResponse};

use crate::support::{Backend, TestDb};

/// A store that owns its fresh database and drops it with the last `Arc`.
struct Owned {
    store: SqlIdempotency,
    _db: TestDb,
}

#[async_trait]
impl IdempotencyStore for Owned {
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError> {
        self.store.claim(id, fingerprint, now, keep_until).await
    }
    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError> {
        self.store.complete(id, fingerprint, response).await
    }
    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, RepoError> {
        self.store.purge(now, limit).await
    }
}

async fn owned(backend: Backend) -> (Arc<dyn IdempotencyStore>, DatabaseConnection) {
    let db = TestDb::fresh(backend).await;
    let connection = db.db.clone();
    let store = Owned {
        store: SqlIdempotency::new(db.db.clone()),
        _db: db,
    };
    (Arc::new(store), connection)
}

/// Holds `LOCK TABLE idempotency_record IN SHARE MODE` in a transaction of
/// its own: every claim's insert waits for it. Opening it first waits
/// until all [`RACERS`] claims are queued on the lock (as `pg_locks`
/// shows), so every round of a race is a real overlap.
struct TableLock {
    db: DatabaseConnection,
}

/// How many lock requests on `idempotency_record` of this database wait.
async fn waiting_claims(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT COUNT(*) FROM pg_locks \
             WHERE relation = 'idempotency_record'::regclass AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

impl WriteGate for TableLock {
    // Resolves, once the lock is held, to the future that releases it.
    #[allow(clippy::async_yields_async)]
    fn hold(&self) -> Pin<Box<dyn Future<Output = Release> + Send + '_>> {
        Box::pin(async move {
            let txn = self.db.begin().await.unwrap();
            txn.execute_unprepared("LOCK TABLE idempotency_record IN SHARE MODE")
                .await
                .unwrap();
            let db = self.db.clone();
            let release: Release = Box::pin(async move {
                let since = Instant::now();
                let racers = i64::try_from(RACERS).unwrap();
                loop {
                    let waiting = waiting_claims(&db).await;
                    if waiting >= racers {
                        break;
                    }
                    assert!(
                        since.elapsed() < Duration::from_secs(20),
                        "only {waiting} of {racers} claims queued on the lock"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                txn.commit().await.unwrap();
            });
            release
        })
    }
}

mod postgres_contract {
    use super::*;

    async fn store() -> Arc<dyn IdempotencyStore> {
        super::owned(Backend::Postgres).await.0
    }

    async fn races() -> RaceTarget {
        let (store, db) = super::owned(Backend::Postgres).await;
        RaceTarget {
            store,
            gate: Some(Arc::new(TableLock { db })),
        }
    }

    spendgate_contract::idempotency_store_contract!(store, races = races);
}

mod sqlite_contract {
    use super::*;

    async fn store() -> Arc<dyn IdempotencyStore> {
        super::owned(Backend::Sqlite).await.0
    }

    spendgate_contract::idempotency_store_contract!(store);
}

/// A stored answer the port could not have written (a status that is no
/// HTTP status) is reported as bad data naming the tenant, not replayed.
async fn a_corrupt_stored_answer_is_bad_data(t: &TestDb) {
    let store = SqlIdempotency::new(t.db.clone());
    let id = create("k1");
    store.claim(&id, b"f", t0(), kept()).await.unwrap();
    store
        .complete(&id, b"f", &answer(200, b"ok"))
        .await
        .unwrap();
    t.exec("UPDATE idempotency_record SET response_status = -1", vec![])
        .await
        .unwrap();
    let result = store.claim(&id, b"f", t0(), kept()).await;
    assert!(
        matches!(&result, Err(RepoError::BadData { community, .. }) if community == "acme"),
        "{result:?}"
    );
    // Its other fingerprint is still judged without reading the answer.
    assert_eq!(
        store.claim(&id, b"g", t0(), kept()).await,
        Ok(Claim::Mismatch)
    );
}

/// The table refuses half an answer and a second row of one request.
async fn the_table_keeps_answers_whole_and_one_row_per_request(t: &TestDb) {
    let sqlite_insert = |status: &str, body: &str, key: &str| {
        format!(
            "INSERT INTO idempotency_record (tenant, operation, resource, request_key, fingerprint, response_status, response_body, keep_until) \
             VALUES ('acme', 'create', '', '{key}', X'01', {status}, {body}, 5)"
        )
    };
    let insert = |status: &str, body: &str, key: &str| match t.backend {
        Backend::Postgres => sqlite_insert(status, body, key)
            .replace("X'01'", "'\\x01'::bytea")
            .replace("X''", "''::bytea"),
        Backend::Sqlite => sqlite_insert(status, body, key),
    };
    t.db.execute_unprepared(&insert("NULL", "NULL", "a"))
        .await
        .unwrap();
    t.db.execute_unprepared(&insert("200", "X''", "b"))
        .await
        .unwrap();
    for sql in [
        insert("NULL", "NULL", "a"),
        insert("200", "NULL", "c"),
        insert("NULL", "X''", "d"),
    ] {
        assert!(t.db.execute_unprepared(&sql).await.is_err(), "{sql}");
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM idempotency_record").await, 2);
}

/// With the pool closed, every call is unavailable, never a guess.
async fn a_closed_pool_is_unavailable(t: &TestDb) {
    let store = SqlIdempotency::new(t.db.clone());
    t.db.clone().close().await.unwrap();
    let id = create("k1");
    assert!(matches!(
        store.claim(&id, b"f", t0(), kept()).await,
        Err(RepoError::Unavailable(_))
    ));
    assert!(matches!(
        store.complete(&id, b"f", &answer(200, b"")).await,
        Err(RepoError::Unavailable(_))
    ));
    assert!(matches!(
        store.purge(kept(), 10).await,
        Err(RepoError::Unavailable(_))
    ));
}

crate::on_both_backends!(
    a_corrupt_stored_answer_is_bad_data,
    the_table_keeps_answers_whole_and_one_row_per_request,
    a_closed_pool_is_unavailable,
);

/// How many sessions of this database wait for a lock.
async fn waiting_sessions(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// A purge that meets an expired record while a claim is replacing it (the
/// claim's transaction holds the row) waits for the claim, judges the
/// replaced row again, and leaves the new record: the batch it read before
/// the claim committed deletes nothing live. (PostgreSQL only: SQLite runs
/// one writer at a time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_waiting_on_a_claim_that_replaces_an_expired_record_keeps_the_new_one() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let store = Arc::new(SqlIdempotency::new(t.db.clone()));
    let id = create("k1");
    let expires = t0().plus_millis(10).unwrap();
    let purge_at = t0().plus_millis(20).unwrap();
    assert_eq!(
        store.claim(&id, b"old", t0(), expires).await,
        Ok(Claim::Started)
    );
    let replacing = t.db.begin().await.unwrap();
    replacing
        .execute_unprepared(&format!(
            "UPDATE idempotency_record SET fingerprint = '\\x6e6577'::bytea, \
             keep_until = {} WHERE request_key = 'k1'",
            kept().as_millis()
        ))
        .await
        .unwrap();
    let purge = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.purge(purge_at, 10).await })
    };
    let since = Instant::now();
    while waiting_sessions(&t.db).await < 1 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the purge never waited for the claim's row"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    replacing.commit().await.unwrap();
    assert_eq!(purge.await.unwrap(), Ok(0));
    assert_eq!(
        store.claim(&id, b"new", purge_at, kept()).await,
        Ok(Claim::Pending)
    );
}
