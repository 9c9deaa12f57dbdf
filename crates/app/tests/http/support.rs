//! A spendgate served over real HTTP on 127.0.0.1:0, on memory, on a
//! SQLite file or on Redis + PostgreSQL, with a budget store that can be
//! switched off or slowed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;
use spendgate::Spendgate;
use spendgate::domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, HoldState, Limits, Micros,
    Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate::inbound::http::{ApiToken, HttpOptions, serve};
use spendgate::ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};
use spendgate_adapter_memory::{MemoryBudgetStore, MemoryUsageSource};

use crate::servers::{PgDb, redis_cluster_urls, redis_url};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The operator's token: every community.
pub const ADMIN: &str = "admin-token-0123456789";

/// Where the budget counters live.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Sqlite,
    /// Redis for the hot path, a fresh PostgreSQL database for the rest.
    RedisPostgres,
    /// The same on the Redis Cluster.
    RedisClusterPostgres,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A community id no other test uses.
pub fn community(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("http-{label}-{}-{nanos:x}-{n}", std::process::id())
}

/// A budget store that delegates, or answers `Unavailable` while `down`,
/// after sleeping `delay_ms`.
pub struct SwitchStore {
    inner: Arc<dyn BudgetStore>,
    pub down: AtomicBool,
    pub delay_ms: AtomicU64,
    /// Calls that reached the store so far.
    pub calls: AtomicU64,
}

impl SwitchStore {
    async fn gate(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl BudgetStore for SwitchStore {
    async fn reserve(
        &self,
        c: &CommunityId,
        r: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.gate().await?;
        self.inner.reserve(c, r, now).await
    }
    async fn extend(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.gate().await?;
        self.inner.extend(c, h, ttl, now).await
    }
    async fn finalize(
        &self,
        c: &CommunityId,
        s: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.gate().await?;
        self.inner.finalize(c, s, now).await
    }
    async fn commit_unheld(
        &self,
        c: &CommunityId,
        u: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.gate().await?;
        self.inner.commit_unheld(c, u, now).await
    }
    async fn cancel(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.gate().await?;
        self.inner.cancel(c, h, now).await
    }
    async fn reap(&self, c: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        self.gate().await?;
        self.inner.reap(c, now).await
    }
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.gate().await?;
        self.inner.due_communities(now, limit).await
    }
    async fn lookup(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        self.gate().await?;
        self.inner.lookup(c, h, now).await
    }
    async fn restore_committed(
        &self,
        c: &CommunityId,
        p: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.restore_committed(c, p, committed).await
    }
    async fn status_with_user<'a>(
        &self,
        c: &CommunityId,
        p: Period,
        u: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.gate().await?;
        self.inner.status_with_user(c, p, u).await
    }
    async fn users<'a>(
        &self,
        c: &CommunityId,
        p: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.gate().await?;
        self.inner.users(c, p, cursor, size).await
    }
    async fn set_limits(
        &self,
        c: &CommunityId,
        l: Limits,
        v: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.set_limits(c, l, v).await
    }
}

/// One answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The problem type's last segment (`budget-exceeded`).
    pub fn problem(&self) -> &str {
        self.json["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("https://spendgate.dev/problems/"))
            .unwrap_or("")
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem details answer of `status` and `kind`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(
            (self.status, self.problem()),
            (status, kind),
            "answer: {}",
            self.text
        );
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.json["status"], status);
        assert!(self.json["title"].is_string() && self.json["detail"].is_string());
    }
}

/// A request under construction.
pub struct Call<'a> {
    env: &'a Server,
    method: Method,
    path: String,
    token: Option<String>,
    key: Option<String>,
    body: Option<String>,
    headers: Vec<(String, String)>,
}

impl Call<'_> {
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string());
        self
    }
    pub fn raw(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub async fn send(self) -> Reply {
        let mut request = self
            .env
            .client
            .request(self.method, format!("{}{}", self.env.base, self.path));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = self.key {
            request = request.header("Idempotency-Key", key);
        }
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }
}

/// A running server and what the test needs to drive it.
pub struct Server {
    pub backend: Backend,
    pub sg: Spendgate,
    pub store: Arc<SwitchStore>,
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
    /// What must live as long as the server: a temporary directory or a
    /// PostgreSQL database.
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Server {
    /// Served with the admin token, 64 KiB bodies, 10 s timeout.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, options(vec![admin()])).await
    }

    pub async fn start_with(backend: Backend, options: HttpOptions) -> Self {
        Self::launch(backend, options, true).await
    }

    /// Served as [`Server::start`], with no provider usage source: nothing
    /// reconciles a handed-over hold.
    pub async fn start_without_provider(backend: Backend) -> Self {
        Self::launch(backend, options(vec![admin()]), false).await
    }

