//! Where `ports().idempotency` keeps its records, per deployment shape:
//! memory-only instances share nothing, and with a database (SQLite, or
//! PostgreSQL behind Redis) a second instance on the same database sees
//! the first one's records.

use spendgate::Spendgate;
use spendgate::domain::{CommunityId, Timestamp};
use spendgate::ports::{Claim, RequestId};

use crate::support::servers::{PgDb, redis_url};

fn request() -> RequestId {
    RequestId {
        tenant: CommunityId::parse("acme").unwrap(),
        operation: "create".into(),
        resource: String::new(),
        key: "k1".into(),
    }
}

/// Claims the test request on `sg` at a fixed instant, kept a day.
async fn claim(sg: &Spendgate) -> Claim {
    let now = Timestamp::from_millis(1_763_200_000_000).unwrap();
    let kept = now.plus_millis(86_400_000).unwrap();
    sg.ports()
        .idempotency
        .claim(&request(), b"body", now, kept)
        .await
        .unwrap()
}

#[tokio::test]
async fn memory_only_instances_keep_records_apart() {
    let a = Spendgate::builder().build().await.unwrap();
    let b = Spendgate::builder().build().await.unwrap();
    assert_eq!(claim(&a).await, Claim::Started);
    assert_eq!(claim(&a).await, Claim::Pending);
    assert_eq!(claim(&b).await, Claim::Started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_sqlite_deployment_keeps_records_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let first = Spendgate::builder().database(&url).build().await.unwrap();
    assert_eq!(claim(&first).await, Claim::Started);
    let second = Spendgate::builder().database(&url).build().await.unwrap();
    assert_eq!(claim(&second).await, Claim::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_postgres_keeps_records_in_postgres() {
    let (_db, url) = PgDb::create().await;
    let first = Spendgate::builder()
        .redis(redis_url())
        .database(&url)
        .build()
        .await
        .unwrap();
    assert_eq!(claim(&first).await, Claim::Started);
    let second = Spendgate::builder().database(&url).build().await.unwrap();
    assert_eq!(claim(&second).await, Claim::Pending);
}
