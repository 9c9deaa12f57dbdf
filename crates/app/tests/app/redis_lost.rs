//! A Redis that loses everything (a throw-away `redis-server` without
//! persistence, killed and started again): the usage log rebuilds every
//! community's committed sums, and reserves stay refused until config sync
//! gives the store its limits back.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spendgate::domain::{CommunityId, Limits, Micros};
use spendgate::workers::{ConfigSyncJob, Job};
use spendgate::{CostBasis, ReserveDecision, ReserveError, Spendgate, Usage};

use crate::support::{community, key, m, model, user};

/// A `redis-server` of this test's own on a free loopback port, keeping
/// nothing on disk.
struct ThrowawayRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl ThrowawayRedis {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = spawn(port, &dir);
        let redis = Self { child, port, dir };
        redis.wait_ready().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (no shutdown save) and starts an empty one on the
    /// same port.
    async fn lose_everything(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn(self.port, &self.dir);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..200 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "throw-away redis-server on port {} did not start",
            self.port
        );
    }
}

fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it on PATH?): {e}"))
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(c: &CommunityId, k: &str, estimate: Micros) -> spendgate::ReserveRequest {
    let mut request = spendgate::ReserveRequest::tokens(
        c.clone(),
        user("alice"),
        key(k),
        model("cheap"),
        1,
        1,
        1,
    );
    request.cost = CostBasis::Estimate { amount: estimate };
    request
}

/// Reserves, retrying while the connection manager reconnects.
async fn reserve(
    sg: &Spendgate,
    request: spendgate::ReserveRequest,
) -> Result<ReserveDecision, ReserveError> {
    for _ in 0..100 {
        match sg.budget().reserve(request.clone()).await {
            Err(ReserveError::StoreUnavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    panic!("the store stayed unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_lost_is_rebuilt_from_the_usage_log_and_reserves_wait_for_config_sync() {
    let mut redis = ThrowawayRedis::start().await;
    let db = tempfile::tempdir().unwrap();
    let sg = Spendgate::builder()
        .redis(redis.url())
        .database(format!(
            "sqlite:{}/spendgate.db?mode=rwc",
            db.path().display()
        ))
        .build()
        .await
        .unwrap();
    let budget = sg.budget();
    let limit = m(1_000_000);
    let mut expected = Vec::new();
    for i in 0..3_i64 {
        let c = community(&format!("lost-{i}"));
        budget.set_budget(&c, Limits::new(limit)).await.unwrap();
        let mut sum = 0;
        for k in 0..5_i64 {
            let ReserveDecision::Reserved(hold) =
                reserve(&sg, request(&c, &format!("k{k}"), m(200_000)))
                    .await
                    .unwrap()
            else {
                panic!("expected a hold");
            };
            let actual = 180_000 + i * 1_000 + k;
            hold.finalize(Usage::cost(m(actual))).await.unwrap();
            sum += actual;
        }
        expected.push((c, m(sum)));
    }

    redis.lose_everything().await;

    for (c, _) in &expected {
        let refused = reserve(&sg, request(c, "after", m(1))).await.unwrap_err();
        assert!(
            matches!(refused, ReserveError::NotConfigured(_)),
            "never accepted without a limit: {refused:?}"
        );
        assert_eq!(budget.status(c, None).await.unwrap().committed, m(0));
    }
    for (c, sum) in &expected {
        let report = budget.rebuild(c, None).await.unwrap();
        assert_eq!((report.before, report.after), (m(0), *sum), "{c}");
        let refused = reserve(&sg, request(c, "after", m(1))).await.unwrap_err();
        assert!(matches!(refused, ReserveError::NotConfigured(_)));
    }

    let ports = sg.ports();
    let sync = ConfigSyncJob::new(ports.config.clone(), ports.store.clone(), budget.clone());
    assert_eq!(sync.tick(ports.clock.now()).await.failures, 0);
    for (c, sum) in &expected {
        let status = budget.status(c, None).await.unwrap();
        assert_eq!(
            (status.committed, status.limits),
            (*sum, Some(Limits::new(limit)))
        );
        let headroom = limit.checked_sub(*sum).unwrap();
        let too_big = headroom.checked_add(m(1)).unwrap();
        let denied = reserve(&sg, request(c, "too-big", too_big)).await.unwrap();
        assert!(
            matches!(denied, ReserveDecision::BudgetExceeded { .. }),
            "the rebuilt committed counts against the limit: {denied:?}"
        );
        let ReserveDecision::Reserved(hold) =
            reserve(&sg, request(c, "fits", headroom)).await.unwrap()
        else {
            panic!("the headroom left fits");
        };
        hold.cancel().await.unwrap();
    }
}
