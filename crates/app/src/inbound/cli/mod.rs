//! The `spendgate` command line: the clap types, and [`run`], the entry
//! point `main` calls and tests call in-process (no binary to spawn, so
//! tests see the same code paths and stay fast).
//!
//! Commands are in [`commands`], one module per concern; printing and exit
//! codes in [`output`].

pub mod commands;
pub mod output;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spendgate_domain::{CommunityId, IdempotencyKey, Micros, ModelAlias, Period, UserId};
use spendgate_ports::{PageSize, UsersCursor};
use tokio_util::sync::CancellationToken;

pub use output::{CliError, EXIT_CODES_HELP, Exit, Report};

use crate::settings::{FlagValues, LogLevel, Settings};

/// `spendgate`: budget enforcement for LLM agent calls.
#[derive(Debug, Parser)]
#[command(name = "spendgate", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Configuration flags, which beat environment variables and the file.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The flags of the settings table (see [`crate::settings`]); every one is
/// global, so it may follow the subcommand.
#[derive(Debug, Clone, Default, Args)]
#[command(
    next_help_heading = "Configuration (flags > SPENDGATE_* variables > config file > defaults)"
)]
pub struct SettingsArgs {
    /// TOML configuration file [env: SPENDGATE_CONFIG].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The database URL (`postgres://…` or `sqlite:…`).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help = "postgres://… or sqlite:… [env: SPENDGATE_DATABASE_URL] [default: sqlite://<data-file>?mode=rwc]"
    )]
    pub database_url: Option<String>,
    /// The embedded SQLite file [env: SPENDGATE_DATA_FILE] [default: ./spendgate.db].
    #[arg(long, global = true, value_name = "PATH")]
    pub data_file: Option<String>,
    /// Standalone Redis for the hot path [env: SPENDGATE_REDIS_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster nodes, comma-separated or repeated [env: SPENDGATE_REDIS_CLUSTER_URLS].
    #[arg(long, global = true, value_name = "URLS")]
    pub redis_cluster_urls: Vec<String>,
    /// The provider's usage endpoint, for reconciliation [env: SPENDGATE_PROVIDER_USAGE_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub provider_usage_url: Option<String>,
    /// off, error, warn, info, debug or trace [env: SPENDGATE_LOG_LEVEL]
    /// [default: info for serve, warn otherwise].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// HTTP listen address [env: SPENDGATE_HTTP_BIND] [default: 127.0.0.1:8080].
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<String>,
    /// API token, `[operator=|tenant=]secret[=community1|community2]`
    /// (bare `secret`: operator of all; `secret=c1|c2`: tenant); repeatable
    /// [env: SPENDGATE_API_TOKENS, comma-separated].
    #[arg(long = "api-token", global = true, value_name = "TOKEN")]
    pub api_tokens: Vec<String>,
    /// Cycles protocol API key, `secret=tenant`; repeatable
    /// [env: SPENDGATE_CYCLES_KEYS, comma-separated].
    #[arg(long = "cycles-key", global = true, value_name = "KEY")]
    pub cycles_keys: Vec<String>,
    /// The Cycles subject level charged as spendgate's user: workspace,
    /// app, workflow, agent or toolset [env: SPENDGATE_CYCLES_USER_LEVEL]
    /// [default: agent].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub cycles_user_level: Option<String>,
    /// Serve without API tokens, on a loopback address only
    /// [env: SPENDGATE_ALLOW_UNAUTHENTICATED_LOOPBACK].
    #[arg(long, global = true)]
    pub allow_unauthenticated_loopback: bool,
    /// Largest HTTP request body [env: SPENDGATE_HTTP_BODY_LIMIT_BYTES] [default: 65536].
    #[arg(long, global = true, value_name = "BYTES")]
    pub body_limit_bytes: Option<String>,
    /// HTTP request timeout [env: SPENDGATE_HTTP_REQUEST_TIMEOUT_MS] [default: 10000].
    #[arg(long, global = true, value_name = "MS")]
    pub request_timeout_ms: Option<String>,
    /// Longest a client may take to send a request head
    /// [env: SPENDGATE_HTTP_HEADER_READ_TIMEOUT_MS] [default: 10000].
    #[arg(long, global = true, value_name = "MS")]
    pub header_read_timeout_ms: Option<String>,
    /// Longest a kept-alive connection may sit idle
    /// [env: SPENDGATE_HTTP_IDLE_TIMEOUT_MS] [default: 60000].
    #[arg(long, global = true, value_name = "MS")]
    pub idle_timeout_ms: Option<String>,
    /// Connections open at once; one more is answered 503
    /// [env: SPENDGATE_HTTP_MAX_CONNECTIONS] [default: 1024].
    #[arg(long, global = true, value_name = "N")]
    pub max_connections: Option<String>,
    /// Bearer secret `/metrics` asks for [env: SPENDGATE_HTTP_METRICS_TOKEN]
    /// [default: none, /metrics needs no token].
    #[arg(long, global = true, value_name = "SECRET")]
    pub metrics_token: Option<String>,
    /// Reaper interval [env: SPENDGATE_WORKERS_REAPER_SECS] [default: 60].
    #[arg(long, global = true, value_name = "SECS")]
    pub reaper_secs: Option<String>,
    /// Config sync interval [env: SPENDGATE_WORKERS_CONFIG_SYNC_SECS] [default: 300].
    #[arg(long, global = true, value_name = "SECS")]
    pub config_sync_secs: Option<String>,
    /// Finalize replay interval [env: SPENDGATE_WORKERS_FINALIZE_REPLAY_SECS] [default: 1].
    #[arg(long, global = true, value_name = "SECS")]
    pub finalize_replay_secs: Option<String>,
    /// Reconciliation interval [env: SPENDGATE_WORKERS_RECONCILIATION_SECS] [default: 5].
    #[arg(long, global = true, value_name = "SECS")]
    pub reconciliation_secs: Option<String>,
    /// Drift monitor interval [env: SPENDGATE_WORKERS_DRIFT_SECS] [default: 300].
    #[arg(long, global = true, value_name = "SECS")]
    pub drift_secs: Option<String>,
    /// PEM CA file trusted for rediss:// instead of the system's store
    /// [env: SPENDGATE_REDIS_TLS_CA_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub redis_tls_ca_file: Option<String>,
    /// PEM client certificate for Redis mutual TLS (with the key)
    /// [env: SPENDGATE_REDIS_TLS_CERT_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub redis_tls_cert_file: Option<String>,
    /// PEM private key of the Redis client certificate
    /// [env: SPENDGATE_REDIS_TLS_KEY_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub redis_tls_key_file: Option<String>,
    /// Replicas each budget write waits for (WAIT); 0 is off
    /// [env: SPENDGATE_REDIS_WAIT_REPLICAS] [default: 0].
    #[arg(long, global = true, value_name = "N")]
    pub redis_wait_replicas: Option<String>,
    /// How long a write waits for them [env: SPENDGATE_REDIS_WAIT_TIMEOUT_MS] [default: 100].
    #[arg(long, global = true, value_name = "MS")]
    pub redis_wait_timeout_ms: Option<String>,
    /// Dedicated write connections while waiting
    /// [env: SPENDGATE_REDIS_WAIT_CONNECTIONS] [default: 16].
    #[arg(long, global = true, value_name = "N")]
    pub redis_wait_connections: Option<String>,
    /// What to do with a dropped call the provider never reports:
    /// charge-estimate or release [env: SPENDGATE_WORKERS_RECONCILIATION_GIVE_UP]
    /// [default: charge-estimate].
    #[arg(long, global = true, value_name = "ACTION")]
    pub reconciliation_give_up: Option<String>,
    /// Settlements kept in memory while the database is down
    /// [env: SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY] [default: 100000].
    #[arg(long, global = true, value_name = "N")]
    pub fallback_queue_capacity: Option<String>,
}

