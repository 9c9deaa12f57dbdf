//! What operators and orchestrators call: liveness, readiness, metrics and
//! the OpenAPI document. None of it needs an API token; `/metrics` asks for
//! the metrics token when one is configured.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spendgate_domain::{CommunityId, Period};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::ApiState;
use super::problem::{ApiError, Problem};
use super::wire::{
    BudgetBody, BudgetChangeView, BudgetView, ExtendBody, ExtendView, FinalizeBody, HandoverView,
    HoldStateView, HoldView, ReadyView, ReservationView, ReserveBody, SettleBody, SettlementView,
    TiersBody, TiersView, UserSpendView, UsersPageView,
};
use super::{reservations, settings};

/// The community a readiness probe reads: never configured, never charged.
const PROBE_COMMUNITY: &str = "spendgate-readiness-probe";

/// The API's OpenAPI document, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "spendgate",
        description = "Spend budgets for LLM agent calls: reserve an estimate before the call, finalize the real cost after, cancel what never ran.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        reservations::reserve,
        reservations::lookup,
        reservations::finalize,
        reservations::cancel,
        reservations::extend,
        reservations::hand_over,
        settings::budget,
        settings::set_budget,
        settings::users,
        settings::tiers,
        settings::set_tiers,
        healthz,
        readyz,
        metrics,
        openapi,
    ),
    components(schemas(
        Problem, ReserveBody, FinalizeBody, SettleBody, ExtendBody, BudgetBody, TiersBody,
        HoldView, ReservationView, SettlementView, HoldStateView, ExtendView, HandoverView,
        UserSpendView, UsersPageView, BudgetView, BudgetChangeView, TiersView, ReadyView,
    )),
    modifiers(&BearerAuth, &CommonProblems, &CyclesRoutes),
    tags(
        (name = "reservations", description = "One call's hold: reserve, settle, extend, hand over"),
        (name = "budget", description = "A community's limits and spend"),
        (name = "tiers", description = "A community's tier overrides"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Adds the Cycles protocol's routes, served under `/v1`.
struct CyclesRoutes;

impl Modify for CyclesRoutes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(crate::inbound::cycles::CyclesDoc::openapi());
    }
}

/// Declares the bearer scheme the routes' `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Adds the problems every `/api/v1` route may answer (bad header or
/// JSON, missing token, token outside its communities, body too large,
/// timeout) so each path need not list them.
struct CommonProblems;

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    super::PROBLEM_JSON,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let writes = [&mut item.post, &mut item.put];
            let operations = writes
                .into_iter()
                .map(|op| (true, op))
                .chain(std::iter::once((false, &mut item.get)));
            for (write, operation) in operations {
                let Some(operation) = operation else { continue };
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description).into());
                };
                add("401", "Missing or unknown bearer token");
                add(
                    "403",
                    "Token not allowed for this community (`community-forbidden`), or, without tokens, a Host or Origin that is not loopback (`not-loopback`)",
                );
                add("422", "Invalid value (an id, a period, money)");
                add("503", "Timed out or a backend is unavailable; retry");
                if write {
                    add(
                        "400",
                        "Malformed JSON, or a missing or unreadable Idempotency-Key",
                    );
                    add("413", "Body larger than the configured limit");
                }
            }
        }
    }
}

/// The process is up (answers without touching any backend).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = String, content_type = "text/plain"))
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The budget store and the configuration database both answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadyView),
        (status = 503, description = "A backend does not answer", body = ReadyView),
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let ports = state.app.ports();
    let (store, database) = match CommunityId::parse(PROBE_COMMUNITY) {
        Ok(probe) => {
            let store = match Period::containing(ports.clock.now()) {
                Ok(period) => ports.store.status(&probe, period).await.is_ok(),
                Err(_) => false,
            };
            let database = ports.config.community(&probe).await.is_ok();
            (store, database)
        }
        Err(_) => (false, false),
    };
    let ready = store && database;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let view = ReadyView {
        status: if ready { "ready" } else { "unavailable" }.to_owned(),
        store,
        database,
    };
    let mut response = (status, Json(view)).into_response();
    if !ready {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1_u32));
    }
    response
}

/// The process's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
        (status = 401, description = "A metrics token is configured and this request does not carry it as `Authorization: Bearer`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let presented = super::bearer_digest(&headers);
        if !presented.is_some_and(|digest| bool::from(digest.ct_eq(expected))) {
            return ApiError::Unauthorized.into_response();
        }
    }
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
