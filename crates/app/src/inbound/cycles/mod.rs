//! The open Cycles runtime protocol (`cycles-protocol-v0`) under `/v1`, so
//! Cycles clients (the `runcycles` crates and packages) work against
//! `spendgate serve` unchanged. The native API stays under `/api/v1`; each
//! keeps its own error format.
//!
//! # Routes
//! | Route | Answers | Errors |
//! |---|---|---|
//! | `POST /v1/reservations` | 200 `ALLOW` with the reservation; `dry_run`: 200 `ALLOW` / `DENY` | 400 `INVALID_REQUEST`, `UNIT_MISMATCH`; 401; 403; 404 (no budget); 409 `BUDGET_EXCEEDED`, `BUDGET_FROZEN`, `IDEMPOTENCY_MISMATCH`, `RESERVATION_FINALIZED`; 500 |
//! | `POST /v1/reservations/{id}/commit` | 200 `COMMITTED` | 400; 401; 404 (also another tenant's id); 409 `BUDGET_EXCEEDED` (`REJECT`), `RESERVATION_FINALIZED`, `IDEMPOTENCY_MISMATCH`; 410 `RESERVATION_EXPIRED`; 500 |
//! | `POST /v1/reservations/{id}/release` | 200 `RELEASED` | as commit, without `BUDGET_EXCEEDED` |
//! | `POST /v1/reservations/{id}/extend` | 200 `ACTIVE` with the new expiry | as release |
//! | `GET /v1/reservations/{id}` | 200 `ReservationDetail` | 401; 404 (also another tenant's id); 410 (expired) |
//! | `GET /v1/reservations?idempotency_key=…` | 200 `ReservationListResponse` | 400 without `idempotency_key`; 401; 403 |
//! | `GET /v1/balances` | 200 the tenant's ledger (and the user's, under a per-user cap) | 400; 401; 403; 404 |
//! | `POST /v1/decide` | 200 `ALLOW` / `DENY` | 400; 401; 403; 409 `IDEMPOTENCY_MISMATCH`; 500 |
//! | `POST /v1/events` | 201 `APPLIED` | 400; 401; 403; 404; 409 `BUDGET_EXCEEDED` (`REJECT`), `IDEMPOTENCY_MISMATCH`; 500 |
//!
//! # How the models meet
//! * **Tenant = community.** Each `X-Cycles-API-Key` is bound to one
//!   tenant ([`CyclesKey`]) and is a tenant's key: it spends and reads,
//!   and no Cycles route changes configuration. A subject or filter naming
//!   another tenant is a 403; a reservation id made for another tenant is
//!   answered as an unknown one (404), without looking anything up.
//! * **User.** One subject level ([`CyclesOptions::user_level`], `agent`
//!   by default) is spendgate's user, so the per-user cap applies to it;
//!   the other levels only appear in `scope_path` and `affected_scopes`.
//!   A subject without that level is charged to the user `~tenant`.
//! * **Units.** 1 micro-USD = 100 `USD_MICROCENTS`. Amounts coming in are
//!   rounded up to whole micro-USD (never under-charged; under one
//!   micro-USD per call), amounts going out are multiplied exactly (so
//!   `reserved` and `charged` show what is really held and charged). Any
//!   other unit is `UNIT_MISMATCH`.
//! * **Ids.** Made by the server, deterministic from (tenant, create key)
//!   and naming the hold (see `ids`): a replayed create answers the same
//!   id, and commit, release, extend and get find the hold from the id.
//! * **Idempotency** per (tenant, operation, reservation, key) on the
//!   [`spendgate_ports::IdempotencyStore`] (see `record`); records are kept
//!   [`CyclesOptions::keep_records`] (48 h by default: the 24 h finalize
//!   markers after the longest 24 h TTL).
//! * **Time.** TTL + grace period is the hold's lifetime in the store.
//!   Commit and release after it, and extend after the TTL, answer 410
//!   without touching the store; the reaper releases the hold.
//! * **Settling.** Commit and release settle the hold by its ids through
//!   [`crate::BudgetService::settle`]; the hold is read first only for the
//!   protocol's answers (410 past the expiry, 409 once finalized), and a
//!   store that cannot answer that read, or no longer knows the hold, does
//!   not stop a commit. A commit the budget store cannot take is written
//!   ahead to the finalize queue and applied exactly once when it can; the
//!   spec has no answer for "accepted, not yet applied" (no 202) and the
//!   commit will not fail, so it answers 200 `COMMITTED` as made, rather
//!   than a 500 that would send the client retrying something already
//!   kept. When the idempotency records cannot be claimed (on Redis
//!   deployments they live on the same Redis) nothing is done and the
//!   answer is 500 `INTERNAL_ERROR`: retry with the same key. Extend adds
//!   `extend_by_ms` to the current expiry (the store never moves an expiry
//!   earlier, so racing extends cannot shorten a lease).
//! * **Overage.** `REJECT`: an actual above the estimate is 409
//!   `BUDGET_EXCEEDED` and the reservation stays active.
//!   `ALLOW_IF_AVAILABLE` (the default) and `ALLOW_WITH_OVERDRAFT` commit
//!   the full actual and report it in `charged`: spendgate has no debt
//!   ledger (an overdraft limit of 0) and never hides a real cost.
//! * **Events** commit without a hold, even over the limit (the money is
//!   spent), idempotently per (tenant, key), through the same settlement
//!   path as a finalize (usage log, finalize queue).
//! * **`dry_run` and `decide`** evaluate the reserve's admission rule
//!   ([`spendgate_domain::admit`]) on the current counters and hold
//!   nothing.
//!
//! # Deviations from the spec and its reference server
//! * Over the limit after an overage, the reference server caps
//!   `ALLOW_IF_AVAILABLE` commits and keeps debt under
//!   `ALLOW_WITH_OVERDRAFT`; spendgate commits the full actual under both
//!   and never answers `OVERDRAFT_LIMIT_EXCEEDED` or `DEBT_OUTSTANDING`.
//!   Events under `REJECT` are checked against the remaining budget
//!   without holding it (not atomic with concurrent reserves).
//! * A community with AI disabled answers 409 `BUDGET_FROZEN` (decide and
//!   dry run: `DENY` with that reason).
//! * Subject values must be canonical identifiers (`[A-Za-z0-9_.-]`, as the
//!   reference server requires); the user level's value is at most 83
//!   characters (it is part of the id), and `action.name` must be a valid
//!   spendgate model alias (it is the usage log's model).
//! * Request `metadata`, `metrics`, release `reason` and `client_time_ms`
//!   are accepted and not kept; `ReservationDetail` carries no `metadata`,
//!   `finalized_at_ms` or evidence, and a commit of 0 reads back as
//!   `RELEASED`. Responses carry no `balances`, `caps`, `trace_id` or
//!   `remaining_ttl_ms`.
//! * `GET /v1/reservations` only finds a reservation by its
//!   `idempotency_key` (with the user level's filter when the subject named
//!   it): the stores keep no listing. Without the key it is a 400.
//! * The spec answers 403 for a reservation id of another tenant.
//!   spendgate answers 404 `NOT_FOUND` with the message an id never made
//!   gets, and looks nothing up: a 403 (or a 403 only when the hold
//!   exists) would tell a tenant what another tenant did, and existence
//!   must not leak across tenants.
//! * A retried extend whose first attempt was applied but never answered
//!   (a crash between the two) extends twice.
//! * A commit for a reservation the store does not know, and whose record
//!   is gone too (a Redis restarted without persistence loses both), is
//!   committed without a hold (200 `COMMITTED`) rather than 404: spendgate
//!   cannot tell it from one that never existed, and will not lose a cost
//!   the client says it spent. A release of one is still 404 (nothing to
//!   release, nothing written).
//! * Errors carry `request_id` (also as `X-Request-Id`); unknown paths,
//!   timeouts and oversized bodies outside these routes answer the native
//!   problem details.

