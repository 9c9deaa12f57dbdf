//! Reading: one reservation, the recovery look-up by idempotency key, and
//! the tenant's balances.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use spendgate_domain::{CommunityId, HoldState, Micros, SettledAs, UserId};

use super::CyclesState;
use super::auth::{self, Tenant};
use super::error::{CyclesError, ErrorBody, Reply};
use super::ids::{self, ReservationId};
use super::wire::{self, Amount, BalanceView, BalancesView, LEVELS, ListView, ReservationView};

type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

fn params(params: Params) -> Result<BTreeMap<String, String>, CyclesError> {
    params
        .map(|Query(map)| map)
        .map_err(|rejection| CyclesError::invalid("query", rejection.body_text()))
}

impl CyclesState {
    /// What is known of a reservation: its hold (or marker) and its
    /// record. `None` when the store knows nothing of it, or it is settled
    /// and its record is no longer kept.
    async fn view(
        &self,
        tenant: &CommunityId,
        id: &ReservationId,
    ) -> Result<Option<ReservationView>, CyclesError> {
        let found = self
            .app
            .budget()
            .lookup(tenant, &id.hold)
            .await
            .map_err(|e| CyclesError::Internal(e.to_string()))?;
        let now = self.now();
        let (status, hold, committed) = match found {
            HoldState::Unknown => return Ok(None),
            HoldState::Held { hold } => {
                let status = if now < hold.expires_at {
                    "ACTIVE"
                } else {
                    "EXPIRED"
                };
                (status, Some(hold), None)
            }
            HoldState::Settled {
                settled: SettledAs::Reaped { hold },
            } => ("EXPIRED", Some(hold), None),
            HoldState::Settled {
                settled: SettledAs::Finalized { actual },
            } if actual > Micros::ZERO => ("COMMITTED", None, Some(Amount::of(actual))),
            HoldState::Settled { .. } => ("RELEASED", None, None),
        };
        let Some(record) = self.load_record(tenant, &id.text).await? else {
            return Ok(None);
        };
        let (scope_path, affected_scopes) = record.subject.scopes(tenant);
        let grace = record.grace_period_ms;
        let (reserved, created_at_ms, expires_at_ms) = match hold {
            Some(hold) => (
                Amount::of(hold.estimate),
                hold.created_at.as_millis(),
                hold.expires_at.as_millis() - grace,
            ),
            None => (
                Amount::microcents(record.estimate_micros.saturating_mul(100)),
                record.created_at_ms,
                record.created_at_ms + record.ttl_ms,
            ),
        };
        Ok(Some(ReservationView {
            reservation_id: id.text.clone(),
            status,
            idempotency_key: record.idempotency_key,
            subject: record.subject,
            action: record.action,
            reserved,
            committed,
            created_at_ms,
            expires_at_ms,
            scope_path,
            affected_scopes,
        }))
    }
}

/// One reservation; an expired one is a 410, as the spec asks.
#[utoipa::path(
    get,
    path = "/v1/reservations/{reservation_id}",
    tag = "cycles",
    params(
        ("reservation_id" = String, Path, description = "The id the create answered")
    ),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such reservation for this tenant (another tenant's id included)", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn detail(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    Path(text): Path<String>,
) -> Result<Reply, CyclesError> {
    let id = state.resolve(&tenant, &text).await?;
    let view = state
        .view(&tenant, &id)
        .await?
        .ok_or_else(|| CyclesError::NotFound(format!("no reservation {text}")))?;
    if view.status == "EXPIRED" {
        return Err(CyclesError::ReservationExpired(format!(
            "reservation {text} has expired"
        )));
    }
    Reply::json(StatusCode::OK, &view)
}

