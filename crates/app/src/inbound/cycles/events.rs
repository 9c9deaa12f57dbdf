//! `POST /v1/events`: a cost with no reservation, such as a commit that
//! came too late (the clients' fallback after a 410). It is committed even
//! over the limit, because the money is already spent, and exactly once
//! per (tenant, key).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use spendgate_domain::FinalizeOutcome;

use super::CyclesState;
use super::auth::{self, Json, Tenant};
use super::error::{CyclesError, ErrorBody, Reply};
use super::ids;
use super::record::Begun;
use super::wire::{Amount, EventBody, EventView, OveragePolicy};
use crate::services::budget::Settled;

/// Applies the event's actual to the tenant's budget.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "cycles",
    params(
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = EventBody,
    responses(
        (status = 201, description = "APPLIED", body = EventView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another tenant", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no budget for the tenant", body = ErrorBody),
        (status = 409, description = "BUDGET_EXCEEDED (REJECT) or IDEMPOTENCY_MISMATCH", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR: retry with the same key", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn create(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    Json { body, raw }: Json<EventBody>,
) -> Result<Reply, CyclesError> {
    let key = body.idempotency_key.as_str();
    auth::request_key(&headers, key)?;
    body.subject.check()?;
    auth::same_tenant(&tenant, body.subject.tenant.as_deref())?;
    let (scope_path, _) = body.subject.scopes(&tenant);
    let actual = body.actual.to_micros("actual", &scope_path)?;
    let model = body.action.model()?;
    let user = state.user(&body.subject)?;
    let (event_id, store_key) = ids::event(&tenant, key)?;
    let claimed = match state.begin(&tenant, "event", "", key, &raw).await? {
        Begun::Replay(reply) => return Ok(reply),
        Begun::Fresh(claimed) => claimed,
    };
    let budget = state.app.budget();
    let report = budget
        .status(&tenant, None, None)
        .await
        .map_err(|e| CyclesError::Internal(e.to_string()))?;
    let limits = report
        .limits
        .ok_or_else(|| CyclesError::no_budget(&format!("tenant:{tenant}")))?;
    if body.overage_policy == Some(OveragePolicy::Reject) && actual > report.remaining {
        return Err(CyclesError::BudgetExceeded(format!(
            "actual {} exceeds the {} USD_MICROCENTS remaining of {} under overage_policy REJECT",
            Amount::of(actual).amount,
            Amount::of(report.remaining).amount,
            Amount::of(limits.limit).amount
        )));
    }
    let settled = budget
        .commit_spent(&tenant, user, store_key, model, actual)
        .await
        .map_err(|e| CyclesError::Internal(format!("{e}; retry with the same key")))?;
    let charged = match settled {
        Settled::Queued { actual } => actual,
        Settled::Committed { outcome } => match outcome {
            FinalizeOutcome::Finalized(r)
            | FinalizeOutcome::LateFinalized(r)
            | FinalizeOutcome::CommittedWithoutHold(r) => r.actual,
            FinalizeOutcome::AlreadyFinalized { actual } => actual,
            other => {
                return Err(CyclesError::Internal(format!(
                    "unexpected settlement {other:?}"
                )));
            }
        },
    };
    let view = EventView {
        status: "APPLIED",
        event_id,
        charged: Amount::of(charged),
    };
    Ok(claimed
        .finish(&state, Reply::json(StatusCode::CREATED, &view)?)
        .await)
}
