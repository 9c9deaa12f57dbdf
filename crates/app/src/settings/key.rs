//! The one table of setting keys: each key's TOML name, environment
//! variable and flag, so the three layers cannot drift apart.

/// A setting the program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Key {
    DatabaseUrl,
    DataFile,
    RedisUrl,
    RedisClusterUrls,
    ProviderUsageUrl,
    LogLevel,
    HttpBind,
    HttpTokens,
    HttpCyclesKeys,
    HttpCyclesUserLevel,
    HttpAllowUnauthenticatedLoopback,
    HttpBodyLimitBytes,
    HttpRequestTimeoutMs,
    HttpHeaderReadTimeoutMs,
    HttpIdleTimeoutMs,
    HttpMaxConnections,
    HttpMetricsToken,
    WorkersReaperSecs,
    WorkersConfigSyncSecs,
    WorkersFinalizeReplaySecs,
    WorkersReconciliationSecs,
    WorkersDriftSecs,
    RedisTlsCaFile,
    RedisTlsCertFile,
    RedisTlsKeyFile,
    RedisWaitReplicas,
    RedisWaitTimeoutMs,
    RedisWaitConnections,
    WorkersReconciliationGiveUp,
    BudgetFallbackQueueCapacity,
}

impl Key {
    /// Every key, in the order `spendgate config` prints them.
    pub(super) const ALL: [Key; 30] = [
        Key::DatabaseUrl,
        Key::DataFile,
        Key::RedisUrl,
        Key::RedisClusterUrls,
        Key::ProviderUsageUrl,
        Key::LogLevel,
        Key::HttpBind,
        Key::HttpTokens,
        Key::HttpCyclesKeys,
        Key::HttpCyclesUserLevel,
        Key::HttpAllowUnauthenticatedLoopback,
        Key::HttpBodyLimitBytes,
        Key::HttpRequestTimeoutMs,
        Key::HttpHeaderReadTimeoutMs,
        Key::HttpIdleTimeoutMs,
        Key::HttpMaxConnections,
        Key::HttpMetricsToken,
        Key::WorkersReaperSecs,
        Key::WorkersConfigSyncSecs,
        Key::WorkersFinalizeReplaySecs,
        Key::WorkersReconciliationSecs,
        Key::WorkersDriftSecs,
        Key::RedisTlsCaFile,
        Key::RedisTlsCertFile,
        Key::RedisTlsKeyFile,
        Key::RedisWaitReplicas,
        Key::RedisWaitTimeoutMs,
        Key::RedisWaitConnections,
        Key::WorkersReconciliationGiveUp,
        Key::BudgetFallbackQueueCapacity,
    ];

