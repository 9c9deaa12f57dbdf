//! The one place that picks adapters: [`Spendgate::builder`] takes adapters
//! or URLs and returns the services. Nothing is global; two instances in
//! one process share nothing.

use std::sync::Arc;

use spendgate_adapter_memory::{
    MemoryBudgetStore, MemoryConfig, MemoryIdempotency, MemoryLease, MemoryTierCache,
    MemoryTierOverrides, MemoryUsageLog, MemoryWorkQueue,
};
use spendgate_domain::{BudgetPolicy, PriceTable};
use spendgate_ports::{
    BudgetStore, Clock, ConfigProvider, FinalizeQueue, IdempotencyStore, Lease,
    ReconciliationQueue, RepoError, StoreError, SystemClock, TierCache, TierOverrideRepo, UsageLog,
    UsageSource,
};
use tokio_util::sync::CancellationToken;

use crate::services::budget::{BudgetService, BudgetSettings, Core};
use crate::services::community_config::{ConfigCache, ConfigFreshness};
use crate::services::tiers::{TierAccess, TierTimings};
use crate::workers::runner::holder_token;
use crate::workers::{
    ConfigSyncJob, DriftJob, FinalizeReplayJob, IdempotencyPurgeJob, IdempotencyPurgeSettings, Job,
    LeaseConfig, ReaperJob, ReaperSettings, ReconciliationJob, ReconciliationSettings, Schedule,
    WorkerHandle,
};

