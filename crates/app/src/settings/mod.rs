//! The `spendgate` program's configuration: one [`Settings`] from four
//! layers, so every deployment style (flags in a unit file, variables in a
//! container, a checked-in TOML file) works and the winner is predictable.
//!
//! Precedence, highest first:
//!
//! 1. command-line flags (`--bind 0.0.0.0:8080`);
//! 2. environment variables (`SPENDGATE_HTTP_BIND`; empty ones count as
//!    unset);
//! 3. the TOML file named by `--config` or `SPENDGATE_CONFIG` (no file is
//!    read unless one is named; a named file that cannot be read is an
//!    error);
//! 4. the defaults.
//!
//! A bad value stops start-up with a [`SettingsError`] naming the setting
//! and where it came from. `database_url` and `data_file` both choose the
//! database: the one from the higher layer wins, and `database_url` on a
//! tie.
//!
//! | key | variable | flag | default |
//! |---|---|---|---|
//! | `database_url` | `SPENDGATE_DATABASE_URL` | `--database-url` | `sqlite://<data_file>?mode=rwc` |
//! | `data_file` | `SPENDGATE_DATA_FILE` | `--data-file` | `./spendgate.db` |
//! | `redis_url` | `SPENDGATE_REDIS_URL` | `--redis-url` | none |
//! | `redis_cluster_urls` | `SPENDGATE_REDIS_CLUSTER_URLS` | `--redis-cluster-urls` | none |
//! | `provider_usage_url` | `SPENDGATE_PROVIDER_USAGE_URL` | `--provider-usage-url` | none |
//! | `log_level` | `SPENDGATE_LOG_LEVEL` | `--log-level` | `info` for `serve`, else `warn` |
//! | `http.bind` | `SPENDGATE_HTTP_BIND` | `--bind` | `127.0.0.1:8080` |
//! | `http.tokens` | `SPENDGATE_API_TOKENS` | `--api-token` | none |
//! | `http.cycles_keys` | `SPENDGATE_CYCLES_KEYS` | `--cycles-key` | none |
//! | `http.cycles_user_level` | `SPENDGATE_CYCLES_USER_LEVEL` | `--cycles-user-level` | `agent` |
//! | `http.allow_unauthenticated_loopback` | `SPENDGATE_ALLOW_UNAUTHENTICATED_LOOPBACK` | `--allow-unauthenticated-loopback` | `false` |
//! | `http.body_limit_bytes` | `SPENDGATE_HTTP_BODY_LIMIT_BYTES` | `--body-limit-bytes` | `65536` |
//! | `http.request_timeout_ms` | `SPENDGATE_HTTP_REQUEST_TIMEOUT_MS` | `--request-timeout-ms` | `10000` |
//! | `http.header_read_timeout_ms` | `SPENDGATE_HTTP_HEADER_READ_TIMEOUT_MS` | `--header-read-timeout-ms` | `10000` |
//! | `http.idle_timeout_ms` | `SPENDGATE_HTTP_IDLE_TIMEOUT_MS` | `--idle-timeout-ms` | `60000` |
//! | `http.max_connections` | `SPENDGATE_HTTP_MAX_CONNECTIONS` | `--max-connections` | `1024` |
//! | `http.metrics_token` | `SPENDGATE_HTTP_METRICS_TOKEN` | `--metrics-token` | none (`/metrics` is open) |
//! | `workers.reaper_secs` | `SPENDGATE_WORKERS_REAPER_SECS` | `--reaper-secs` | `60` |
//! | `workers.config_sync_secs` | `SPENDGATE_WORKERS_CONFIG_SYNC_SECS` | `--config-sync-secs` | `300` |
//! | `workers.finalize_replay_secs` | `SPENDGATE_WORKERS_FINALIZE_REPLAY_SECS` | `--finalize-replay-secs` | `1` |
//! | `workers.reconciliation_secs` | `SPENDGATE_WORKERS_RECONCILIATION_SECS` | `--reconciliation-secs` | `5` |
//! | `workers.drift_secs` | `SPENDGATE_WORKERS_DRIFT_SECS` | `--drift-secs` | `300` |
//! | `workers.reconciliation_give_up` | `SPENDGATE_WORKERS_RECONCILIATION_GIVE_UP` | `--reconciliation-give-up` | `charge-estimate` |
//! | `budget.fallback_queue_capacity` | `SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY` | `--fallback-queue-capacity` | `100000` |
//! | `redis.tls_ca_file` | `SPENDGATE_REDIS_TLS_CA_FILE` | `--redis-tls-ca-file` | none (the system's trust store) |
//! | `redis.tls_cert_file` | `SPENDGATE_REDIS_TLS_CERT_FILE` | `--redis-tls-cert-file` | none |
//! | `redis.tls_key_file` | `SPENDGATE_REDIS_TLS_KEY_FILE` | `--redis-tls-key-file` | none |
//! | `redis.wait_replicas` | `SPENDGATE_REDIS_WAIT_REPLICAS` | `--redis-wait-replicas` | `0` (off) |
//! | `redis.wait_timeout_ms` | `SPENDGATE_REDIS_WAIT_TIMEOUT_MS` | `--redis-wait-timeout-ms` | `100` |
//! | `redis.wait_connections` | `SPENDGATE_REDIS_WAIT_CONNECTIONS` | `--redis-wait-connections` | `16` |
//!
//! A token is `[role=]secret[=community1|community2]`, the role
//! `operator` (configures and spends) or `tenant` (spends and reads):
//! `operator=secret` acts for every community, `operator=secret=c1|c2` and
//! `tenant=secret=c1|c2` for those listed. Without a role, as before roles
//! existed, `secret` is an operator for every community and
//! `secret=c1|c2` a tenant of those listed. The variable takes tokens
//! comma-separated, the flag repeated. A Cycles key is `secret=tenant`:
//! each acts for exactly one tenant (community), the protocol's rule, and
//! is a tenant's key (no Cycles route changes configuration); the user level is the subject level charged as
//! spendgate's user (`workspace`, `app`, `workflow`, `agent`, `toolset`).
//! The `[redis]` keys are TLS files for `rediss://` URLs (a private CA, a
//! client certificate and key for mutual TLS) and the optional wait for
//! replicas after each budget write (see [`RedisOptions`]). The last two
//! keys say what happens when a part cannot answer for long (see
//! [`RecoverySettings`]).