/// The reservation a create key made (the spec's recovery query), with the
/// status and subject filters applied to it.
#[utoipa::path(
    get,
    path = "/v1/reservations",
    tag = "cycles",
    params(
        ("idempotency_key" = String, Query, description = "The create's key (required by spendgate)"),
        ("status" = Option<String>, Query, description = "ACTIVE, COMMITTED, RELEASED or EXPIRED"),
        ("tenant" = Option<String>, Query, description = "Must be the key's tenant"),
        ("agent" = Option<String>, Query, description = "The user level's value, when the create named it (agent by default)")
    ),
    responses(
        (status = 200, description = "At most one reservation", body = ListView),
        (status = 400, description = "INVALID_REQUEST: no idempotency_key", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another tenant", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn list(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Reply, CyclesError> {
    let params = params(query)?;
    auth::same_tenant(&tenant, params.get("tenant").map(String::as_str))?;
    let key = params.get("idempotency_key").ok_or_else(|| {
        CyclesError::invalid(
            "idempotency_key",
            "spendgate finds reservations by their create idempotency_key only",
        )
    })?;
    wire::check_key(key)?;
    let level = state.user_level.as_str();
    let user = UserId::parse(params.get(level).map_or(ids::TENANT_USER, String::as_str))
        .map_err(|e| CyclesError::invalid(level, e))?;
    let id = ids::reservation(&tenant, key, &user)?;
    let mut reservations = Vec::new();
    if let Some(view) = state.view(&tenant, &id).await? {
        let status_matches = params.get("status").is_none_or(|s| s == view.status);
        let subject_matches = LEVELS[1..].iter().all(|name| {
            params
                .get(*name)
                .is_none_or(|v| view.subject.level(name) == Some(v.as_str()))
        });
        if status_matches && subject_matches {
            reservations.push(view);
        }
    }
    Reply::json(
        StatusCode::OK,
        &ListView {
            reservations,
            has_more: false,
        },
    )
}

fn balance(scope: String, allocated: Micros, spent: Micros, reserved: Micros) -> BalanceView {
    // Each sum is at most 2^53 micro-USD, so this cannot overflow.
    let remaining = allocated.get() - spent.get() - reserved.get();
    BalanceView {
        scope_path: scope.clone(),
        scope,
        remaining: Amount::microcents(remaining.saturating_mul(100)),
        reserved: Amount::of(reserved),
        spent: Amount::of(spent),
        allocated: Amount::of(allocated),
    }
}

/// The tenant's ledger for the current period, and the user's when the
/// user level is filtered and the community has a per-user cap.
#[utoipa::path(
    get,
    path = "/v1/balances",
    tag = "cycles",
    params(
        ("tenant" = Option<String>, Query, description = "Must be the key's tenant"),
        ("agent" = Option<String>, Query, description = "The user level's value: its ledger under a per-user cap")
    ),
    responses(
        (status = 200, description = "The tenant's ledger for the current period", body = BalancesView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another tenant", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no budget", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn balances(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Reply, CyclesError> {
    let params = params(query)?;
    auth::same_tenant(&tenant, params.get("tenant").map(String::as_str))?;
    let scope = format!("tenant:{tenant}");
    let level = state.user_level.as_str();
    let user = params
        .get(level)
        .map(|value| UserId::parse(value.as_str()).map_err(|e| CyclesError::invalid(level, e)))
        .transpose()?;
    let report = state
        .app
        .budget()
        .status(&tenant, None, user.as_ref())
        .await
        .map_err(|e| CyclesError::Internal(e.to_string()))?;
    let limits = report
        .limits
        .ok_or_else(|| CyclesError::no_budget(&scope))?;
    let mut balances = vec![balance(
        scope.clone(),
        limits.limit,
        report.committed,
        report.reserved,
    )];
    if let (Some(cap), Some(value)) = (limits.per_user_cap, params.get(level)) {
        let spend = report.user.unwrap_or_default();
        balances.push(balance(
            format!("{scope}/{level}:{value}"),
            cap,
            spend.committed,
            spend.reserved,
        ));
    }
    Reply::json(
        StatusCode::OK,
        &BalancesView {
            balances,
            has_more: false,
        },
    )
}
