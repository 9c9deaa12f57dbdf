//! The HTTP API of the `spendgate` sidecar, for services written in other
//! languages: reserve before a model call, finalize after, cancel what
//! never ran, read and set budgets and tier overrides.
//!
//! [`router`] builds the axum router over a [`Spendgate`]; [`serve`] runs it
//! on a listener until a cancellation token fires, then drains. The native
//! API lives under `/api/v1`, the Cycles protocol under `/v1` (see
//! [`crate::inbound::cycles`]); `GET
//! /openapi.json` describes it (the document is generated from this code
//! and checked in as `crates/app/openapi.json`).
//!
//! # Routes
//! | Route | Answer |
//! |---|---|
//! | `POST /api/v1/communities/{community}/reservations` | 201 hold, 200 replay |
//! | `GET …/reservations/{user}/{key}` | held, finalized or reaped |
//! | `POST …/reservations/{user}/{key}/finalize` | 200 committed or replay, 202 queued |
//! | `POST …/reservations/{user}/{key}/cancel` | as finalize, with a cost of 0 |
//! | `POST …/reservations/{user}/{key}/extend` | 200 new expiry |
//! | `POST …/reservations/{user}/{key}/hand-over` | 202 |
//! | `GET`, `PUT /api/v1/communities/{community}/budget` | report (`?user=` adds one user's sums); 200 applied, 202 saved only (`PUT`: operators) |
//! | `GET /api/v1/communities/{community}/budget/users` | one page of the period's users (`cursor`, `limit` ≤ 1000) |
//! | `GET`, `PUT /api/v1/communities/{community}/tiers` | overrides and levels (`PUT`: operators) |
//! | `GET /healthz`, `/readyz`, `/openapi.json` | no token needed |
//! | `GET /metrics` | no token needed, unless [`HttpOptions::metrics_token`] is set |
//!
//! # Wire rules
//! * Money is a decimal USD string exact to the micro-dollar
//!   (`"0.012345"`; a seventh decimal is a 422, never rounded) or integer
//!   micro-USD in the `*_micros` fields; answers carry both.
//! * Every write carries an `Idempotency-Key` header. On
//!   `POST …/reservations` it is the call's idempotency key: a replay with
//!   the same request answers the first hold (200, `replay: true`), one
//!   with another model or estimate is a 409. On the routes of one hold
//!   (`…/reservations/{user}/{key}/…`) it must equal the path's `{key}`
//!   (else 422); on `PUT` routes it is only checked for shape.
//! * Errors are RFC 9457 problem details (`application/problem+json`)
//!   whose `type` is a stable `https://spendgate.dev/problems/…` URI.
//! * `Authorization: Bearer <token>` is compared in constant time against
//!   every configured token; a token limited to some communities gets a
//!   403 (`community-forbidden`) for the others. With no token configured
//!   there is no auth (every request acts as an operator), and only
//!   loopback clients are served: a `Host` other than `localhost`,
//!   127.0.0.0/8 or `[::1]`, or an `Origin` of another site, is a 403
//!   (`not-loopback`; see `loopback` for why).
//! * A token has a [`Role`]. An **operator** configures: `PUT …/budget`
//!   and `PUT …/tiers` need one (a tenant's token gets 403
//!   `insufficient-role`), besides everything a tenant does. A
//!   **tenant** spends: reserve, settle, extend, hand over, and read its
//!   communities' budget, holds and tiers. A budget its tenant could
//!   raise would be no budget.
//!
//! # Connections
//! [`serve`] drives hyper's HTTP/1 connections itself (see `server`): a
//! request head must arrive within [`HttpOptions::header_read_timeout`],
//! a kept-alive connection is closed after [`HttpOptions::idle_timeout`]
//! without a request, and past [`HttpOptions::max_connections`] a new
//! connection is answered 503 (`too-many-connections`, `Retry-After`) and
//! closed.
//!
//! The server keeps no hold guard: a reserve answers the hold and forgets
//! it ([`crate::HoldGuard::into_ticket`]); a later request settles it by
//! ids, or the reaper releases it.

mod extract;
mod loopback;
mod ops;
mod problem;
mod reservations;
mod server;
mod settings;
mod wire;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use spendgate_domain::CommunityId;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::Spendgate;
use crate::inbound::cycles::{self, CyclesOptions};
use extract::{BodyLimit, Grant};

