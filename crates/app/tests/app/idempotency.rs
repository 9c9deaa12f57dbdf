//! Where `ports().idempotency` keeps its records, per deployment shape:
//! memory-only instances share nothing; with a database (SQLite) a second
//! instance on the same database sees the first one's records; with the
//! budget store on Redis (standalone or Cluster, with or without
//! PostgreSQL) they live on Redis, so instances on the same Redis share
//! them and the database holds none.

use spendgate::Spendgate;
use spendgate::domain::{CommunityId, Timestamp};
use spendgate::ports::{Claim, RequestId};

use crate::support::community;
use crate::support::servers::{PgDb, redis_cluster_urls, redis_url};

/// The test request of `tenant` (records on Redis outlive a run, so each
/// Redis test claims for a tenant of its own).
fn request_of(tenant: CommunityId) -> RequestId {
    RequestId {
        tenant,
        operation: "create".into(),
        resource: String::new(),
        key: "k1".into(),
    }
}

fn request() -> RequestId {
    request_of(CommunityId::parse("acme").unwrap())
}

/// Claims `id` on `sg` at a fixed instant, kept a day.
async fn claim_of(sg: &Spendgate, id: &RequestId) -> Claim {
    let now = Timestamp::from_millis(1_763_200_000_000).unwrap();
    let kept = now.plus_millis(86_400_000).unwrap();
    sg.ports()
        .idempotency
        .claim(id, b"body", now, kept)
        .await
        .unwrap()
}

/// Claims the test request of `acme` on `sg`.
async fn claim(sg: &Spendgate) -> Claim {
    claim_of(sg, &request()).await
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
async fn redis_with_postgres_keeps_records_on_redis() {
    let id = request_of(community("idem-redis-pg"));
    let (_db, url) = PgDb::create().await;
    let first = Spendgate::builder()
        .redis(redis_url())
        .database(&url)
        .build()
        .await
        .unwrap();
    assert_eq!(claim_of(&first, &id).await, Claim::Started);
    // Another instance on the same Redis (and another database) sees it.
    let (_other_db, other_url) = PgDb::create().await;
    let second = Spendgate::builder()
        .redis(redis_url())
        .database(&other_url)
        .build()
        .await
        .unwrap();
    assert_eq!(claim_of(&second, &id).await, Claim::Pending);
    // PostgreSQL holds no record of it.
    let sql_only = Spendgate::builder().database(&url).build().await.unwrap();
    assert_eq!(claim_of(&sql_only, &id).await, Claim::Started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_instances_share_records() {
    let id = request_of(community("idem-redis"));
    let first = Spendgate::builder()
        .redis(redis_url())
        .build()
        .await
        .unwrap();
    let second = Spendgate::builder()
        .redis(redis_url())
        .build()
        .await
        .unwrap();
    assert_eq!(claim_of(&first, &id).await, Claim::Started);
    assert_eq!(claim_of(&second, &id).await, Claim::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_instances_share_records() {
    let id = request_of(community("idem-cluster"));
    let urls = redis_cluster_urls();
    let first = Spendgate::builder()
        .redis_cluster(urls.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the Redis Cluster at {urls:?}: {e}"));
    let second = Spendgate::builder()
        .redis_cluster(urls)
        .build()
        .await
        .unwrap();
    assert_eq!(claim_of(&first, &id).await, Claim::Started);
    assert_eq!(claim_of(&second, &id).await, Claim::Pending);
}