mod cycles;
mod key;
mod recovery;
mod redis;
mod source;
#[cfg(test)]
mod tests;
mod tokens;
mod value;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use spendgate_domain::CommunityId;

use crate::builder::{RedisOptions, WorkerSettings};
use crate::inbound::cycles::{CyclesKey, UserLevel};
use crate::inbound::http::{Role, Secret};
use crate::services::budget::BudgetSettings;
use crate::workers::ReconciliationSettings;
use crate::workers::Schedule;

use key::Key;
pub use recovery::{RecoverySettings, RedactedBudget, give_up_name};
pub use redis::RedactedRedis;
pub use source::Origin;
use source::{Layer, Layers, Raw};
pub use spendgate_ports::redact_url;
use tokens::parse_tokens;
use value::{
    invalid, optional, parse_bind, parse_bool, parse_cluster_urls, parse_data_file,
    parse_database_url, parse_http_url, parse_redis_url, positive, sqlite_url,
};

/// The environment variable naming the TOML file.
pub const CONFIG_ENV: &str = "SPENDGATE_CONFIG";
/// The embedded database file when nothing else is configured.
pub const DEFAULT_DATA_FILE: &str = "./spendgate.db";
/// Where the HTTP API listens by default: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// The largest request body accepted by default (64 KiB).
pub const DEFAULT_BODY_LIMIT_BYTES: u64 = 64 * 1024;
/// How long one request may take by default (10 s).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long a client may take to send a request head by default (10 s).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a kept-alive connection may sit idle by default (60 s).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// How many connections the server keeps open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
/// The shortest API token secret accepted: short secrets are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the configuration could not be loaded or used. Every variant names
/// the setting and, where there is one, the flag, variable or file it came
/// from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A value does not parse or breaks its setting's rule.
    #[error("invalid {key} from {origin}: {message}")]
    Invalid {
        /// The setting (its TOML key).
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong with it.
        message: String,
    },
    /// Two settings that exclude each other are both set.
    #[error(
        "{first} (from {first_origin}) and {second} (from {second_origin}) are both set: {message}"
    )]
    Conflict {
        /// One setting.
        first: &'static str,
        /// Where it came from.
        first_origin: Box<Origin>,
        /// The other.
        second: &'static str,
        /// Where it came from.
        second_origin: Box<Origin>,
        /// What to do about it.
        message: &'static str,
    },
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {} is not valid TOML: {source}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The configuration file has a key spendgate does not know (a typo
    /// would otherwise be silently ignored).
    #[error("config file {} has unknown key {key:?}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// `serve` without API tokens is only allowed on loopback, and only
    /// when asked for.
    #[error("{0}")]
    Unauthenticated(String),
}

