//! The tier-override cache on real servers: the same scenarios on
//! standalone Redis and on the Cluster (modules `standalone` and
//! `cluster`), then the slot law, and unreachable servers (killed, paused,
//! never there) answering `Unavailable` within the timeout.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use spendgate_adapter_redis::RedisTierCache;
use spendgate_adapter_redis::keys::{community_prefix, records_key, tier_cache_key};
use spendgate_contract::fixture::{m, unique_community};
use spendgate_domain::{AccessLevel, CommunityId, ConfigVersion, Limits, Tier, TierOverrides, Ttl};
use spendgate_ports::{BudgetStore, RepoError, TierCache, Versioned};

use crate::own_redis::OwnRedis;
use crate::support::{TEST_TIMEOUT, cluster_redis, cluster_urls, standalone_url};

async fn standalone_cache() -> RedisTierCache<ConnectionManager> {
    let url = standalone_url();
    RedisTierCache::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to standalone Redis at {url} (SPENDGATE_TEST_REDIS_URL): {e}")
        })
        .with_timeout(TEST_TIMEOUT)
}

async fn cluster_cache() -> RedisTierCache<ClusterConnection> {
    let urls = cluster_urls();
    RedisTierCache::connect_cluster(&urls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to Redis Cluster at {} (SPENDGATE_TEST_REDIS_CLUSTER_URLS): {e}",
                urls.join(",")
            )
        })
        .with_timeout(TEST_TIMEOUT)
}

fn tiers(entries: &[(i64, AccessLevel)]) -> TierOverrides {
    entries
        .iter()
        .map(|&(t, level)| (Tier::new(t).unwrap(), level))
        .collect()
}

fn ttl_ms(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

const MINUTE: i64 = 60_000;

fn v(n: i64) -> ConfigVersion {
    ConfigVersion::new(n).unwrap()
}

/// What `get` answers for an entry of `overrides` at version `n`.
fn hit(n: i64, overrides: TierOverrides) -> Result<Option<Versioned<TierOverrides>>, RepoError> {
    Ok(Some(Versioned {
        value: overrides,
        version: v(n),
    }))
}

async fn raw_del<C: ConnectionLike + Clone + Send + Sync + 'static>(
    cache: &RedisTierCache<C>,
    c: &CommunityId,
) {
    let mut conn = cache.connection();
    redis::cmd("DEL")
        .arg(tier_cache_key(c))
        .exec_async(&mut conn)
        .await
        .unwrap();
}

async fn raw_set<C: ConnectionLike + Clone + Send + Sync + 'static>(
    cache: &RedisTierCache<C>,
    c: &CommunityId,
    value: &[u8],
) {
    let mut conn = cache.connection();
    redis::cmd("SET")
        .arg(tier_cache_key(c))
        .arg(value)
        .exec_async(&mut conn)
        .await
        .unwrap();
}