impl SettingsArgs {
    /// The flag layer of [`Settings::load`].
    pub fn flag_values(&self) -> FlagValues {
        FlagValues {
            config: self.config.clone(),
            database_url: self.database_url.clone(),
            data_file: self.data_file.clone(),
            redis_url: self.redis_url.clone(),
            redis_cluster_urls: self.redis_cluster_urls.clone(),
            provider_usage_url: self.provider_usage_url.clone(),
            log_level: self.log_level.clone(),
            bind: self.bind.clone(),
            api_tokens: self.api_tokens.clone(),
            cycles_keys: self.cycles_keys.clone(),
            cycles_user_level: self.cycles_user_level.clone(),
            allow_unauthenticated_loopback: self.allow_unauthenticated_loopback,
            body_limit_bytes: self.body_limit_bytes.clone(),
            request_timeout_ms: self.request_timeout_ms.clone(),
            header_read_timeout_ms: self.header_read_timeout_ms.clone(),
            idle_timeout_ms: self.idle_timeout_ms.clone(),
            max_connections: self.max_connections.clone(),
            metrics_token: self.metrics_token.clone(),
            reaper_secs: self.reaper_secs.clone(),
            config_sync_secs: self.config_sync_secs.clone(),
            finalize_replay_secs: self.finalize_replay_secs.clone(),
            reconciliation_secs: self.reconciliation_secs.clone(),
            drift_secs: self.drift_secs.clone(),
            redis_tls_ca_file: self.redis_tls_ca_file.clone(),
            redis_tls_cert_file: self.redis_tls_cert_file.clone(),
            redis_tls_key_file: self.redis_tls_key_file.clone(),
            redis_wait_replicas: self.redis_wait_replicas.clone(),
            redis_wait_timeout_ms: self.redis_wait_timeout_ms.clone(),
            redis_wait_connections: self.redis_wait_connections.clone(),
            reconciliation_give_up: self.reconciliation_give_up.clone(),
            fallback_queue_capacity: self.fallback_queue_capacity.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background workers until SIGTERM or Ctrl-C.
    Serve,
    /// Apply, undo or list database migrations.
    Migrate {
        /// Which migration action.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the effective configuration (TOML, or JSON with --json),
    /// secrets shown as ***.
    Config,
    /// Show a community's budget for a period (and one user's sums with
    /// --user; `users` lists them all, page by page).
    Status {
        /// The community.
        #[arg(value_parser = parse_community)]
        community: CommunityId,
        /// The period, YYYY-MM (the current one by default).
        #[arg(long, value_parser = parse_period)]
        period: Option<Period>,
        /// Also show this user's sums.
        #[arg(long, value_parser = parse_user)]
        user: Option<UserId>,
    },
    /// List one page of a period's users and their sums, and the cursor
    /// of the next page.
    Users {
        /// The community.
        #[arg(value_parser = parse_community)]
        community: CommunityId,
        /// The period, YYYY-MM (the current one by default).
        #[arg(long, value_parser = parse_period)]
        period: Option<Period>,
        /// Where to resume: the `next` cursor a page printed.
        #[arg(long, value_parser = parse_cursor)]
        cursor: Option<UsersCursor>,
        /// Users per page, 1..=1000.
        #[arg(long, default_value_t = PageSize::MAX, value_parser = parse_page_size)]
        limit: PageSize,
    },
    /// Set a community's monthly limit (creates its configuration, AI
    /// enabled, when it has none).
    SetBudget {
        /// The community.
        #[arg(value_parser = parse_community)]
        community: CommunityId,
        /// The limit in USD, e.g. 10 or 12.50.
        #[arg(value_name = "USD", value_parser = parse_usd)]
        limit: Micros,
        /// The most one user may spend in the period, in USD.
        #[arg(long, value_name = "USD", value_parser = parse_usd)]
        per_user_cap: Option<Micros>,
    },
    /// Hold an estimate for one call; settle it with finalize or cancel.
    Reserve(ReserveArgs),
    /// Commit what a reserved call cost and release its estimate.
    Finalize(FinalizeArgs),
    /// Release a hold without cost: the call never ran.
    Cancel {
        /// The call's ids.
        #[command(flatten)]
        ids: HoldIds,
    },
    /// Push a live hold's expiry to now + TTL.
    Extend {
        /// The call's ids.
        #[command(flatten)]
        ids: HoldIds,
        /// New lifetime from now, in milliseconds.
        #[arg(long, value_name = "MS")]
        ttl_ms: u32,
    },
    /// Release expired holds: of one community, or one reaper pass over all.
    Reap {
        /// Only this community.
        #[arg(value_parser = parse_community)]
        community: Option<CommunityId>,
    },
    /// One drift monitor pass: store counters against the usage log.
    Drift,
    /// Rebuild a community's counters from the usage log.
    Rebuild {
        /// The community.
        #[arg(value_parser = parse_community)]
        community: CommunityId,
        /// The period, YYYY-MM (the current one by default).
        #[arg(long, value_parser = parse_period)]
        period: Option<Period>,
    },
    /// List the settlements the store refused for good (dead letters of
    /// the finalize queue), which are never replayed.
    DeadLetters {
        /// How many to list, the earliest parked first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Load generator: reserve → finalize lifecycles at a concurrency for
    /// a duration, directly on the configured stores or against a server
    /// (--url); prints lifecycles/s and p50/p99/p999 latency.
    Bench(BenchArgs),
}

/// `bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Communities spread over (bench-0 …); the concurrency by default.
    #[arg(long)]
    pub communities: Option<usize>,
    /// A running server's base URL, e.g. http://127.0.0.1:8080 (the
    /// configured stores, in-process, otherwise).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The API token for --url, sent as a bearer token.
    #[arg(long, requires = "url")]
    pub token: Option<String>,
    /// Run Cycles lifecycles (POST /v1/reservations, then commit) with
    /// this key, `secret=tenant`; the tenant's budget is set through the
    /// native API (--token).
    #[arg(
        long = "cycles-api-key",
        requires = "url",
        value_name = "SECRET=TENANT"
    )]
    pub cycles_key: Option<String>,
}

/// `migrate` actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Undo the most recent migrations.
    Down {
        /// How many to undo.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations, applied or pending.
    Status,
}

/// The ids of one call: community, user, idempotency key.
#[derive(Debug, Clone, Args)]
pub struct HoldIds {
    /// The community.
    #[arg(value_parser = parse_community)]
    pub community: CommunityId,
    /// The user.
    #[arg(value_parser = parse_user)]
    pub user: UserId,
    /// The call's idempotency key.
    #[arg(value_parser = parse_key)]
    pub key: IdempotencyKey,
}

/// `reserve` arguments.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("cost").required(true).args(["prompt_tokens", "estimate_usd"])))]
pub struct ReserveArgs {
    /// The call's ids.
    #[command(flatten)]
    pub ids: HoldIds,
    /// The model alias.
    #[arg(long, value_parser = parse_model)]
    pub model: ModelAlias,
    /// The community's tier, 1–9.
    #[arg(long)]
    pub tier: i64,
    /// Prompt tokens (priced with --max-completion-tokens).
    #[arg(long, requires = "max_completion_tokens")]
    pub prompt_tokens: Option<u64>,
    /// The most completion tokens the call may produce.
    #[arg(long, requires = "prompt_tokens")]
    pub max_completion_tokens: Option<u64>,
    /// The caller's own estimate in USD, instead of token counts.
    #[arg(long, value_name = "USD", value_parser = parse_usd, conflicts_with_all = ["prompt_tokens", "max_completion_tokens", "tool_use"])]
    pub estimate_usd: Option<Micros>,
    /// The call uses tools (the tool-use multiplier applies).
    #[arg(long)]
    pub tool_use: bool,
    /// Hold lifetime in milliseconds (the service default otherwise).
    #[arg(long, value_name = "MS")]
    pub ttl_ms: Option<u32>,
    /// A trace id carried into the usage log.
    #[arg(long)]
    pub trace_id: Option<String>,
}

/// `finalize` arguments.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("usage").required(true).args(["actual_usd", "prompt_tokens"])))]
pub struct FinalizeArgs {
    /// The call's ids.
    #[command(flatten)]
    pub ids: HoldIds,
    /// What the call cost, in USD.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub actual_usd: Option<Micros>,
    /// Prompt tokens used (priced with --completion-tokens).
    #[arg(long, requires = "completion_tokens", conflicts_with = "actual_usd")]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens used.
    #[arg(long, requires = "prompt_tokens")]
    pub completion_tokens: Option<u64>,
    /// A trace id carried into the usage log.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// The hold's model, as `reserve` printed it: prices the tokens when
    /// the store has lost the hold.
    #[arg(long, value_parser = parse_model)]
    pub model: Option<ModelAlias>,
    /// The hold's period (YYYY-MM), as `reserve` printed it: where the cost
    /// goes when the store has lost the hold (else the current period).
    #[arg(long, value_parser = parse_period)]
    pub period: Option<Period>,
}

fn parse_usd(text: &str) -> Result<Micros, String> {
    Micros::parse_usd(text).map_err(|e| e.to_string())
}

fn parse_period(text: &str) -> Result<Period, String> {
    Period::parse(text).map_err(|e| format!("{e} (expected YYYY-MM)"))
}

fn parse_community(text: &str) -> Result<CommunityId, String> {
    CommunityId::parse(text).map_err(|e| e.to_string())
}

fn parse_user(text: &str) -> Result<UserId, String> {
    UserId::parse(text).map_err(|e| e.to_string())
}

fn parse_cursor(text: &str) -> Result<UsersCursor, String> {
    UsersCursor::parse(text).map_err(|e| e.to_string())
}

fn parse_page_size(text: &str) -> Result<PageSize, String> {
    let size: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    PageSize::new(size).map_err(|e| e.to_string())
}

fn parse_key(text: &str) -> Result<IdempotencyKey, String> {
    IdempotencyKey::parse(text).map_err(|e| e.to_string())
}

fn parse_model(text: &str) -> Result<ModelAlias, String> {
    ModelAlias::parse(text).map_err(|e| e.to_string())
}

/// Where a command writes, and what it may ask of its surroundings:
/// injected so tests run commands in-process with buffers and a fake
/// environment.
pub struct Console<'a> {
    /// Results (text or JSON).
    pub out: &'a mut dyn Write,
    /// Errors and progress.
    pub err: &'a mut dyn Write,
    /// Whether to print progress lines on `err` (a terminal; not when
    /// piped).
    pub progress: bool,
    /// Environment look-up for the `SPENDGATE_*` layer.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Whether to install a log subscriber at the configured level (the
    /// program does; tests and embedders keep their own).
    pub install_logging: bool,
}