mod auth;
mod decide;
mod error;
mod events;
mod ids;
mod queries;
mod record;
mod reservations;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use spendgate_domain::{CommunityId, Timestamp, Ttl, UserId};
use spendgate_ports::IdempotencyStore;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::Spendgate;
use crate::services::budget::ReserveError;
use auth::KeyDigest;
use error::CyclesError;
use ids::ReservationId;
use wire::Subject;

/// An API key the Cycles routes accept, bound to one tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct CyclesKey {
    /// The secret a client sends as `X-Cycles-API-Key`.
    pub secret: String,
    /// The tenant (community) every request with this key acts for.
    pub tenant: CommunityId,
}

impl std::fmt::Debug for CyclesKey {
    /// Never prints the secret: options end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CyclesKey")
            .field("secret", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// The subject level that is spendgate's user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserLevel {
    /// `subject.workspace`.
    Workspace,
    /// `subject.app`.
    App,
    /// `subject.workflow`.
    Workflow,
    /// `subject.agent`: the default, as agents are what spend.
    #[default]
    Agent,
    /// `subject.toolset`.
    Toolset,
}

impl UserLevel {
    /// The level's name in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::App => "app",
            Self::Workflow => "workflow",
            Self::Agent => "agent",
            Self::Toolset => "toolset",
        }
    }
}