async fn raw_get<C: ConnectionLike + Clone + Send + Sync + 'static>(
    cache: &RedisTierCache<C>,
    c: &CommunityId,
) -> Option<String> {
    let mut conn = cache.connection();
    redis::cmd("GET")
        .arg(tier_cache_key(c))
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn pttl<C: ConnectionLike + Clone + Send + Sync + 'static>(
    cache: &RedisTierCache<C>,
    c: &CommunityId,
) -> i64 {
    let mut conn = cache.connection();
    redis::cmd("PTTL")
        .arg(tier_cache_key(c))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn assert_bad_data(
    result: Result<Option<Versioned<TierOverrides>>, RepoError>,
    c: &CommunityId,
    what: &str,
) {
    match result {
        Err(RepoError::BadData {
            community,
            field,
            reason,
        }) => {
            assert_eq!(community, c.to_string(), "{what}");
            assert_eq!(field, "tier cache", "{what}");
            assert!(!reason.is_empty(), "{what}");
        }
        other => panic!("{what}: expected BadData, got {other:?}"),
    }
}

/// The scenarios run on both deployments; each takes the cache to test.
mod scenario {
    use super::*;

    pub async fn miss_then_put_then_hit<C: ConnectionLike + Clone + Send + Sync + 'static>(
        cache: RedisTierCache<C>,
    ) {
        let c = unique_community("tiers-hit");
        assert_eq!(cache.get(&c).await, Ok(None));

        let first = tiers(&[(4, AccessLevel::Enterprise), (2, AccessLevel::Pro)]);
        cache.put(&c, &first, v(1), ttl_ms(MINUTE)).await.unwrap();
        assert_eq!(cache.get(&c).await, hit(1, first));

        // A put of a newer version replaces the entry and its ttl.
        let second = tiers(&[(9, AccessLevel::Free)]);
        cache
            .put(&c, &second, v(2), ttl_ms(2 * MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await, hit(2, second));
        let left = pttl(&cache, &c).await;
        assert!(MINUTE < left && left <= 2 * MINUTE, "pttl {left}");
    }

    pub async fn negative_entry_is_a_hit<C: ConnectionLike + Clone + Send + Sync + 'static>(
        cache: RedisTierCache<C>,
    ) {
        let c = unique_community("tiers-negative");
        cache
            .put(&c, &TierOverrides::new(), v(0), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await, hit(0, TierOverrides::new()));
    }

    pub async fn entry_expires_after_its_ttl<C: ConnectionLike + Clone + Send + Sync + 'static>(
        cache: RedisTierCache<C>,
    ) {
        let short = unique_community("tiers-expires");
        let long = unique_community("tiers-stays");
        let overrides = tiers(&[(5, AccessLevel::Enterprise)]);
        cache
            .put(&short, &overrides, v(3), ttl_ms(200))
            .await
            .unwrap();
        cache
            .put(&long, &overrides, v(3), ttl_ms(MINUTE))
            .await
            .unwrap();
        let left = pttl(&cache, &short).await;
        assert!((1..=200).contains(&left), "pttl {left}");
        assert_eq!(cache.get(&short).await, hit(3, overrides.clone()));

        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(cache.get(&short).await, Ok(None));
        assert_eq!(raw_get(&cache, &short).await, None);
        assert_eq!(cache.get(&long).await, hit(3, overrides));
    }

    /// A reader that read the database before a write and caches what it
    /// read after the writer cached the new overrides leaves them (and
    /// their expiry) in place; the same version again replaces them.
    pub async fn an_older_version_never_replaces_a_newer_entry<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        cache: RedisTierCache<C>,
    ) {
        let c = unique_community("tiers-older");
        let newer = tiers(&[(4, AccessLevel::Enterprise)]);
        let older = tiers(&[(4, AccessLevel::Free)]);
        cache
            .put(&c, &newer, v(1_765_400_000_005), ttl_ms(MINUTE))
            .await
            .unwrap();
        for stale in [1_765_400_000_004, 1, 0] {
            cache
                .put(&c, &older, v(stale), ttl_ms(2 * MINUTE))
                .await
                .unwrap();
            assert_eq!(
                cache.get(&c).await,
                hit(1_765_400_000_005, newer.clone()),
                "{stale}"
            );
        }
        let left = pttl(&cache, &c).await;
        assert!(0 < left && left <= MINUTE, "pttl {left}");
        cache
            .put(&c, &older, v(1_765_400_000_005), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await, hit(1_765_400_000_005, older));
    }

    /// Many readers caching an old read while a writer caches the new
    /// overrides, all at once: the new ones are what stays.
    pub async fn racing_puts_leave_the_newest_version<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        cache: RedisTierCache<C>,
    ) {
        for round in 0..20 {
            let c = unique_community("tiers-race");
            let newer = tiers(&[(7, AccessLevel::Enterprise)]);
            let mut tasks = tokio::task::JoinSet::new();
            for racer in 0..16 {
                let (cache, c, newer) = (cache.clone(), c.clone(), newer.clone());
                tasks.spawn(async move {
                    if racer == round % 16 {
                        cache.put(&c, &newer, v(9), ttl_ms(MINUTE)).await
                    } else {
                        cache
                            .put(&c, &TierOverrides::new(), v(8), ttl_ms(MINUTE))
                            .await
                    }
                });
            }
            while let Some(put) = tasks.join_next().await {
                put.unwrap().unwrap();
            }
            assert_eq!(cache.get(&c).await, hit(9, newer), "round {round}");
        }
    }

    pub async fn communities_are_isolated<C: ConnectionLike + Clone + Send + Sync + 'static>(
        cache: RedisTierCache<C>,
    ) {
        let a = unique_community("tiers-a");
        let b = unique_community("tiers-b");
        let for_a = tiers(&[(3, AccessLevel::Enterprise)]);
        cache.put(&a, &for_a, v(5), ttl_ms(MINUTE)).await.unwrap();
        assert_eq!(cache.get(&b).await, Ok(None));

        cache
            .put(&b, &TierOverrides::new(), v(9), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&a).await, hit(5, for_a.clone()));
        assert_eq!(cache.get(&b).await, hit(9, TierOverrides::new()));

        raw_set(&cache, &b, b"garbage").await;
        assert_eq!(cache.get(&a).await, hit(5, for_a));
        assert_bad_data(cache.get(&b).await, &b, "garbage in b");
    }

    pub async fn corrupt_values_are_bad_data<C: ConnectionLike + Clone + Send + Sync + 'static>(
        cache: RedisTierCache<C>,
    ) {
        let c = unique_community("tiers-corrupt");
        let corrupt: &[&[u8]] = &[
            b"",
            b"garbage",
            b"\xff\xfe\x00",
            b"[1,{}]",
            br#"{"4":"enterprise"}"#,
            br#"{"v":1,"t":{"4":"enterprise"}}"#,
            br#"{"v":2,"n":1,"t":{"4":"enterprise"}"#,
            br#"{"v":2,"n":1,"t":{}} trailing"#,
            br#"{"v":3,"n":1,"t":{"4":"enterprise"}}"#,
            br#"{"v":"2","n":1,"t":{}}"#,
            br#"{"v":2,"t":{}}"#,
            br#"{"v":2,"n":-1,"t":{}}"#,
            br#"{"v":2,"n":1,"t":{},"extra":true}"#,
            br#"{"v":2,"n":1,"t":{"0":"pro"}}"#,
            br#"{"v":2,"n":1,"t":{"10":"pro"}}"#,
            br#"{"v":2,"n":1,"t":{"04":"pro"}}"#,
            br#"{"v":2,"n":1,"t":{"4":"gold"}}"#,
            br#"{"v":2,"n":1,"t":{"4":"Enterprise"}}"#,
            br#"{"v":2,"n":1,"t":{"4":7}}"#,
            br#"{"v":2,"n":1,"t":{"4":"pro","4":"free"}}"#,
        ];
        for value in corrupt {
            raw_set(&cache, &c, value).await;
            assert_bad_data(cache.get(&c).await, &c, &String::from_utf8_lossy(value));
        }

        // Not even a string under the key.
        let mut conn = cache.connection();
        raw_del(&cache, &c).await;
        redis::cmd("RPUSH")
            .arg(tier_cache_key(&c))
            .arg("x")
            .exec_async(&mut conn)
            .await
            .unwrap();
        assert_bad_data(cache.get(&c).await, &c, "a list under the key");

        // The next put, of any version, replaces whatever was there.
        let overrides = tiers(&[(6, AccessLevel::Free)]);
        cache
            .put(&c, &overrides, v(0), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await, hit(0, overrides.clone()));
        // So does a put over an unreadable entry of a huge version.
        raw_set(&cache, &c, br#"{"v":2,"n":99999999999999999,"t":{}}"#).await;
        cache
            .put(&c, &overrides, v(1), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(cache.get(&c).await, hit(1, overrides));
    }

    /// The one key, under the community's tag, holding the documented
    /// encoding.
    pub async fn value_is_the_documented_encoding<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        cache: RedisTierCache<C>,
    ) {
        let c = unique_community("tiers-encoding");
        let key = tier_cache_key(&c);
        assert!(key.starts_with(&community_prefix(&c)), "{key}");
        assert_eq!(key, format!("sg:{{{c}}}:tiers"));

        let overrides = tiers(&[(7, AccessLevel::Pro), (4, AccessLevel::Enterprise)]);
        cache
            .put(&c, &overrides, v(1_765_400_000_000), ttl_ms(MINUTE))
            .await
            .unwrap();
        assert_eq!(
            raw_get(&cache, &c).await.as_deref(),
            Some(r#"{"v":2,"n":1765400000000,"t":{"4":"enterprise","7":"pro"}}"#)
        );
        cache
            .put(
                &c,
                &TierOverrides::new(),
                v(1_765_400_000_001),
                ttl_ms(MINUTE),
            )
            .await
            .unwrap();
        assert_eq!(
            raw_get(&cache, &c).await.as_deref(),
            Some(r#"{"v":2,"n":1765400000001,"t":{}}"#)
        );
        // What another writer puts in that form reads back.
        raw_set(&cache, &c, br#"{"t":{"1":"enterprise"},"n":3,"v":2}"#).await;
        assert_eq!(
            cache.get(&c).await,
            hit(3, tiers(&[(1, AccessLevel::Enterprise)]))
        );
    }
}

macro_rules! on_each_deployment {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test]
                async fn $name() {
                    super::scenario::$name(super::standalone_cache().await).await;
                }
            )*
        }

        mod cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::scenario::$name(super::cluster_cache().await).await;
                }
            )*
        }
    };
}