/// Why a [`SpendgateBuilder`] could not build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The budget store could not be reached or set up.
    #[error("budget store: {0}")]
    Store(#[source] StoreError),
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Database(#[source] RepoError),
    /// A setting needs a cargo feature this build of `spendgate` lacks.
    #[error("{setting} needs the `{feature}` feature of the spendgate crate")]
    FeatureDisabled {
        /// The builder setting or URL scheme.
        setting: &'static str,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The database URL is neither PostgreSQL nor SQLite.
    #[error("unsupported database URL scheme in {0:?}: expected postgres:// or sqlite:")]
    UnsupportedUrl(String),
    /// The SQL budget store was asked for without a database URL.
    #[error("the SQL budget store needs a database URL")]
    MissingDatabase,
}

/// Where the budget counters live.
enum StoreChoice {
    Adapter(Arc<dyn BudgetStore>),
    Memory,
    Redis(String),
    RedisCluster(Vec<String>),
    Sql,
}

/// Every port a [`Spendgate`] runs on; the workers use the same ones.
#[derive(Clone)]
pub struct Ports {
    /// Budget counters (the hot path).
    pub store: Arc<dyn BudgetStore>,
    /// Community configuration.
    pub config: Arc<dyn ConfigProvider>,
    /// Tier overrides.
    pub tier_overrides: Arc<dyn TierOverrideRepo>,
    /// The shared tier-override cache.
    pub tier_cache: Arc<dyn TierCache>,
    /// The usage log.
    pub usage_log: Arc<dyn UsageLog>,
    /// Settlements on their way to the store and the log.
    pub finalize_queue: Arc<FinalizeQueue>,
    /// Dropped calls waiting for reconciliation.
    pub reconciliation: Arc<ReconciliationQueue>,
    /// Where `now` comes from.
    pub clock: Arc<dyn Clock>,
    /// Leases of singleton jobs (Redis, SQL or memory, like the store).
    pub lease: Arc<dyn Lease>,
    /// Request idempotency records (the Cycles protocol's same key, same
    /// body, same answer): on Redis beside the budget when the store is on
    /// Redis (no database round trip per Cycles call), else on the
    /// database when one is configured, so replicas share them; in memory
    /// otherwise.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The provider's usage look-up, for reconciliation; none configured
    /// means dropped holds are left to the reaper.
    pub usage_source: Option<Arc<dyn UsageSource>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// An embedded spendgate: the services over one set of adapters.
#[derive(Clone)]
pub struct Spendgate {
    budget: BudgetService,
    tiers: Arc<TierAccess>,
    ports: Ports,
}

impl std::fmt::Debug for Spendgate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spendgate")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Spendgate {
    /// A builder; with nothing set it builds on memory alone.
    pub fn builder() -> SpendgateBuilder {
        SpendgateBuilder::default()
    }

    /// Estimates, reserves, settles and reports budgets.
    pub fn budget(&self) -> &BudgetService {
        &self.budget
    }

    /// Tier access and tier overrides.
    pub fn tiers(&self) -> &TierAccess {
        &self.tiers
    }

    /// The ports this instance runs on.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Starts the background jobs on the current tokio runtime: reaper,
    /// config sync, finalize replay, drift monitor, idempotency purge, and
    /// reconciliation when a usage source is configured. Stop them with
    /// [`WorkerHandle::shutdown`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start_workers(&self, settings: WorkerSettings) -> WorkerHandle {
        let ports = &self.ports;
        let cancel = CancellationToken::new();
        let mut jobs: Vec<(Arc<dyn Job>, Schedule)> = vec![
            (
                Arc::new(ReaperJob::with_settings(
                    ports.store.clone(),
                    ports.config.clone(),
                    settings.reaper_settings,
                )),
                settings.reaper,
            ),
            (
                Arc::new(ConfigSyncJob::new(
                    ports.config.clone(),
                    self.budget.clone(),
                )),
                settings.config_sync,
            ),
            (
                Arc::new(FinalizeReplayJob::new(
                    self.budget.clone(),
                    settings.replay_batch,
                )),
                settings.finalize_replay,
            ),
            (
                Arc::new(DriftJob::new(
                    ports.store.clone(),
                    ports.usage_log.clone(),
                    ports.config.clone(),
                )),
                settings.drift,
            ),
            (
                Arc::new(
                    IdempotencyPurgeJob::new(
                        ports.idempotency.clone(),
                        settings.idempotency_purge_settings,
                    )
                    .stopped_by(cancel.clone()),
                ),
                settings.idempotency_purge,
            ),
        ];
        if let Some(source) = &ports.usage_source {
            jobs.push((
                Arc::new(ReconciliationJob::new(
                    ports.reconciliation.clone(),
                    source.clone(),
                    self.budget.clone(),
                    settings.reconciliation_settings,
                )),
                settings.reconciliation,
            ));
        }
        let lease = LeaseConfig {
            lease: ports.lease.clone(),
            holder: settings.holder,
            ttl: settings.lease_ttl,
        };
        WorkerHandle::start_with(jobs, ports.clock.clone(), Some(lease), cancel)
    }
}

/// When the background jobs run, and as whom.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Reaper: every 60 s.
    pub reaper: Schedule,
    /// How the reaper finds and reaps communities: index batches of 1,000,
    /// 4 reaps at once, a full sweep every 60th pass.
    pub reaper_settings: ReaperSettings,
    /// Config sync: every 5 min (and at start).
    pub config_sync: Schedule,
    /// Finalize replay: every second.
    pub finalize_replay: Schedule,
    /// Settlements replayed per pass: 1,000.
    pub replay_batch: u32,
    /// Reconciliation: every 5 s (each entry waits its own backoff).
    pub reconciliation: Schedule,
    /// Tries, backoff and batch of reconciliation.
    pub reconciliation_settings: ReconciliationSettings,
    /// Drift monitor: every 5 min.
    pub drift: Schedule,
    /// Idempotency purge: every 60 s.
    pub idempotency_purge: Schedule,
    /// Batch of the idempotency purge (a pass runs until nothing is due).
    pub idempotency_purge_settings: IdempotencyPurgeSettings,
    /// This process's lease holder token.
    pub holder: String,
    /// How long a singleton job's lease lives without renewal: 150 s, over
    /// two reaper intervals, so a stopped holder is replaced within it.
    pub lease_ttl: spendgate_domain::Ttl,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let every = |secs| Schedule::every(std::time::Duration::from_secs(secs));
        Self {
            reaper: every(60),
            reaper_settings: ReaperSettings::default(),
            config_sync: every(300),
            finalize_replay: every(1),
            replay_batch: 1_000,
            reconciliation: every(5),
            reconciliation_settings: ReconciliationSettings::default(),
            drift: every(300),
            idempotency_purge: every(60),
            idempotency_purge_settings: IdempotencyPurgeSettings::default(),
            holder: holder_token(),
            lease_ttl: spendgate_domain::Ttl::from_secs(150).unwrap_or(spendgate_domain::Ttl::DAY),
        }
    }
}