/// The values given on the command line, before precedence is applied:
/// what the CLI's flags fill in (`None` or empty when a flag is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // one field per row of the module's key table
pub struct FlagValues {
    pub config: Option<PathBuf>,
    pub database_url: Option<String>,
    pub data_file: Option<String>,
    pub redis_url: Option<String>,
    pub redis_cluster_urls: Vec<String>,
    pub provider_usage_url: Option<String>,
    pub log_level: Option<String>,
    pub bind: Option<String>,
    pub api_tokens: Vec<String>,
    pub cycles_keys: Vec<String>,
    pub cycles_user_level: Option<String>,
    /// Presence flag: `true` when given, else not set by flag.
    pub allow_unauthenticated_loopback: bool,
    pub body_limit_bytes: Option<String>,
    pub request_timeout_ms: Option<String>,
    pub header_read_timeout_ms: Option<String>,
    pub idle_timeout_ms: Option<String>,
    pub max_connections: Option<String>,
    pub metrics_token: Option<String>,
    pub reaper_secs: Option<String>,
    pub config_sync_secs: Option<String>,
    pub finalize_replay_secs: Option<String>,
    pub reconciliation_secs: Option<String>,
    pub drift_secs: Option<String>,
    pub redis_tls_ca_file: Option<String>,
    pub redis_tls_cert_file: Option<String>,
    pub redis_tls_key_file: Option<String>,
    pub redis_wait_replicas: Option<String>,
    pub redis_wait_timeout_ms: Option<String>,
    pub redis_wait_connections: Option<String>,
    pub reconciliation_give_up: Option<String>,
    pub fallback_queue_capacity: Option<String>,
}

impl FlagValues {
    fn layer(&self) -> Layer {
        let mut layer = Layer::default();
        let mut one = |key: Key, value: &Option<String>| {
            if let Some(value) = value {
                layer.0.insert(key, Raw::One(value.clone()));
            }
        };
        one(Key::DatabaseUrl, &self.database_url);
        one(Key::DataFile, &self.data_file);
        one(Key::RedisUrl, &self.redis_url);
        one(Key::ProviderUsageUrl, &self.provider_usage_url);
        one(Key::LogLevel, &self.log_level);
        one(Key::HttpBind, &self.bind);
        one(Key::HttpCyclesUserLevel, &self.cycles_user_level);
        one(Key::HttpBodyLimitBytes, &self.body_limit_bytes);
        one(Key::HttpRequestTimeoutMs, &self.request_timeout_ms);
        one(Key::HttpHeaderReadTimeoutMs, &self.header_read_timeout_ms);
        one(Key::HttpIdleTimeoutMs, &self.idle_timeout_ms);
        one(Key::HttpMaxConnections, &self.max_connections);
        one(Key::HttpMetricsToken, &self.metrics_token);
        one(Key::WorkersReaperSecs, &self.reaper_secs);
        one(Key::WorkersConfigSyncSecs, &self.config_sync_secs);
        one(Key::WorkersFinalizeReplaySecs, &self.finalize_replay_secs);
        one(Key::WorkersReconciliationSecs, &self.reconciliation_secs);
        one(Key::WorkersDriftSecs, &self.drift_secs);
        one(Key::RedisTlsCaFile, &self.redis_tls_ca_file);
        one(Key::RedisTlsCertFile, &self.redis_tls_cert_file);
        one(Key::RedisTlsKeyFile, &self.redis_tls_key_file);
        one(Key::RedisWaitReplicas, &self.redis_wait_replicas);
        one(Key::RedisWaitTimeoutMs, &self.redis_wait_timeout_ms);
        one(Key::RedisWaitConnections, &self.redis_wait_connections);
        one(
            Key::WorkersReconciliationGiveUp,
            &self.reconciliation_give_up,
        );
        one(
            Key::BudgetFallbackQueueCapacity,
            &self.fallback_queue_capacity,
        );
        if !self.redis_cluster_urls.is_empty() {
            // Each flag may itself be comma-separated.
            let items = self
                .redis_cluster_urls
                .iter()
                .flat_map(|v| Raw::One(v.clone()).items())
                .collect();
            layer.0.insert(Key::RedisClusterUrls, Raw::List(items));
        }
        if !self.api_tokens.is_empty() {
            layer
                .0
                .insert(Key::HttpTokens, Raw::List(self.api_tokens.clone()));
        }
        if !self.cycles_keys.is_empty() {
            layer
                .0
                .insert(Key::HttpCyclesKeys, Raw::List(self.cycles_keys.clone()));
        }
        if self.allow_unauthenticated_loopback {
            layer
                .0
                .insert(Key::HttpAllowUnauthenticatedLoopback, Raw::Bool(true));
        }
        layer
    }
}