on_each_deployment!(
    miss_then_put_then_hit,
    negative_entry_is_a_hit,
    entry_expires_after_its_ttl,
    an_older_version_never_replaces_a_newer_entry,
    racing_puts_leave_the_newest_version,
    communities_are_isolated,
    corrupt_values_are_bad_data,
    value_is_the_documented_encoding,
);

async fn keyslot(conn: &mut ClusterConnection, key: &str) -> i64 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// The cache entry lives on the slot of the community's budget records:
/// same `CLUSTER KEYSLOT`, and one script can touch both keys (a cross-slot
/// script would fail with CROSSSLOT).
#[tokio::test]
async fn key_lands_in_the_community_slot_on_the_cluster() {
    let store = cluster_redis().await;
    let cache = cluster_cache().await;
    let mut conn = cache.connection();
    for label in ["tiers-slot-a", "tiers-slot-b", "tiers-slot-c"] {
        let c = unique_community(label);
        store
            .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
            .await
            .unwrap();
        cache
            .put(&c, &tiers(&[(2, AccessLevel::Pro)]), v(1), ttl_ms(MINUTE))
            .await
            .unwrap();

        let records_slot = keyslot(&mut conn, &records_key(&c)).await;
        assert_eq!(
            keyslot(&mut conn, &tier_cache_key(&c)).await,
            records_slot,
            "{c}"
        );

        let both: i64 = redis::cmd("EVAL")
            .arg("return redis.call('EXISTS', KEYS[1], KEYS[2])")
            .arg(2)
            .arg(records_key(&c))
            .arg(tier_cache_key(&c))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(both, 2, "{c}");
    }
}

