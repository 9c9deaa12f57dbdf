//! spendgate's application layer: the services an embedding program calls,
//! wired from the ports, and (in the binary) the `spendgate` program.
//!
//! It is the outermost ring (`app -> adapters -> ports -> domain`) and the
//! only crate that picks concrete adapters, all of them in [`builder`].
//! Inside, the layers stay visible: [`services`] holds the budget service
//! and tier access, and [`workers`] the background jobs, all written
//! against the ports alone. [`inbound`] holds the ways in (the `spendgate`
//! command line) and [`settings`] the program's configuration, both behind
//! the `cli` feature.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use spendgate::domain::{CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, UserId};
//! use spendgate::{ReserveDecision, ReserveRequest, Spendgate, Usage};
//!
//! let spendgate = Spendgate::builder().build().await?; // memory only
//! let community = CommunityId::parse("guild-42")?;
//! spendgate.budget().set_budget(&community, Limits::new(Micros::from_usd(10))).await?;
//! let request = ReserveRequest::tokens(
//!     community,
//!     UserId::parse("alice")?,
//!     IdempotencyKey::parse("msg-1")?,
//!     ModelAlias::parse("cheap")?,
//!     1,
//!     1_200,
//!     800,
//! );
//! if let ReserveDecision::Reserved(hold) = spendgate.budget().reserve(request).await? {
//!     // ... call the model ...
//!     hold.finalize(Usage::tokens(1_180, 412)).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Cargo features choose what is compiled: `redis` (the hot path on Redis
//! or Redis Cluster), `redis-tls` (`rediss://` URLs, through rustls with
//! ring; see [`RedisOptions`] for CA and client certificate files),
//! `postgres` and `sqlite` (the durable record), `http`
//! (the provider's usage endpoint for reconciliation), `server` (the
//! sidecar's HTTP API, [`inbound::http`]: axum, Prometheus rendering, the
//! OpenAPI document) and `cli` (the `spendgate` program: clap, TOML
//! configuration, signal handling; it needs `server`). All are on by
//! default; with none, spendgate runs on memory alone and compiles neither
//! the Redis client, nor SeaORM, nor an HTTP client, nor clap.

pub mod builder;
pub mod inbound;
pub mod services;
#[cfg(feature = "cli")]
pub mod settings;
pub mod workers;

pub use builder::{BuildError, Ports, RedisOptions, Spendgate, SpendgateBuilder, WorkerSettings};
pub use services::budget::{
    Backoff, BudgetChangeError, BudgetReport, BudgetService, BudgetSettings, CostBasis,
    EstimateError, ExtendError, FinalizeError, HandoverError, HoldGuard, HoldTicket, KnownHold,
    MAX_TRACE_ID_LEN, Preview, RebuildError, RebuildReport, ReconcileError, ReplayReport,
    ReserveDecision, ReserveError, ReserveRequest, SettleRequest, Settled, StatusError, Usage,
};
pub use services::community_config::ConfigFreshness;
pub use services::tiers::{
    OverrideSource, TierAccess, TierDecision, TierRefusal, TierTimings, TierWriteError,
};

/// The provider's usage endpoint over HTTP (`HttpUsageSource`), to give
/// [`SpendgateBuilder::usage_source`] for reconciliation.
#[cfg(feature = "http")]
pub use spendgate_adapter_http as provider;
/// The domain types the services speak (ids, money, periods, outcomes), so
/// an embedder needs one dependency.
pub use spendgate_domain as domain;
/// The ports, for embedders that bring their own adapters.
pub use spendgate_ports as ports;