/// Builds a [`Spendgate`] from adapters or URLs.
///
/// * Budget store: [`SpendgateBuilder::store`], [`SpendgateBuilder::redis`],
///   [`SpendgateBuilder::redis_cluster`], [`SpendgateBuilder::sql_store`];
///   by default Redis when a Redis URL is set, else the SQL store when a
///   database is set, else memory.
/// * Database ([`SpendgateBuilder::database`], `postgres://…` or
///   `sqlite:…`): configuration, tier overrides, usage log, the finalize
///   and reconciliation queues, worker leases and idempotency records,
///   migrated at build. Without one, all of them are in memory. A store on
///   Redis (or Redis Cluster) keeps the tier cache, the worker leases and
///   the idempotency records on its own connection instead.
/// * Any port may be given directly; a port given wins over a URL.
#[must_use]
#[derive(Default)]
pub struct SpendgateBuilder {
    store: Option<StoreChoice>,
    redis_options: RedisOptions,
    database_url: Option<String>,
    config: Option<Arc<dyn ConfigProvider>>,
    tier_overrides: Option<Arc<dyn TierOverrideRepo>>,
    tier_cache: Option<Arc<dyn TierCache>>,
    usage_log: Option<Arc<dyn UsageLog>>,
    finalize_queue: Option<Arc<FinalizeQueue>>,
    reconciliation: Option<Arc<ReconciliationQueue>>,
    lease: Option<Arc<dyn Lease>>,
    idempotency: Option<Arc<dyn IdempotencyStore>>,
    usage_source: Option<Arc<dyn UsageSource>>,
    clock: Option<Arc<dyn Clock>>,
    policy: BudgetPolicy,
    prices: PriceTable,
    settings: BudgetSettings,
    freshness: ConfigFreshness,
    tier_timings: TierTimings,
}

