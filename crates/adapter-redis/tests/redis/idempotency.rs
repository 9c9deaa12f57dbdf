//! `RedisIdempotency` on real servers: the shared idempotency scenarios and
//! races on standalone Redis and on the Cluster (modules `standalone` and
//! `cluster`), then what only Redis can show: the key's slot and TTL, the
//! stored fields, purge leaving the collecting to Redis, a key of another
//! type, and a server that does not answer.
//!
//! The suite names fixed tenants (`acme`, `globex`) and expects a fresh,
//! empty store per scenario; every store here is a [`Scoped`] view that
//! appends a per-store suffix to each tenant, so scenarios sharing one
//! server never meet. Its purge counts and deletes the records the view
//! wrote whose `keep_until` has come, oldest first (the SQL purge's
//! rule), so the suite's "exactly n records, or none, were written"
//! checks run against the keys really in Redis; the adapter's own purge
//! returns 0 (checked by `checks_on`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use spendgate_adapter_redis::RedisIdempotency;
use spendgate_adapter_redis::keys::{records_key, request_key};
use spendgate_contract::fixture::unique_community;
use spendgate_contract::idempotency::{KEEP_MS, answer, create, kept, t0};
use spendgate_contract::idempotency_race::{RACERS, RaceTarget};
use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{Claim, IdempotencyStore, RepoError, RequestId, StoredResponse};

use crate::own_redis::OwnRedis;
use crate::support::{TEST_TIMEOUT, cluster_urls, standalone_url};

async fn standalone_records() -> RedisIdempotency<ConnectionManager> {
    let url = standalone_url();
    RedisIdempotency::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to standalone Redis at {url} (SPENDGATE_TEST_REDIS_URL): {e}")
        })
        .with_timeout(TEST_TIMEOUT)
}

async fn cluster_records() -> RedisIdempotency<ClusterConnection> {
    let urls = cluster_urls();
    RedisIdempotency::connect_cluster(&urls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to Redis Cluster at {} (SPENDGATE_TEST_REDIS_CLUSTER_URLS): {e}",
                urls.join(",")
            )
        })
        .with_timeout(TEST_TIMEOUT)
}

/// A view of one or more `RedisIdempotency` (each on its own connection,
/// used in turn) whose tenants carry a suffix of its own.
struct Scoped<C> {
    stores: Vec<RedisIdempotency<C>>,
    next: AtomicUsize,
    suffix: String,
    /// The keys of every valid request this view passed on.
    seen: Mutex<HashSet<String>>,
}

impl<C> Scoped<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn new(stores: Vec<RedisIdempotency<C>>) -> Self {
        Self {
            stores,
            next: AtomicUsize::new(0),
            suffix: unique_community("idem").as_str().to_owned(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `id` with this view's tenant; remembered when it is a valid id.
    fn scoped(&self, id: &RequestId) -> RequestId {
        let tenant = format!("{}-{}", id.tenant.as_str(), self.suffix);
        let scoped = RequestId {
            tenant: CommunityId::parse(tenant).unwrap(),
            ..id.clone()
        };
        if scoped.check().is_ok() {
            self.seen.lock().unwrap().insert(request_key(&scoped));
        }
        scoped
    }

    fn store(&self) -> &RedisIdempotency<C> {
        &self.stores[self.next.fetch_add(1, Ordering::Relaxed) % self.stores.len()]
    }
}

#[async_trait]
impl<C> IdempotencyStore for Scoped<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError> {
        let id = self.scoped(id);
        self.store().claim(&id, fingerprint, now, keep_until).await
    }

    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError> {
        let id = self.scoped(id);
        self.store().complete(&id, fingerprint, response).await
    }

    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, RepoError> {
        assert_eq!(self.store().purge(now, limit).await, Ok(0));
        let keys: Vec<String> = self.seen.lock().unwrap().iter().cloned().collect();
        let mut conn = self.stores[0].connection();
        let mut due = Vec::new();
        for key in keys {
            let kept: Option<i64> = redis::cmd("HGET")
                .arg(&key)
                .arg("k")
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(kept) = kept.filter(|&k| k <= now.as_millis()) {
                due.push((kept, key));
            }
        }
        due.sort();
        due.truncate(usize::try_from(limit).unwrap());
        for (_, key) in &due {
            redis::cmd("DEL")
                .arg(key)
                .exec_async(&mut conn)
                .await
                .unwrap();
        }
        Ok(due.len() as u64)
    }
}

pub async fn standalone() -> Arc<dyn IdempotencyStore> {
    Arc::new(Scoped::new(vec![standalone_records().await]))
}

pub async fn cluster() -> Arc<dyn IdempotencyStore> {
    Arc::new(Scoped::new(vec![cluster_records().await]))
}

/// Racers on [`RACERS`] connections of their own, so their claims reach
/// the server side by side.
pub async fn standalone_race() -> RaceTarget {
    let mut stores = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        stores.push(standalone_records().await);
    }
    RaceTarget::plain(Arc::new(Scoped::new(stores)))
}