impl std::fmt::Debug for Console<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Console<'_> {
    /// A progress line, only on a terminal.
    pub(crate) fn progress(&mut self, message: &str) {
        if self.progress {
            // Progress is best effort: a closed stderr must not fail a command.
            let _ = writeln!(self.err, "{message}");
        }
    }
}

/// The process environment, for [`Console::env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Parses `args` (the program name first) and runs the command. A parse
/// error or `--help` prints clap's text and returns [`Exit::Usage`] (or
/// [`Exit::Ok`] for help and version).
pub async fn run_args<I, T>(args: I, console: &mut Console<'_>) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli, console).await,
        Err(error) => {
            let text = error.render();
            let ok = !error.use_stderr();
            let target: &mut dyn Write = if ok { console.out } else { console.err };
            // Best effort, as above.
            let _ = write!(target, "{text}");
            if ok { Exit::Ok } else { Exit::Usage }
        }
    }
}

/// Runs one parsed command: loads the settings, runs, prints the result
/// and returns the exit code. `serve` stops on SIGTERM or Ctrl-C.
pub async fn run(cli: Cli, console: &mut Console<'_>) -> Exit {
    let shutdown = CancellationToken::new();
    if matches!(cli.command, Command::Serve) {
        commands::serve::cancel_on_signal(shutdown.clone());
    }
    run_until(cli, console, shutdown).await
}

