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

/// More expired records than a purge pass used to delete (100,000).
const BACKLOG: i64 = 120_000;

/// Writes `BACKLOG` records expired at 1,000 ms and one live record
/// (`live-1`, fingerprint `body`), straight into `idempotency_record`
/// (through the port this would take minutes).
async fn seed_backlog(url: &str) {
    use sea_orm::{ConnectionTrait, Database, DbBackend};
    let db = Database::connect(url).await.unwrap();
    let fingerprint = match db.get_database_backend() {
        DbBackend::Postgres => "decode('626f6479', 'hex')",
        _ => "X'626f6479'",
    };
    let insert = |rows: i64, keep_until: i64, prefix: &str| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO idempotency_record (tenant, operation, resource, request_key, \
             fingerprint, response_status, response_body, keep_until) \
             SELECT 'acme', 'create', '', '{prefix}' || CAST(i AS TEXT), {fingerprint}, NULL, NULL, \
             {keep_until} FROM n"
        )
    };
    db.execute_unprepared(&insert(BACKLOG, 1_000, "old-"))
        .await
        .unwrap();
    db.execute_unprepared(&insert(1, 9_000_000_000_000, "live-"))
        .await
        .unwrap();
}

/// One pass of the purge job on `sg`'s records, then a claim of the live
/// record (still there: `Pending`).
async fn one_purge_pass_clears(sg: &Spendgate) {
    use spendgate::workers::{IdempotencyPurgeJob, IdempotencyPurgeSettings, Job};
    let job = IdempotencyPurgeJob::new(
        sg.ports().idempotency.clone(),
        IdempotencyPurgeSettings::default(),
    );
    let now = Timestamp::from_millis(1_763_200_000_000).unwrap();
    let outcome = job.tick(now).await;
    assert_eq!(
        (outcome.items, outcome.failures),
        (u64::try_from(BACKLOG).unwrap(), 0)
    );
    assert_eq!(job.tick(now).await.items, 0, "nothing is left to purge");
    let live = RequestId {
        key: "live-1".into(),
        ..request()
    };
    assert_eq!(claim_of(sg, &live).await, Claim::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purge_pass_clears_a_postgres_backlog_past_the_old_per_pass_cap() {
    let (_db, url) = PgDb::create().await;
    let sg = Spendgate::builder().database(&url).build().await.unwrap();
    seed_backlog(&url).await;
    one_purge_pass_clears(&sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purge_pass_clears_a_sqlite_backlog_past_the_old_per_pass_cap() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let sg = Spendgate::builder().database(&url).build().await.unwrap();
    seed_backlog(&url).await;
    one_purge_pass_clears(&sg).await;
}