/// As [`standalone_race`], on the Cluster.
pub async fn cluster_race() -> RaceTarget {
    let mut stores = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        stores.push(cluster_records().await);
    }
    RaceTarget::plain(Arc::new(Scoped::new(stores)))
}

mod standalone {
    use super::{standalone, standalone_race};
    spendgate_contract::idempotency_store_contract!(
        standalone,
        races = standalone_race,
        purge = ttl
    );
}

mod cluster {
    use super::{cluster, cluster_race};
    spendgate_contract::idempotency_store_contract!(cluster, races = cluster_race, purge = ttl);
}

fn tenant_request(label: &str) -> RequestId {
    RequestId {
        tenant: unique_community(label),
        ..create("k1")
    }
}

async fn checks_on<C>(records: RedisIdempotency<C>, on_cluster: bool)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut conn = records.connection();
    let id = tenant_request("idem-layout");
    let key = request_key(&id);
    if on_cluster {
        // One record on the tenant's slot, beside its budget.
        let slot = |key: String| redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone();
        let ours: i64 = slot(key.clone()).query_async(&mut conn).await.unwrap();
        let budget: i64 = slot(records_key(&id.tenant))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ours, budget);
    }

    let fingerprint: Vec<u8> = (0..=255).collect();
    assert_eq!(
        records.claim(&id, &fingerprint, t0(), kept()).await,
        Ok(Claim::Started)
    );
    // The TTL is keep_until - now (by the caller's clock), so Redis drops
    // the record once it may be purged.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > KEEP_MS - 60_000 && ttl <= KEEP_MS, "{ttl}");
    let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut names: Vec<Vec<u8>> = fields.iter().map(|(f, _)| f.clone()).collect();
    names.sort();
    assert_eq!(names, vec![b"f".to_vec(), b"k".to_vec(), b"s".to_vec()]);
    assert_eq!(
        records
            .complete(&id, &fingerprint, &answer(201, &fingerprint))
            .await,
        Ok(true)
    );
    let after: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(after > 0 && after <= ttl, "complete keeps the TTL: {after}");

    // A claim whose keep_until is already past still gets a TTL.
    let short = tenant_request("idem-short");
    assert_eq!(
        records.claim(&short, b"f", t0(), t0()).await,
        Ok(Claim::Started)
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(request_key(&short))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl <= 1, "{ttl}");

    // Purge leaves the collecting to the TTL.
    assert_eq!(records.purge(Timestamp::MAX, u32::MAX).await, Ok(0));
    assert_eq!(
        records.claim(&id, &fingerprint, t0(), kept()).await,
        Ok(Claim::Completed(answer(201, &fingerprint)))
    );

    // Another type under the key is bad data, and stays as it was.
    let wrong = tenant_request("idem-wrongtype");
    redis::cmd("SET")
        .arg(request_key(&wrong))
        .arg("x")
        .exec_async(&mut conn)
        .await
        .unwrap();
    for result in [
        records.claim(&wrong, b"f", t0(), kept()).await.map(|_| ()),
        records
            .complete(&wrong, b"f", &answer(200, b"x"))
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(RepoError::BadData { .. })),
            "{result:?}"
        );
    }
    let kept_value: String = redis::cmd("GET")
        .arg(request_key(&wrong))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept_value, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_record_layout_ttl_purge_and_wrong_type() {
    checks_on(standalone_records().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_record_layout_ttl_purge_and_wrong_type() {
    checks_on(cluster_records().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_bad_input_are_told_apart() {
    let records = RedisIdempotency::connect(&standalone_url()).await.unwrap();
    // Nothing listens on port 1: the connect fails fast.
    assert!(matches!(
        RedisIdempotency::connect("redis://127.0.0.1:1").await,
        Err(RepoError::Unavailable(_))
    ));
    // Bad input is refused before any call.
    assert!(matches!(
        records.claim(&create(""), b"f", t0(), kept()).await,
        Err(RepoError::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_is_unavailable_after_the_timeout() {
    const SHORT: Duration = Duration::from_millis(300);
    const SLACK: Duration = Duration::from_millis(700);
    let server = OwnRedis::start();
    let records = RedisIdempotency::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(SHORT);
    let id = create("k1");
    assert_eq!(
        records.claim(&id, b"f", t0(), kept()).await,
        Ok(Claim::Started)
    );
    let mut admin = server.admin();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("ALL")
        .exec(&mut admin)
        .unwrap();
    for op in ["claim", "complete"] {
        let started = Instant::now();
        let result = match op {
            "claim" => records.claim(&id, b"f", t0(), kept()).await.map(|_| ()),
            _ => records
                .complete(&id, b"f", &answer(200, b"x"))
                .await
                .map(|_| ()),
        };
        let took = started.elapsed();
        assert!(
            matches!(result, Err(RepoError::Unavailable(_))),
            "{op}: {result:?}"
        );
        assert!(took >= SHORT && took <= SHORT + SLACK, "{op} took {took:?}");
    }
}