pub use ops::ApiDoc;
pub use problem::{ApiError, PROBLEM_JSON, Problem};
pub use server::HTTP_CONNECTIONS_REFUSED;
pub use wire::{
    BudgetBody, BudgetChangeView, BudgetView, ExtendBody, ExtendView, FinalizeBody, HandoverView,
    HoldStateView, HoldView, ReadyView, ReservationView, ReserveBody, SettleBody, SettlementView,
    TiersBody, TiersView, UserSpendView,
};

/// Counter of answered API requests, labelled `method`, `route` (the
/// route's template, not the ids in it) and `status`.
pub const HTTP_REQUESTS: &str = "spendgate_http_requests_total";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Configures (budgets, tier overrides) and spends.
    Operator,
    /// Spends (reserve, settle, extend, hand over) and reads its
    /// communities; never changes a limit.
    Tenant,
}

impl Role {
    /// The role's name in settings and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Tenant => "tenant",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bearer token the API accepts: its role, and the communities it may
/// act on.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The secret a client sends as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What the token may do.
    pub role: Role,
    /// The communities this token may act on; `None` is every community.
    pub communities: Option<BTreeSet<CommunityId>>,
}

impl ApiToken {
    /// An operator's token for every community.
    pub fn operator(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            role: Role::Operator,
            communities: None,
        }
    }

    /// A tenant's token for `communities`.
    pub fn tenant(
        secret: impl Into<String>,
        communities: impl IntoIterator<Item = CommunityId>,
    ) -> Self {
        Self {
            secret: secret.into(),
            role: Role::Tenant,
            communities: Some(communities.into_iter().collect()),
        }
    }
}

impl std::fmt::Debug for ApiToken {
    /// Never prints the secret: options end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("secret", &"<redacted>")
            .field("role", &self.role)
            .field("communities", &self.communities)
            .finish()
    }
}

/// A secret setting (the metrics token): its `Debug` shows `<redacted>`,
/// as options end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the API is served: the caller (the CLI) decides these from its
/// configuration.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The accepted tokens; empty means no auth at all (the CLI allows
    /// that only on loopback, with an explicit flag).
    pub tokens: Vec<ApiToken>,
    /// Largest request body read, in bytes; larger is a 413.
    pub body_limit_bytes: usize,
    /// Longest a request may take; longer is a 503 problem.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request head, from the accept
    /// (the first request) or from the head's first byte (a later one);
    /// longer and the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may sit between requests before it
    /// is closed.
    pub idle_timeout: Duration,
    /// Connections open at once at most; one more is answered 503 (a
    /// problem with `Retry-After`) and closed.
    pub max_connections: u32,
    /// The bearer secret `GET /metrics` asks for; `None` serves it to
    /// anyone (its labels name communities and drift amounts, so set one
    /// when the port is reachable by others than the scraper).
    pub metrics_token: Option<Secret>,
    /// Where `/metrics` renders from. `None` installs a Prometheus
    /// recorder as the process's global one the first time a router is
    /// built (if no other recorder is installed) and shares it after.
    pub metrics: Option<PrometheusHandle>,
    /// The Cycles protocol's keys and mapping, served under `/v1`.
    pub cycles: CyclesOptions,
}

impl Default for HttpOptions {
    /// No tokens, bodies up to 64 KiB, 10 s per request, 10 s for a
    /// request head, 60 s idle, 1,024 connections, the shared recorder,
    /// no Cycles keys.
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            metrics_token: None,
            metrics: None,
            cycles: CyclesOptions::default(),
        }
    }
}

/// A configured token, kept as the SHA-256 of its secret: comparing
/// digests in constant time hides the secrets' contents and lengths.
struct TokenDigest {
    digest: [u8; 32],
    grant: Grant,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) app: Spendgate,
    tokens: Arc<Vec<TokenDigest>>,
    body_limit: usize,
    timeout: Duration,
    pub(crate) metrics: PrometheusHandle,
    /// The SHA-256 of the metrics token, when one is set.
    pub(crate) metrics_token: Option<[u8; 32]>,
}

