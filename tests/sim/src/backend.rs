//! Which budget store a run drives: the memory adapter (deterministic,
//! the CI's thousands of seeds) or a real one (Redis, Redis Cluster,
//! PostgreSQL, SQLite), where the same generator runs fewer steps and the
//! store's own timing makes a seed replay only approximately.
//!
//! A standalone Redis and PostgreSQL are reached through a
//! [`FaultProxy`], so their faults are the network's: the client library
//! and the adapter meet a cut connection, a slow link or a reply lost
//! after the server applied the write, as in production. The laws are
//! checked over a second, direct connection. A Redis Cluster cannot be
//! proxied from outside (its nodes announce their own addresses, and the
//! client follows them), nor can an SQLite file: their faults stay the
//! in-process layer's ([`crate::faults`]); `scripts/chaos` kills and
//! fails over a real cluster's nodes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_adapter_postgres::{
    ConnectSettings, SqlBudgetStore, connect_and_migrate, connect_with_settings,
};
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_fault_proxy::FaultProxy;
use spendgate_ports::BudgetStore;

use crate::faults::{Network, Restart};

/// How long a call through the proxy waits for Redis before it fails as
/// unavailable: short, so a cut (where the client reconnects until the
/// call's timeout) costs the run little real time.
const PROXIED_TIMEOUT: Duration = Duration::from_millis(60);

/// How long a call through the proxy waits for a PostgreSQL connection:
/// long enough to open one on a loaded machine, short for the same reason.
const PROXIED_ACQUIRE: Duration = Duration::from_millis(300);

/// A budget store to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// [`MemoryBudgetStore`], fresh per run.
    Memory,
    /// A standalone Redis at this URL.
    Redis(String),
    /// A Redis Cluster reached through these seed URLs.
    RedisCluster(Vec<String>),
    /// PostgreSQL at this URL (migrated on open).
    Postgres(String),
    /// A SQLite file of its own per run, in the temporary directory.
    Sqlite,
}

/// Runs against a shared server tell their communities apart by a tag.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Backend {
    /// The store for one run, the tag its community ids carry (empty on
    /// the memory store, whose runs share nothing) and the file to remove
    /// after it.
    ///
    /// # Errors
    /// The store cannot be reached or set up.
    pub(crate) async fn open(&self, policy: BudgetPolicy) -> Result<Opened, String> {
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{run}-", std::process::id());
        let (store, network) = match self {
            Backend::Memory => {
                return Ok(Opened {
                    store: Arc::new(MemoryBudgetStore::new(policy)),
                    tag: String::new(),
                    file: None,
                    restart: Some(Box::new(move || Arc::new(MemoryBudgetStore::new(policy)))),
                    network: None,
                });
            }
            Backend::Redis(url) => {
                let (proxy, proxied) = FaultProxy::for_url(url)
                    .await
                    .map_err(|e| format!("proxy for {url}: {e}"))?;
                let faulted: Arc<dyn BudgetStore> = Arc::new(
                    RedisBudgetStore::connect(&proxied, policy)
                        .await
                        .map_err(|e| format!("Redis at {url} through a proxy: {e}"))?
                        .with_timeout(PROXIED_TIMEOUT),
                );
                let direct: Arc<dyn BudgetStore> = Arc::new(
                    RedisBudgetStore::connect(url, policy)
                        .await
                        .map_err(|e| format!("Redis at {url}: {e}"))?,
                );
                (faulted, Some(Network { proxy, direct }))
            }
            Backend::RedisCluster(urls) => (
                Arc::new(
                    RedisBudgetStore::connect_cluster(urls, policy)
                        .await
                        .map_err(|e| format!("Redis Cluster at {urls:?}: {e}"))?,
                ) as Arc<dyn BudgetStore>,
                None,
            ),
            Backend::Postgres(url) => {
                let db = connect_and_migrate(url)
                    .await
                    .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
                let (proxy, proxied) = FaultProxy::for_url(url)
                    .await
                    .map_err(|e| format!("proxy for {url}: {e}"))?;
                let settings = ConnectSettings {
                    max_connections: 4,
                    acquire_timeout: PROXIED_ACQUIRE,
                    connect_timeout: Duration::from_secs(5),
                    statement_timeout: Some(Duration::from_secs(5)),
                };
                let faulted = connect_with_settings(&proxied, settings)
                    .await
                    .map_err(|e| format!("PostgreSQL at {url} through a proxy: {e}"))?;
                (
                    Arc::new(SqlBudgetStore::new(faulted, policy)) as Arc<dyn BudgetStore>,
                    Some(Network {
                        proxy,
                        direct: Arc::new(SqlBudgetStore::new(db, policy)),
                    }),
                )
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("spendgate-sim-{tag}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let db = connect_and_migrate(&url)
                    .await
                    .map_err(|e| format!("SQLite at {url}: {e}"))?;
                return Ok(Opened {
                    store: Arc::new(SqlBudgetStore::new(db, policy)),
                    tag,
                    file: Some(path),
                    restart: None,
                    network: None,
                });
            }
        };
        Ok(Opened {
            store,
            tag,
            file: None,
            restart: None,
            network,
        })
    }
}

/// A store opened for one run.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) tag: String,
    pub(crate) file: Option<PathBuf>,
    /// How to empty it (the memory store only: a shared server is not
    /// flushed under other tests).
    pub(crate) restart: Option<Restart>,
    /// The proxy `store` is reached through, and a direct connection for
    /// the laws' reads; `None` where the faults are in-process.
    pub(crate) network: Option<Network>,
}