/// How much the program logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the usual levels
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// An API token of the HTTP API: the secret a client sends, its role, and
/// the communities it may act for (all when `None`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSetting {
    /// The bearer secret. Never printed: [`fmt::Debug`] and
    /// `spendgate config` show `***`.
    pub secret: String,
    /// What the token may do.
    pub role: Role,
    /// The communities the token is limited to; `None` means every one.
    pub communities: Option<Vec<CommunityId>>,
}

impl fmt::Debug for TokenSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSetting")
            .field("secret", &"***")
            .field("role", &self.role)
            .field("communities", &self.communities)
            .finish()
    }
}

impl TokenSetting {
    /// `operator=***`, `operator=***=c1|c2` or `tenant=***=c1|c2`: the
    /// token as printed configuration shows it, in the explicit syntax.
    pub fn redacted(&self) -> String {
        match &self.communities {
            None => format!("{}=***", self.role),
            Some(list) => {
                let names: Vec<&str> = list.iter().map(CommunityId::as_str).collect();
                format!("{}=***={}", self.role, names.join("|"))
            }
        }
    }
}

/// The HTTP API's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where the API listens.
    pub bind: SocketAddr,
    /// Accepted API tokens; none means unauthenticated (loopback only).
    pub tokens: Vec<TokenSetting>,
    /// The Cycles protocol's keys, each bound to one tenant; none means
    /// the `/v1` routes answer 401.
    pub cycles_keys: Vec<CyclesKey>,
    /// The subject level the Cycles routes charge as spendgate's user.
    pub cycles_user_level: UserLevel,
    /// Whether `serve` may run without tokens (only on a loopback bind).
    pub allow_unauthenticated_loopback: bool,
    /// The largest request body accepted.
    pub body_limit_bytes: u64,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// How many connections are open at once at most.
    pub max_connections: u32,
    /// The bearer secret `/metrics` asks for; `None` leaves it open.
    pub metrics_token: Option<Secret>,
}

/// How often each background job runs (see [`WorkerSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerIntervals {
    /// Reaper.
    pub reaper: Duration,
    /// Config sync.
    pub config_sync: Duration,
    /// Finalize replay.
    pub finalize_replay: Duration,
    /// Reconciliation.
    pub reconciliation: Duration,
    /// Drift monitor.
    pub drift: Duration,
}