/// The router of the whole API over `app`. Building it twice in one
/// process is fine: the Prometheus recorder is installed at most once.
pub fn router(app: Spendgate, options: HttpOptions) -> Router {
    let tokens = options
        .tokens
        .iter()
        .map(|token| TokenDigest {
            digest: Sha256::digest(token.secret.as_bytes()).into(),
            grant: Grant {
                role: token.role,
                communities: token.communities.clone().map(Arc::new),
            },
        })
        .collect();
    let cycles = cycles::router(app.clone(), &options.cycles);
    let state = ApiState {
        app,
        tokens: Arc::new(tokens),
        body_limit: options.body_limit_bytes,
        timeout: options.request_timeout,
        metrics: options.metrics.unwrap_or_else(shared_recorder),
        metrics_token: options
            .metrics_token
            .as_ref()
            .map(|secret| Sha256::digest(secret.expose().as_bytes()).into()),
    };
    let api = Router::new()
        .route(
            "/communities/{community}/reservations",
            post(reservations::reserve),
        )
        .route(
            "/communities/{community}/reservations/{user}/{key}",
            get(reservations::lookup),
        )
        .route(
            "/communities/{community}/reservations/{user}/{key}/finalize",
            post(reservations::finalize),
        )
        .route(
            "/communities/{community}/reservations/{user}/{key}/cancel",
            post(reservations::cancel),
        )
        .route(
            "/communities/{community}/reservations/{user}/{key}/extend",
            post(reservations::extend),
        )
        .route(
            "/communities/{community}/reservations/{user}/{key}/hand-over",
            post(reservations::hand_over),
        )
        .route(
            "/communities/{community}/budget",
            get(settings::budget).put(settings::set_budget),
        )
        .route(
            "/communities/{community}/budget/users",
            get(settings::users),
        )
        .route(
            "/communities/{community}/tiers",
            get(settings::tiers).put(settings::set_tiers),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let no_tokens = state.tokens.is_empty();
    let router = Router::new()
        .nest("/api/v1", api)
        .nest("/v1", cycles)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), limit_time))
        .layer(DefaultBodyLimit::max(options.body_limit_bytes));
    let router = if no_tokens {
        router.layer(middleware::from_fn(loopback::only_loopback))
    } else {
        router
    };
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting
/// and waits for the requests in flight to finish. Connections are bounded
/// by [`HttpOptions::header_read_timeout`], [`HttpOptions::idle_timeout`]
/// and [`HttpOptions::max_connections`].
///
/// # Errors
/// None today (accept errors are logged and waited out); the `Result`
/// leaves room for listener errors that must stop the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Spendgate,
    options: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = server::ConnectionLimits {
        header_read_timeout: options.header_read_timeout,
        idle_timeout: options.idle_timeout,
        max_connections: options.max_connections,
    };
    let router = router(app, options);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "spendgate HTTP API listening");
    }
    server::run(listener, router, limits, shutdown).await;
    Ok(())
}

/// The process's shared Prometheus handle: the global recorder when this
/// installed it, else a detached one (another recorder owns the metrics;
/// `/metrics` then renders only what reaches this handle, i.e. nothing).
fn shared_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "a metrics recorder is already installed; /metrics renders nothing");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// Checks the bearer token and records its grant for the extractors
/// ([`extract::Tenant`], [`extract::Operator`]). With no token configured
/// every request is an operator's for every community.
async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        request.extensions_mut().insert(Grant {
            role: Role::Operator,
            communities: None,
        });
        return next.run(request).await;
    }
    let Some(digest) = bearer_digest(request.headers()) else {
        return ApiError::Unauthorized.into_response();
    };
    let mut found: Option<&TokenDigest> = None;
    for token in state.tokens.iter() {
        // Every token is compared, whatever matched before.
        if bool::from(token.digest.ct_eq(&digest)) && found.is_none() {
            found = Some(token);
        }
    }
    match found {
        Some(token) => {
            request.extensions_mut().insert(token.grant.clone());
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

/// The SHA-256 of the request's `Authorization: Bearer` secret: digests
/// are what configured secrets are compared with, in constant time.
pub(crate) fn bearer_digest(headers: &axum::http::HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Sha256::digest(token.trim().as_bytes()).into())
}

/// The request timeout, the body limit for the 413 message, and the
/// request counter.
async fn limit_time(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(BodyLimit(state.body_limit));
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = match tokio::time::timeout(state.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    };
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute(request.uri().path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