impl std::fmt::Debug for SpendgateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendgateBuilder")
            .field("policy", &self.policy)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SpendgateBuilder {
    /// Uses this budget store.
    pub fn store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.store = Some(StoreChoice::Adapter(store));
        self
    }

    /// Keeps budget counters in process memory (nothing survives a
    /// restart).
    pub fn memory_store(mut self) -> Self {
        self.store = Some(StoreChoice::Memory);
        self
    }

    /// Puts budget counters on a standalone Redis (`redis://…`, or
    /// `rediss://…` with the `redis-tls` feature).
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.store = Some(StoreChoice::Redis(url.into()));
        self
    }

    /// Puts budget counters on a Redis Cluster, given some of its nodes.
    pub fn redis_cluster<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.store = Some(StoreChoice::RedisCluster(
            urls.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// TLS files for `rediss://` and the optional wait for replicas, for
    /// [`Self::redis`] and [`Self::redis_cluster`].
    pub fn redis_options(mut self, options: RedisOptions) -> Self {
        self.redis_options = options;
        self
    }

    /// Keeps budget counters in the database (PostgreSQL or SQLite).
    pub fn sql_store(mut self) -> Self {
        self.store = Some(StoreChoice::Sql);
        self
    }

    /// The database for configuration, tier overrides, the usage log and
    /// the finalize queue: `postgres://…` or `sqlite:path?mode=rwc`.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Uses this configuration provider.
    pub fn config(mut self, config: Arc<dyn ConfigProvider>) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses this tier-override repository.
    pub fn tier_overrides(mut self, repo: Arc<dyn TierOverrideRepo>) -> Self {
        self.tier_overrides = Some(repo);
        self
    }

    /// Uses this tier-override cache.
    pub fn tier_cache(mut self, cache: Arc<dyn TierCache>) -> Self {
        self.tier_cache = Some(cache);
        self
    }

    /// Uses this usage log.
    pub fn usage_log(mut self, log: Arc<dyn UsageLog>) -> Self {
        self.usage_log = Some(log);
        self
    }

    /// Uses this finalize queue.
    pub fn finalize_queue(mut self, queue: Arc<FinalizeQueue>) -> Self {
        self.finalize_queue = Some(queue);
        self
    }

    /// Uses this reconciliation queue.
    pub fn reconciliation_queue(mut self, queue: Arc<ReconciliationQueue>) -> Self {
        self.reconciliation = Some(queue);
        self
    }

    /// Uses this lease store for singleton jobs.
    pub fn lease(mut self, lease: Arc<dyn Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Uses this store of request idempotency records.
    pub fn idempotency(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = Some(store);
        self
    }

    /// Asks this provider usage look-up when reconciling dropped calls.
    pub fn usage_source(mut self, source: Arc<dyn UsageSource>) -> Self {
        self.usage_source = Some(source);
        self
    }

    /// Reads time from this clock (the system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The budget policy every store of the deployment shares.
    pub fn policy(mut self, policy: BudgetPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The base price table (communities' overrides apply on top).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// Hold TTL, in-flight lease, retry backoff, hand-over delay.
    pub fn settings(mut self, settings: BudgetSettings) -> Self {
        self.settings = settings;
        self
    }

    /// How long community configuration is cached.
    pub fn config_freshness(mut self, freshness: ConfigFreshness) -> Self {
        self.freshness = freshness;
        self
    }

    /// How long tier overrides are cached and remembered.
    pub fn tier_timings(mut self, timings: TierTimings) -> Self {
        self.tier_timings = timings;
        self
    }

    /// Connects, migrates and wires the services.
    ///
    /// # Errors
    /// [`BuildError`] naming what could not be set up.
    pub async fn build(self) -> Result<Spendgate, BuildError> {
        let clock = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let sql = match &self.database_url {
            Some(url) => Some(sql::open(url).await?),
            None => None,
        };
        let (store, redis) = self.open_store(sql.as_ref()).await?;
        let memory_config = Arc::new(MemoryConfig::with_clock(clock.clone()));
        let config: Arc<dyn ConfigProvider> = self
            .config
            .or_else(|| sql.as_ref().map(sql::Parts::config))
            .unwrap_or(memory_config);
        let tier_overrides: Arc<dyn TierOverrideRepo> = self
            .tier_overrides
            .or_else(|| sql.as_ref().map(sql::Parts::tier_overrides))
            .unwrap_or_else(|| Arc::new(MemoryTierOverrides::with_clock(clock.clone())));
        let (redis_cache, redis_lease, redis_idempotency) = match redis {
            Some(shared) => (
                Some(shared.tier_cache),
                Some(shared.lease),
                Some(shared.idempotency),
            ),
            None => (None, None, None),
        };
        let tier_cache: Arc<dyn TierCache> = self
            .tier_cache
            .or(redis_cache)
            .unwrap_or_else(|| Arc::new(MemoryTierCache::new(clock.clone())));
        let usage_log: Arc<dyn UsageLog> = self
            .usage_log
            .or_else(|| sql.as_ref().map(sql::Parts::usage_log))
            .unwrap_or_else(|| Arc::new(MemoryUsageLog::default()));
        let finalize_queue: Arc<FinalizeQueue> = self
            .finalize_queue
            .or_else(|| sql.as_ref().map(sql::Parts::finalize_queue))
            .unwrap_or_else(|| Arc::new(MemoryWorkQueue::new()));
        let reconciliation: Arc<ReconciliationQueue> = self
            .reconciliation
            .or_else(|| sql.as_ref().map(sql::Parts::reconciliation))
            .unwrap_or_else(|| Arc::new(MemoryWorkQueue::new()));
        let lease: Arc<dyn Lease> = self
            .lease
            .or(redis_lease)
            .or_else(|| sql.as_ref().map(sql::Parts::lease))
            .unwrap_or_else(|| Arc::new(MemoryLease::default()));
        // Shared by every replica either way: on Redis beside the budget
        // when the store is there (a Cycles call then pays no database
        // round trip for them), else on the database when there is one.
        let idempotency: Arc<dyn IdempotencyStore> = self
            .idempotency
            .or(redis_idempotency)
            .or_else(|| sql.as_ref().map(sql::Parts::idempotency))
            .unwrap_or_else(|| Arc::new(MemoryIdempotency::new()));
        let ports = Ports {
            store,
            config,
            tier_overrides,
            tier_cache,
            usage_log,
            finalize_queue,
            reconciliation,
            clock,
            lease,
            idempotency,
            usage_source: self.usage_source,
        };
        let tiers = Arc::new(TierAccess::new(
            ports.tier_overrides.clone(),
            ports.tier_cache.clone(),
            ports.clock.clone(),
            self.tier_timings,
        ));
        let budget = BudgetService::new(Core {
            store: ports.store.clone(),
            config: Arc::new(ConfigCache::new(
                ports.config.clone(),
                ports.clock.clone(),
                self.freshness,
            )),
            tiers: tiers.clone(),
            usage_log: ports.usage_log.clone(),
            finalize_queue: ports.finalize_queue.clone(),
            reconciliation: ports.reconciliation.clone(),
            clock: ports.clock.clone(),
            prices: self.prices,
            settings: self.settings,
            marker_ttl: self.policy.marker_ttl(),
            reconciles: ports.usage_source.is_some(),
            lost_limits: Default::default(),
        });
        Ok(Spendgate {
            budget,
            tiers,
            ports,
        })
    }

    /// The budget store, and a Redis tier cache, lease store and
    /// idempotency store on the same connection when the store is on Redis.
    async fn open_store(
        &self,
        sql: Option<&sql::Parts>,
    ) -> Result<(Arc<dyn BudgetStore>, Option<RedisShared>), BuildError> {
        let choice = match &self.store {
            Some(StoreChoice::Adapter(store)) => return Ok((store.clone(), None)),
            Some(choice) => choice,
            None if sql.is_some() => &StoreChoice::Sql,
            None => &StoreChoice::Memory,
        };
        match choice {
            StoreChoice::Adapter(store) => Ok((store.clone(), None)),
            StoreChoice::Memory => Ok((Arc::new(MemoryBudgetStore::new(self.policy)), None)),
            StoreChoice::Sql => match sql {
                Some(parts) => Ok((parts.store(self.policy), None)),
                None => Err(BuildError::MissingDatabase),
            },
            StoreChoice::Redis(url) => {
                redis::standalone(url, self.policy, &self.redis_options).await
            }
            StoreChoice::RedisCluster(urls) => {
                redis::cluster(urls, self.policy, &self.redis_options).await
            }
        }
    }
}

/// What shares the Redis connection with the store.
struct RedisShared {
    tier_cache: Arc<dyn TierCache>,
    lease: Arc<dyn Lease>,
    idempotency: Arc<dyn IdempotencyStore>,
}
type RedisParts = (Arc<dyn BudgetStore>, Option<RedisShared>);

#[cfg(feature = "redis")]
mod redis;
mod redis_options;

pub use redis_options::RedisOptions;

#[cfg(not(feature = "redis"))]
mod redis {
    use spendgate_domain::BudgetPolicy;

    use super::{BuildError, RedisOptions, RedisParts};

    const DISABLED: BuildError = BuildError::FeatureDisabled {
        setting: "a Redis URL",
        feature: "redis",
    };

    pub(super) async fn standalone(
        _: &str,
        _: BudgetPolicy,
        _: &RedisOptions,
    ) -> Result<RedisParts, BuildError> {
        Err(DISABLED)
    }

    pub(super) async fn cluster(
        _: &[String],
        _: BudgetPolicy,
        _: &RedisOptions,
    ) -> Result<RedisParts, BuildError> {
        Err(DISABLED)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
mod sql {
    use std::sync::Arc;

    use spendgate_domain::BudgetPolicy;
    use spendgate_ports::{
        BudgetStore, ConfigProvider, FinalizeQueue, IdempotencyStore, Lease, ReconciliationQueue,
        TierOverrideRepo, UsageLog,
    };

    use super::BuildError;

    /// Never built: without the `postgres` and `sqlite` features there is
    /// no database.
    pub(super) enum Parts {}

    pub(super) async fn open(url: &str) -> Result<Parts, BuildError> {
        let setting = if url.starts_with("sqlite:") {
            ("a sqlite: database URL", "sqlite")
        } else {
            ("a postgres:// database URL", "postgres")
        };
        Err(BuildError::FeatureDisabled {
            setting: setting.0,
            feature: setting.1,
        })
    }

    impl Parts {
        pub(super) fn config(&self) -> Arc<dyn ConfigProvider> {
            match *self {}
        }

        pub(super) fn tier_overrides(&self) -> Arc<dyn TierOverrideRepo> {
            match *self {}
        }

        pub(super) fn usage_log(&self) -> Arc<dyn UsageLog> {
            match *self {}
        }

        pub(super) fn finalize_queue(&self) -> Arc<FinalizeQueue> {
            match *self {}
        }

        pub(super) fn lease(&self) -> Arc<dyn Lease> {
            match *self {}
        }

        pub(super) fn reconciliation(&self) -> Arc<ReconciliationQueue> {
            match *self {}
        }

        pub(super) fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
            match *self {}
        }

        pub(super) fn store(&self, _: BudgetPolicy) -> Arc<dyn BudgetStore> {
            match *self {}
        }
    }
}