impl std::str::FromStr for UserLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            Self::Workspace,
            Self::App,
            Self::Workflow,
            Self::Agent,
            Self::Toolset,
        ]
        .into_iter()
        .find(|level| level.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not one of workspace, app, workflow, agent, toolset"))
    }
}

/// How the Cycles routes are served.
#[derive(Debug, Clone)]
pub struct CyclesOptions {
    /// The accepted keys; with none every Cycles request is a 401.
    pub keys: Vec<CyclesKey>,
    /// The subject level that is spendgate's user.
    pub user_level: UserLevel,
    /// How long idempotency and reservation records are kept: at least
    /// the longest hold (24 h TTL + grace) plus the finalize markers' life.
    pub keep_records: Duration,
}

impl Default for CyclesOptions {
    /// No keys, `agent` as the user, records kept 48 h.
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            user_level: UserLevel::default(),
            keep_records: Duration::from_secs(48 * 3600),
        }
    }
}

/// The Cycles routes' part of the OpenAPI document, merged into the
/// API's (`GET /openapi.json`); schemas carry the spec's names.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        reservations::create,
        reservations::commit,
        reservations::release,
        reservations::extend,
        queries::detail,
        queries::list,
        queries::balances,
        decide::decide,
        events::create,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&ApiKeyAuth),
    tags((name = "cycles", description = "The Cycles runtime protocol (cycles-protocol-v0) under /v1"))
)]
pub(crate) struct CyclesDoc;

/// Declares the `X-Cycles-API-Key` scheme the Cycles routes name.
struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cycles_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Cycles-API-Key"))),
        );
    }
}

/// What every Cycles handler shares.
#[derive(Clone)]
pub(crate) struct CyclesState {
    app: Spendgate,
    keys: Arc<Vec<KeyDigest>>,
    user_level: UserLevel,
    keep_records: Ttl,
}

/// The Cycles routes over `app`, to nest under `/v1`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(
    app: Spendgate,
    options: &CyclesOptions,
) -> Router<S> {
    let state = CyclesState {
        app,
        keys: Arc::new(
            options
                .keys
                .iter()
                .map(|key| KeyDigest::new(&key.secret, key.tenant.clone()))
                .collect(),
        ),
        user_level: options.user_level,
        keep_records: Ttl::from_duration(options.keep_records).unwrap_or(Ttl::DAY),
    };
    Router::new()
        .route(
            "/reservations",
            post(reservations::create).get(queries::list),
        )
        .route("/reservations/{id}", get(queries::detail))
        .route("/reservations/{id}/commit", post(reservations::commit))
        .route("/reservations/{id}/release", post(reservations::release))
        .route("/reservations/{id}/extend", post(reservations::extend))
        .route("/balances", get(queries::balances))
        .route("/decide", post(decide::decide))
        .route("/events", post(events::create))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

impl CyclesState {
    fn now(&self) -> Timestamp {
        self.app.ports().clock.now()
    }

    /// The deployment's idempotency records (Redis beside the budget, its
    /// database, or memory).
    fn records(&self) -> &dyn IdempotencyStore {
        self.app.ports().idempotency.as_ref()
    }

    /// The spendgate user of `subject`.
    fn user(&self, subject: &Subject) -> Result<UserId, CyclesError> {
        let level = self.user_level.as_str();
        let raw = subject.level(level).unwrap_or(ids::TENANT_USER);
        UserId::parse(raw).map_err(|e| CyclesError::invalid(&format!("subject.{level}"), e))
    }

    /// The reservation `text` names for `tenant`. An id that does not
    /// parse, and one made for any other tenant, is a 404 worded as for an
    /// id never made, decided from the id alone: whether another tenant
    /// holds it must not leak.
    async fn resolve(
        &self,
        tenant: &CommunityId,
        text: &str,
    ) -> Result<ReservationId, CyclesError> {
        let not_found = || CyclesError::NotFound(format!("no reservation {text}"));
        let id = ids::parse(text).ok_or_else(not_found)?;
        if id.tag == ids::tenant_tag(tenant) {
            Ok(id)
        } else {
            Err(not_found())
        }
    }
}

/// A refused reserve (or admission check) as the protocol's error.
fn reserve_error(error: ReserveError, scope: &str) -> CyclesError {
    match error {
        ReserveError::NotConfigured(_) => CyclesError::no_budget(scope),
        ReserveError::AiDisabled(c) => {
            CyclesError::BudgetFrozen(format!("agent calls are disabled for tenant {c}"))
        }
        ReserveError::InvalidInput(message) => CyclesError::InvalidRequest(message),
        other => CyclesError::Internal(format!("denied: {other}")),
    }
}