/// The program's effective configuration, after precedence and checks.
/// Its `Debug` output is the redacted one: settings end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The database: `postgres://…` or `sqlite:…`.
    pub database_url: String,
    /// The SQLite file behind the default database URL (informational when
    /// `database_url` was given).
    pub data_file: String,
    /// A standalone Redis for the hot path.
    pub redis_url: Option<String>,
    /// Nodes of a Redis Cluster for the hot path.
    pub redis_cluster_urls: Vec<String>,
    /// TLS files and the wait for replicas of either Redis shape.
    pub redis: RedisOptions,
    /// The provider's usage endpoint, for reconciliation.
    pub provider_usage_url: Option<String>,
    /// How much to log; `None` (unset) means `info` for `serve` and `warn`
    /// for one-shot commands, whose output should not drown in log lines.
    pub log_level: Option<LogLevel>,
    /// The HTTP API.
    pub http: HttpSettings,
    /// The background jobs' intervals.
    pub workers: WorkerIntervals,
    /// What becomes of dropped calls the provider never reports and of
    /// settlements while the database is down.
    pub recovery: RecoverySettings,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl Settings {
    /// Loads the configuration from `flags`, the environment read through
    /// `env` (a closure, so tests need not touch the process environment),
    /// and the file named by `flags.config` or [`CONFIG_ENV`].
    ///
    /// # Errors
    /// [`SettingsError`] for the first bad value, naming where it came
    /// from.
    pub fn load(
        flags: &FlagValues,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let config_path = flags.config.clone().or_else(|| {
            env(CONFIG_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
        });
        let file = match config_path {
            Some(path) => {
                let layer = source::file_layer(&path)?;
                Some((path, layer))
            }
            None => None,
        };
        let layers = Layers {
            flags: flags.layer(),
            env: source::env_layer(env),
            file,
        };
        Self::from_layers(&layers)
    }

    fn from_layers(layers: &Layers) -> Result<Self, SettingsError> {
        let data_file = match layers.get(Key::DataFile) {
            Some((raw, origin)) => parse_data_file(&raw.text(), origin)?,
            None => DEFAULT_DATA_FILE.to_owned(),
        };
        let data_file_origin = layers.get(Key::DataFile).map(|(_, o)| o);
        let database_url = match layers.get(Key::DatabaseUrl) {
            Some((raw, origin))
                if data_file_origin
                    .as_ref()
                    .is_none_or(|d| origin.rank() >= d.rank()) =>
            {
                parse_database_url(&raw.text(), origin)?
            }
            _ => sqlite_url(&data_file),
        };
        let redis_url = optional(layers, Key::RedisUrl, parse_redis_url)?;
        let redis_cluster_urls = match layers.get(Key::RedisClusterUrls) {
            Some((raw, origin)) => parse_cluster_urls(&raw.items(), origin)?,
            None => Vec::new(),
        };
        if let (Some((_, first_origin)), Some((_, second_origin))) =
            (layers.get(Key::RedisUrl), layers.get(Key::RedisClusterUrls))
        {
            return Err(SettingsError::Conflict {
                first: Key::RedisUrl.name(),
                first_origin: Box::new(first_origin),
                second: Key::RedisClusterUrls.name(),
                second_origin: Box::new(second_origin),
                message: "the hot path is on one Redis or on one cluster: set only one",
            });
        }
        let redis = redis::parse(layers)?;
        let provider_usage_url = optional(layers, Key::ProviderUsageUrl, parse_http_url)?;
        let log_level = match layers.get(Key::LogLevel) {
            Some((raw, origin)) => Some(LogLevel::parse(&raw.text()).ok_or_else(|| {
                invalid(
                    Key::LogLevel,
                    origin,
                    format!(
                        "{:?} is not one of off, error, warn, info, debug, trace",
                        raw.text()
                    ),
                )
            })?),
            None => None,
        };
        let bind = match layers.get(Key::HttpBind) {
            Some((raw, origin)) => parse_bind(&raw.text(), origin)?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let tokens = match layers.get(Key::HttpTokens) {
            Some((raw, origin)) => parse_tokens(&raw.items(), origin)?,
            None => Vec::new(),
        };
        let cycles_keys = match layers.get(Key::HttpCyclesKeys) {
            Some((raw, origin)) => cycles::parse_keys(&raw.items(), origin)?,
            None => Vec::new(),
        };
        let cycles_user_level = match layers.get(Key::HttpCyclesUserLevel) {
            Some((raw, origin)) => cycles::parse_user_level(&raw.text(), origin)?,
            None => UserLevel::default(),
        };
        let allow_unauthenticated_loopback = match layers.get(Key::HttpAllowUnauthenticatedLoopback)
        {
            Some((raw, origin)) => parse_bool(Key::HttpAllowUnauthenticatedLoopback, raw, origin)?,
            None => false,
        };
        let body_limit_bytes = positive(layers, Key::HttpBodyLimitBytes, DEFAULT_BODY_LIMIT_BYTES)?;
        let request_timeout_ms = positive(
            layers,
            Key::HttpRequestTimeoutMs,
            DEFAULT_REQUEST_TIMEOUT_MS,
        )?;
        let ms = |key, default| positive(layers, key, default).map(Duration::from_millis);
        let header_read_timeout = ms(Key::HttpHeaderReadTimeoutMs, DEFAULT_HEADER_READ_TIMEOUT_MS)?;
        let idle_timeout = ms(Key::HttpIdleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS)?;
        let max_connections = positive(layers, Key::HttpMaxConnections, DEFAULT_MAX_CONNECTIONS)?;
        let max_connections = u32::try_from(max_connections).map_err(|_| {
            let origin = layers
                .get(Key::HttpMaxConnections)
                .map_or(Origin::Default, |(_, o)| o);
            invalid(
                Key::HttpMaxConnections,
                origin,
                format!("{max_connections} is larger than {}", u32::MAX),
            )
        })?;
        let metrics_token = match layers.get(Key::HttpMetricsToken) {
            Some((raw, origin)) => Some(Secret::new(tokens::parse_secret(
                Key::HttpMetricsToken,
                &raw.text(),
                origin,
            )?)),
            None => None,
        };
        let secs = |key, default| positive(layers, key, default).map(Duration::from_secs);
        let recovery = recovery::parse(layers)?;
        Ok(Self {
            database_url,
            data_file,
            redis_url,
            redis_cluster_urls,
            redis,
            provider_usage_url,
            log_level,
            http: HttpSettings {
                bind,
                tokens,
                cycles_keys,
                cycles_user_level,
                allow_unauthenticated_loopback,
                body_limit_bytes,
                request_timeout: Duration::from_millis(request_timeout_ms),
                header_read_timeout,
                idle_timeout,
                max_connections,
                metrics_token,
            },
            workers: WorkerIntervals {
                reaper: secs(Key::WorkersReaperSecs, 60)?,
                config_sync: secs(Key::WorkersConfigSyncSecs, 300)?,
                finalize_replay: secs(Key::WorkersFinalizeReplaySecs, 1)?,
                reconciliation: secs(Key::WorkersReconciliationSecs, 5)?,
                drift: secs(Key::WorkersDriftSecs, 300)?,
            },
            recovery,
        })
    }

    /// The rules `serve` enforces before it listens: without API tokens it
    /// refuses to start unless `allow_unauthenticated_loopback` is set and
    /// the bind address is a loopback address.
    ///
    /// # Errors
    /// [`SettingsError::Unauthenticated`] saying which rule failed.
    pub fn check_serve(&self) -> Result<(), SettingsError> {
        let http = &self.http;
        if !http.tokens.is_empty() {
            return Ok(());
        }
        if !http.allow_unauthenticated_loopback {
            return Err(SettingsError::Unauthenticated(format!(
                "no API tokens are configured (http.tokens, {}, {}); set some, or pass \
                 --allow-unauthenticated-loopback to serve without authentication on a loopback address",
                Key::HttpTokens.env(),
                Key::HttpTokens.flag()
            )));
        }
        if !http.bind.ip().is_loopback() {
            return Err(SettingsError::Unauthenticated(format!(
                "allow_unauthenticated_loopback only allows a loopback bind address, and http.bind is {}; \
                 configure API tokens to listen there",
                http.bind
            )));
        }
        Ok(())
    }

    /// The library's worker settings with these intervals (jitter a tenth
    /// of each, as [`Schedule::every`]).
    pub fn worker_settings(&self) -> WorkerSettings {
        let w = self.workers;
        WorkerSettings {
            reaper: Schedule::every(w.reaper),
            config_sync: Schedule::every(w.config_sync),
            finalize_replay: Schedule::every(w.finalize_replay),
            reconciliation: Schedule::every(w.reconciliation),
            drift: Schedule::every(w.drift),
            reconciliation_settings: ReconciliationSettings {
                on_give_up: self.recovery.reconciliation_give_up,
                ..ReconciliationSettings::default()
            },
            ..WorkerSettings::default()
        }
    }

    /// The library's budget settings with this configuration's bound on
    /// the finalize queue's memory fallback.
    pub fn budget_settings(&self) -> BudgetSettings {
        BudgetSettings {
            fallback_queue_capacity: self.recovery.fallback_queue_capacity,
            ..BudgetSettings::default()
        }
    }

    /// The configuration as `spendgate config` prints it, in the TOML
    /// file's shape, with token secrets and URL passwords replaced by
    /// `***`.
    pub fn redacted(&self) -> RedactedSettings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RedactedSettings {
            database_url: redact_url(&self.database_url),
            data_file: self.data_file.clone(),
            redis_url: self.redis_url.as_deref().map(redact_url),
            redis_cluster_urls: self
                .redis_cluster_urls
                .iter()
                .map(|u| redact_url(u))
                .collect(),
            provider_usage_url: self.provider_usage_url.as_deref().map(redact_url),
            log_level: self.log_level,
            http: RedactedHttp {
                bind: self.http.bind.to_string(),
                tokens: self
                    .http
                    .tokens
                    .iter()
                    .map(TokenSetting::redacted)
                    .collect(),
                cycles_keys: self.http.cycles_keys.iter().map(cycles::redacted).collect(),
                cycles_user_level: self.http.cycles_user_level.as_str().to_owned(),
                allow_unauthenticated_loopback: self.http.allow_unauthenticated_loopback,
                body_limit_bytes: self.http.body_limit_bytes,
                request_timeout_ms: ms(self.http.request_timeout),
                header_read_timeout_ms: ms(self.http.header_read_timeout),
                idle_timeout_ms: ms(self.http.idle_timeout),
                max_connections: self.http.max_connections,
                metrics_token: self.http.metrics_token.as_ref().map(|_| "***".to_owned()),
            },
            workers: RedactedWorkers {
                reaper_secs: self.workers.reaper.as_secs(),
                config_sync_secs: self.workers.config_sync.as_secs(),
                finalize_replay_secs: self.workers.finalize_replay.as_secs(),
                reconciliation_secs: self.workers.reconciliation.as_secs(),
                drift_secs: self.workers.drift.as_secs(),
                reconciliation_give_up: give_up_name(self.recovery.reconciliation_give_up)
                    .to_owned(),
            },
            redis: RedactedRedis::new(&self.redis),
            budget: RedactedBudget {
                fallback_queue_capacity: self.recovery.fallback_queue_capacity,
            },
        }
    }
}

/// [`Settings`] safe to print: the TOML file's shape, secrets as `***`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the keys of the module's table
pub struct RedactedSettings {
    pub database_url: String,
    pub data_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    pub redis_cluster_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_usage_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    pub http: RedactedHttp,
    pub workers: RedactedWorkers,
    pub redis: RedactedRedis,
    pub budget: RedactedBudget,
}

/// The `[http]` section of [`RedactedSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the keys of the module's table
pub struct RedactedHttp {
    pub bind: String,
    pub tokens: Vec<String>,
    pub cycles_keys: Vec<String>,
    pub cycles_user_level: String,
    pub allow_unauthenticated_loopback: bool,
    pub body_limit_bytes: u64,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
}

/// The `[workers]` section of [`RedactedSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the keys of the module's table
pub struct RedactedWorkers {
    pub reaper_secs: u64,
    pub config_sync_secs: u64,
    pub finalize_replay_secs: u64,
    pub reconciliation_secs: u64,
    pub drift_secs: u64,
    pub reconciliation_give_up: String,
}
