//! Which budget store a run drives: the memory adapter (deterministic,
//! the CI's thousands of seeds) or a real one (Redis, Redis Cluster,
//! PostgreSQL, SQLite), where the same generator runs fewer steps and the
//! store's own timing makes a seed replay only approximately.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_adapter_postgres::{SqlBudgetStore, connect_and_migrate};
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::BudgetStore;

use crate::faults::Restart;

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
        let store: Arc<dyn BudgetStore> = match self {
            Backend::Memory => {
                return Ok(Opened {
                    store: Arc::new(MemoryBudgetStore::new(policy)),
                    tag: String::new(),
                    file: None,
                    restart: Some(Box::new(move || Arc::new(MemoryBudgetStore::new(policy)))),
                });
            }
            Backend::Redis(url) => Arc::new(
                RedisBudgetStore::connect(url, policy)
                    .await
                    .map_err(|e| format!("Redis at {url}: {e}"))?,
            ),
            Backend::RedisCluster(urls) => Arc::new(
                RedisBudgetStore::connect_cluster(urls, policy)
                    .await
                    .map_err(|e| format!("Redis Cluster at {urls:?}: {e}"))?,
            ),
            Backend::Postgres(url) => {
                let db = connect_and_migrate(url)
                    .await
                    .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
                Arc::new(SqlBudgetStore::new(db, policy))
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
                });
            }
        };
        Ok(Opened {
            store,
            tag,
            file: None,
            restart: None,
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
}