    async fn launch(backend: Backend, options: HttpOptions, provider: bool) -> Self {
        let (base, keep): (Spendgate, Box<dyn std::any::Any + Send + Sync>) = match backend {
            Backend::Memory => (Spendgate::builder().build().await.unwrap(), Box::new(())),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
                let sg = Spendgate::builder().database(url).build().await.unwrap();
                (sg, Box::new(dir))
            }
            Backend::RedisPostgres => {
                let (db, url) = PgDb::create().await;
                let sg = Spendgate::builder()
                    .redis(redis_url())
                    .database(url)
                    .build()
                    .await
                    .unwrap();
                (sg, Box::new(db))
            }
            Backend::RedisClusterPostgres => {
                let (db, url) = PgDb::create().await;
                let sg = Spendgate::builder()
                    .redis_cluster(redis_cluster_urls())
                    .database(url)
                    .build()
                    .await
                    .unwrap();
                (sg, Box::new(db))
            }
        };
        Self::serve_over(backend, base, keep, options, provider).await
    }

    /// Served over a spendgate on the Redis at `redis` and the database at
    /// `database` (servers of the test's own, to flush, pause or cut), with
    /// a provider usage source; `keep` lives as long as the server.
    pub async fn on(
        redis: &str,
        database: &str,
        options: HttpOptions,
        keep: Box<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        let ms = |n| spendgate::domain::Ttl::from_millis(n).unwrap();
        let base = Spendgate::builder()
            .redis(redis)
            .database(database)
            .settings(spendgate::BudgetSettings {
                retry: spendgate::Backoff::new(ms(100), ms(1_000)),
                ..spendgate::BudgetSettings::default()
            })
            .build()
            .await
            .unwrap();
        Self::serve_over(Backend::RedisPostgres, base, keep, options, true).await
    }

    async fn serve_over(
        backend: Backend,
        base: Spendgate,
        keep: Box<dyn std::any::Any + Send + Sync>,
        options: HttpOptions,
        provider: bool,
    ) -> Self {
        let ports = base.ports().clone();
        let inner: Arc<dyn BudgetStore> = match backend {
            Backend::Memory => Arc::new(MemoryBudgetStore::new(Default::default())),
            Backend::Sqlite | Backend::RedisPostgres | Backend::RedisClusterPostgres => {
                ports.store.clone()
            }
        };
        let store = Arc::new(SwitchStore {
            inner,
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        let mut builder = Spendgate::builder();
        if provider {
            builder = builder.usage_source(Arc::new(MemoryUsageSource::default()));
        }
        let sg = builder
            .settings(base.budget().settings())
            .store(store.clone())
            .config(ports.config.clone())
            .tier_overrides(ports.tier_overrides.clone())
            .tier_cache(ports.tier_cache.clone())
            .usage_log(ports.usage_log.clone())
            .finalize_queue(ports.finalize_queue.clone())
            .reconciliation_queue(ports.reconciliation.clone())
            .lease(ports.lease.clone())
            .idempotency(ports.idempotency.clone())
            .build()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(serve(listener, sg.clone(), options, shutdown.clone()));
        Self {
            backend,
            sg,
            store,
            base: base_url,
            client: reqwest::Client::new(),
            shutdown,
            handle: Some(handle),
            _keep: keep,
        }
    }

    pub fn call(&self, method: Method, path: impl Into<String>) -> Call<'_> {
        Call {
            env: self,
            method,
            path: path.into(),
            token: Some(ADMIN.to_owned()),
            key: None,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn get(&self, path: impl Into<String>) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: impl Into<String>) -> Call<'_> {
        self.call(Method::POST, path)
    }

    pub fn put(&self, path: impl Into<String>) -> Call<'_> {
        self.call(Method::PUT, path)
    }

    /// A configured community with a limit of `dollars`.
    pub async fn community(&self, label: &str, dollars: u32) -> String {
        let c = community(label);
        self.sg
            .budget()
            .set_budget(
                &CommunityId::parse(c.as_str()).unwrap(),
                Limits::new(Micros::from_usd(dollars)),
            )
            .await
            .unwrap();
        c
    }

    /// Reserves 1,200 + 800 tokens of `cheap` at tier 1 for alice (660
    /// micro-USD) under `key`.
    pub async fn reserve(&self, c: &str, key: &str) -> Reply {
        self.post(format!("/api/v1/communities/{c}/reservations"))
            .key(key)
            .json(tokens_body())
            .send()
            .await
    }

    /// The community's budget as the API reports it.
    pub async fn budget(&self, c: &str) -> Value {
        let reply = self
            .get(format!("/api/v1/communities/{c}/budget"))
            .send()
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The reserve body of [`Server::reserve`].
pub fn tokens_body() -> Value {
    serde_json::json!({
        "user": "alice",
        "model": "cheap",
        "tier": 1,
        "prompt_tokens": 1200,
        "max_completion_tokens": 800,
    })
}

pub fn admin() -> ApiToken {
    ApiToken::operator(ADMIN)
}

pub fn options(tokens: Vec<ApiToken>) -> HttpOptions {
    HttpOptions {
        tokens,
        body_limit_bytes: 64 * 1024,
        request_timeout: Duration::from_secs(10),
        ..HttpOptions::default()
    }
}

/// Runs each named scenario on every backend, as `name::memory`,
/// `name::sqlite` and `name::redis_postgres`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::support::Server::start($crate::support::Backend::Memory).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Server::start($crate::support::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_postgres() {
                    super::$name($crate::support::Server::start($crate::support::Backend::RedisPostgres).await).await;
                }
            }
        )*
    };
}

impl Server {
    /// [`Server::reserve`] with another token (or none).
    pub async fn reserve_with_token(&self, c: &str, token: Option<&str>) -> Reply {
        self.post(format!("/api/v1/communities/{c}/reservations"))
            .token(token)
            .key("k1")
            .json(tokens_body())
            .send()
            .await
    }
}