    /// The TOML key (dotted inside a section).
    pub(super) fn name(self) -> &'static str {
        self.row().0
    }

    /// The environment variable.
    pub(super) fn env(self) -> &'static str {
        self.row().1
    }

    /// The command-line flag.
    pub(super) fn flag(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Key::DatabaseUrl => ("database_url", "SPENDGATE_DATABASE_URL", "--database-url"),
            Key::DataFile => ("data_file", "SPENDGATE_DATA_FILE", "--data-file"),
            Key::RedisUrl => ("redis_url", "SPENDGATE_REDIS_URL", "--redis-url"),
            Key::RedisClusterUrls => (
                "redis_cluster_urls",
                "SPENDGATE_REDIS_CLUSTER_URLS",
                "--redis-cluster-urls",
            ),
            Key::ProviderUsageUrl => (
                "provider_usage_url",
                "SPENDGATE_PROVIDER_USAGE_URL",
                "--provider-usage-url",
            ),
            Key::LogLevel => ("log_level", "SPENDGATE_LOG_LEVEL", "--log-level"),
            Key::HttpBind => ("http.bind", "SPENDGATE_HTTP_BIND", "--bind"),
            Key::HttpTokens => ("http.tokens", "SPENDGATE_API_TOKENS", "--api-token"),
            Key::HttpCyclesKeys => ("http.cycles_keys", "SPENDGATE_CYCLES_KEYS", "--cycles-key"),
            Key::HttpCyclesUserLevel => (
                "http.cycles_user_level",
                "SPENDGATE_CYCLES_USER_LEVEL",
                "--cycles-user-level",
            ),
            Key::HttpAllowUnauthenticatedLoopback => (
                "http.allow_unauthenticated_loopback",
                "SPENDGATE_ALLOW_UNAUTHENTICATED_LOOPBACK",
                "--allow-unauthenticated-loopback",
            ),
            Key::HttpBodyLimitBytes => (
                "http.body_limit_bytes",
                "SPENDGATE_HTTP_BODY_LIMIT_BYTES",
                "--body-limit-bytes",
            ),
            Key::HttpRequestTimeoutMs => (
                "http.request_timeout_ms",
                "SPENDGATE_HTTP_REQUEST_TIMEOUT_MS",
                "--request-timeout-ms",
            ),
            Key::HttpHeaderReadTimeoutMs => (
                "http.header_read_timeout_ms",
                "SPENDGATE_HTTP_HEADER_READ_TIMEOUT_MS",
                "--header-read-timeout-ms",
            ),
            Key::HttpIdleTimeoutMs => (
                "http.idle_timeout_ms",
                "SPENDGATE_HTTP_IDLE_TIMEOUT_MS",
                "--idle-timeout-ms",
            ),
            Key::HttpMaxConnections => (
                "http.max_connections",
                "SPENDGATE_HTTP_MAX_CONNECTIONS",
                "--max-connections",
            ),
            Key::HttpMetricsToken => (
                "http.metrics_token",
                "SPENDGATE_HTTP_METRICS_TOKEN",
                "--metrics-token",
            ),
            Key::WorkersReaperSecs => (
                "workers.reaper_secs",
                "SPENDGATE_WORKERS_REAPER_SECS",
                "--reaper-secs",
            ),
            Key::WorkersConfigSyncSecs => (
                "workers.config_sync_secs",
                "SPENDGATE_WORKERS_CONFIG_SYNC_SECS",
                "--config-sync-secs",
            ),
            Key::WorkersFinalizeReplaySecs => (
                "workers.finalize_replay_secs",
                "SPENDGATE_WORKERS_FINALIZE_REPLAY_SECS",
                "--finalize-replay-secs",
            ),
            Key::WorkersReconciliationSecs => (
                "workers.reconciliation_secs",
                "SPENDGATE_WORKERS_RECONCILIATION_SECS",
                "--reconciliation-secs",
            ),
            Key::WorkersDriftSecs => (
                "workers.drift_secs",
                "SPENDGATE_WORKERS_DRIFT_SECS",
                "--drift-secs",
            ),
            Key::RedisTlsCaFile => (
                "redis.tls_ca_file",
                "SPENDGATE_REDIS_TLS_CA_FILE",
                "--redis-tls-ca-file",
            ),
            Key::RedisTlsCertFile => (
                "redis.tls_cert_file",
                "SPENDGATE_REDIS_TLS_CERT_FILE",
                "--redis-tls-cert-file",
            ),
            Key::RedisTlsKeyFile => (
                "redis.tls_key_file",
                "SPENDGATE_REDIS_TLS_KEY_FILE",
                "--redis-tls-key-file",
            ),
            Key::RedisWaitReplicas => (
                "redis.wait_replicas",
                "SPENDGATE_REDIS_WAIT_REPLICAS",
                "--redis-wait-replicas",
            ),
            Key::RedisWaitTimeoutMs => (
                "redis.wait_timeout_ms",
                "SPENDGATE_REDIS_WAIT_TIMEOUT_MS",
                "--redis-wait-timeout-ms",
            ),
            Key::RedisWaitConnections => (
                "redis.wait_connections",
                "SPENDGATE_REDIS_WAIT_CONNECTIONS",
                "--redis-wait-connections",
            ),
            Key::WorkersReconciliationGiveUp => (
                "workers.reconciliation_give_up",
                "SPENDGATE_WORKERS_RECONCILIATION_GIVE_UP",
                "--reconciliation-give-up",
            ),
            Key::BudgetFallbackQueueCapacity => (
                "budget.fallback_queue_capacity",
                "SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY",
                "--fallback-queue-capacity",
            ),
        }
    }

    /// Whether the value is a list (TOML array, comma-separated variable,
    /// repeated or comma-separated flag).
    pub(super) fn is_list(self) -> bool {
        matches!(
            self,
            Key::RedisClusterUrls | Key::HttpTokens | Key::HttpCyclesKeys
        )
    }

    /// What a TOML value of this key must be, for errors.
    pub(super) fn expected(self) -> &'static str {
        match self {
            Key::RedisClusterUrls | Key::HttpTokens | Key::HttpCyclesKeys => "an array of strings",
            Key::HttpAllowUnauthenticatedLoopback => "a boolean",
            Key::HttpBodyLimitBytes
            | Key::HttpRequestTimeoutMs
            | Key::HttpHeaderReadTimeoutMs
            | Key::HttpIdleTimeoutMs
            | Key::HttpMaxConnections
            | Key::WorkersReaperSecs
            | Key::WorkersConfigSyncSecs
            | Key::WorkersFinalizeReplaySecs
            | Key::WorkersReconciliationSecs
            | Key::WorkersDriftSecs
            | Key::RedisWaitReplicas
            | Key::RedisWaitTimeoutMs
            | Key::RedisWaitConnections
            | Key::BudgetFallbackQueueCapacity => "an integer",
            _ => "a string",
        }
    }

    /// The key named `name` in the TOML file.
    pub(super) fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether `name` is a TOML section (`[http]`, `[workers]`, `[redis]`,
    /// `[budget]`).
    pub(super) fn is_section(name: &str) -> bool {
        matches!(name, "http" | "workers" | "redis" | "budget")
    }
}