/// A timeout short enough for the tests below, long enough for a healthy
/// loopback server on a busy machine.
const SHORT: Duration = Duration::from_millis(300);
/// Scheduling slack allowed past the timeout.
const SLACK: Duration = Duration::from_millis(700);

/// Every operation of `cache` answers `Unavailable` within `SHORT` (plus
/// slack); `at_least_the_timeout` when the server holds the connection
/// open without answering, so it is the timeout that fired.
async fn every_call_unavailable<C: ConnectionLike + Clone + Send + Sync + 'static>(
    cache: &RedisTierCache<C>,
    at_least_the_timeout: bool,
    what: &str,
) {
    let c = unique_community("tiers-down");
    let overrides = tiers(&[(4, AccessLevel::Pro)]);
    for op in ["get", "put"] {
        let started = Instant::now();
        let result = match op {
            "get" => cache.get(&c).await.map(|_| ()),
            _ => cache.put(&c, &overrides, v(1), ttl_ms(MINUTE)).await,
        };
        let took = started.elapsed();
        assert!(
            matches!(result, Err(RepoError::Unavailable(_))),
            "{what}: {op} must be Unavailable, got {result:?}"
        );
        assert!(took <= SHORT + SLACK, "{what}: {op} took {took:?}");
        if at_least_the_timeout {
            assert!(took >= SHORT, "{what}: {op} answered after only {took:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_is_unavailable_within_the_timeout_on_standalone() {
    let mut server = OwnRedis::start();
    let cache = RedisTierCache::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(SHORT);
    let c = unique_community("tiers-killed");
    cache
        .put(&c, &TierOverrides::new(), v(1), ttl_ms(MINUTE))
        .await
        .unwrap();
    server.kill();
    every_call_unavailable(&cache, false, "killed standalone server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_is_unavailable_after_the_timeout_on_standalone() {
    let server = OwnRedis::start();
    let cache = RedisTierCache::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(SHORT);
    let c = unique_community("tiers-paused");
    cache
        .put(&c, &TierOverrides::new(), v(1), ttl_ms(MINUTE))
        .await
        .unwrap();
    let mut admin = server.admin();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("ALL")
        .exec(&mut admin)
        .unwrap();
    every_call_unavailable(&cache, true, "paused standalone server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_unavailable_within_the_timeout_on_a_cluster() {
    let mut node = OwnClusterNode::start();
    let cache = RedisTierCache::connect_cluster(&[node.url()])
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the cluster at {}: {e}", node.url()))
        .with_timeout(SHORT);
    let c = unique_community("tiers-killed-cluster");
    cache
        .put(&c, &tiers(&[(8, AccessLevel::Free)]), v(1), ttl_ms(MINUTE))
        .await
        .unwrap();
    assert_eq!(
        cache.get(&c).await,
        hit(1, tiers(&[(8, AccessLevel::Free)]))
    );
    node.kill();
    every_call_unavailable(&cache, false, "killed cluster node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_is_unavailable_after_the_timeout_on_a_cluster() {
    let node = OwnClusterNode::start();
    let cache = RedisTierCache::connect_cluster(&[node.url()])
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the cluster at {}: {e}", node.url()))
        .with_timeout(SHORT);
    let c = unique_community("tiers-paused-cluster");
    cache
        .put(&c, &TierOverrides::new(), v(1), ttl_ms(MINUTE))
        .await
        .unwrap();
    let mut admin = node.admin();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("ALL")
        .exec(&mut admin)
        .unwrap();
    every_call_unavailable(&cache, true, "paused cluster node").await;
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_unavailable() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let result = RedisTierCache::connect(&url).await;
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "standalone: {result:?}"
    );
    let result = RedisTierCache::connect_cluster(&[url.as_str()]).await;
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "cluster: {result:?}"
    );
    // Each connect is bounded by 4 × the default timeout.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let result = RedisTierCache::connect("not a url").await;
    assert!(
        matches!(result, Err(RepoError::InvalidInput(_))),
        "{result:?}"
    );
}

/// A connection that never answers: the timeout alone ends every call.
#[derive(Clone)]
struct Silent;

impl ConnectionLike for Silent {
    fn req_packed_command<'a>(
        &'a mut self,
        _cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(std::future::pending())
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a redis::Pipeline,
        _offset: usize,
        _count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(std::future::pending())
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[tokio::test]
async fn a_connection_that_never_answers_is_unavailable_after_the_timeout() {
    let cache = RedisTierCache::new(Silent).with_timeout(SHORT);
    every_call_unavailable(&cache, true, "silent connection").await;
}

/// A one-node Redis Cluster (all 16384 slots) on its own ports, killed on
/// drop: the shared test cluster must not be killed or paused.
struct OwnClusterNode {
    port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl OwnClusterNode {
    fn start() -> Self {
        let port = free_cluster_port();
        let dir = std::env::temp_dir().join(format!("spendgate-tier-cache-cluster-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(format!("nodes-{port}.conf"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server on port {port}: {e}"));
        let node = Self {
            port,
            child: Some(child),
            dir,
        };
        node.wait_until_ok();
        node
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url().as_str()).unwrap();
        let mut assigned = false;
        loop {
            if let Ok(mut conn) = client.get_connection() {
                if !assigned {
                    assigned = redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(0)
                        .arg(16_383)
                        .exec(&mut conn)
                        .is_ok();
                }
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                if assigned && info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "one-node cluster at {} did not reach cluster_state:ok",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnClusterNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free, and so is its cluster bus port (+10000).
fn free_cluster_port() -> u16 {
    for _ in 0..100 {
        let port = closed_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        let first = TcpListener::bind(("127.0.0.1", port));
        let second = TcpListener::bind(("127.0.0.1", bus));
        if first.is_ok() && second.is_ok() {
            return port;
        }
    }
    panic!("no free port with a free cluster bus port (+10000)");
}