/// [`run`] with the shutdown of `serve` in the caller's hands (tests
/// cancel `shutdown` instead of sending a signal).
pub async fn run_until(cli: Cli, console: &mut Console<'_>, shutdown: CancellationToken) -> Exit {
    let as_json = cli.json;
    let result = match Settings::load(&cli.settings.flag_values(), console.env) {
        Ok(settings) => {
            if console.install_logging {
                let default = if matches!(cli.command, Command::Serve) {
                    LogLevel::Info
                } else {
                    LogLevel::Warn
                };
                install_logging(settings.log_level.unwrap_or(default));
            }
            commands::dispatch(cli.command, &settings, console, shutdown).await
        }
        Err(error) => Err(CliError::Settings(error)),
    };
    match result {
        Ok(report) => match output::print_report(console.out, &report, as_json) {
            Ok(()) => report.exit,
            Err(source) => output::print_error(
                &mut std::io::sink(),
                console.err,
                &CliError::Io {
                    what: "writing the output".into(),
                    source,
                },
                false,
            ),
        },
        Err(error) => output::print_error(console.out, console.err, &error, as_json),
    }
}

fn install_logging(level: LogLevel) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    // A subscriber installed earlier (by an embedder) wins.
    // Colours only on a terminal: a log file or collector gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
