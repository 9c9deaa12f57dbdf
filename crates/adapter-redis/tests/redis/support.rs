//! Connecting to the test servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::BudgetStore;

/// Generous for tests that share two cores with compilers; the timeout
/// test sets its own.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn standalone_url() -> String {
    std::env::var("SPENDGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn cluster_urls() -> Vec<String> {
    std::env::var("SPENDGATE_TEST_REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into()
        })
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

pub async fn standalone_redis() -> RedisBudgetStore<ConnectionManager> {
    let url = standalone_url();
    RedisBudgetStore::connect(&url, BudgetPolicy::default())
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to standalone Redis at {url} (SPENDGATE_TEST_REDIS_URL): {e}")
        })
        .with_timeout(TEST_TIMEOUT)
}

pub async fn cluster_redis() -> RedisBudgetStore<ClusterConnection> {
    let urls = cluster_urls();
    RedisBudgetStore::connect_cluster(&urls, BudgetPolicy::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to Redis Cluster at {} (SPENDGATE_TEST_REDIS_CLUSTER_URLS): {e}",
                urls.join(",")
            )
        })
        .with_timeout(TEST_TIMEOUT)
}

/// The contract suite's factory for standalone Redis.
pub async fn standalone() -> Arc<dyn BudgetStore> {
    Arc::new(standalone_redis().await)
}

/// The contract suite's factory for the Cluster.
pub async fn cluster() -> Arc<dyn BudgetStore> {
    Arc::new(cluster_redis().await)
}

/// A plain connection to the standalone server, for inspecting keys.
pub async fn raw_standalone() -> ConnectionManager {
    let url = standalone_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    ConnectionManager::new(client)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to standalone Redis at {url}: {e}"))
}

/// A connection that counts the requests it sends: one per round trip.
#[derive(Clone)]
pub struct Counting {
    pub inner: ConnectionManager,
    pub requests: Arc<AtomicUsize>,
}

impl Counting {
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl redis::aio::ConnectionLike for Counting {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Calls counted by `INFO commandstats` for one command (0 if never).
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let wanted = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
