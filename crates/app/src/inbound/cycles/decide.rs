//! `POST /v1/decide` and the evaluation a dry-run create shares with it:
//! the reserve's admission rule on the current counters, holding nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use spendgate_domain::{CommunityId, Micros, UserId};

use super::auth::{self, Json, Tenant};
use super::error::{CyclesError, ErrorBody, Reply};
use super::record::Begun;
use super::wire::{DecideBody, DecideView};
use super::{CyclesState, reserve_error};
use crate::services::budget::{Preview, ReserveError};

/// What a reserve would answer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It would be held.
    Allow,
    /// It would be refused, for this reason code.
    Deny(&'static str),
}

impl Verdict {
    /// The protocol's decision and reason code.
    pub(super) fn decision(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Allow => ("ALLOW", None),
            Self::Deny(reason) => ("DENY", Some(reason)),
        }
    }
}

impl CyclesState {
    /// Evaluates a reservation of `estimate` for `user` without holding it.
    pub(super) async fn evaluate(
        &self,
        tenant: &CommunityId,
        user: &UserId,
        estimate: Micros,
        scope: &str,
    ) -> Result<Verdict, CyclesError> {
        match self.app.budget().preview(tenant, user, estimate).await {
            Ok(Preview::Fits { .. }) => Ok(Verdict::Allow),
            Ok(Preview::Exceeded { .. }) => Ok(Verdict::Deny("BUDGET_EXCEEDED")),
            Err(ReserveError::NotConfigured(_)) => Ok(Verdict::Deny("BUDGET_NOT_FOUND")),
            Err(ReserveError::AiDisabled(_)) => Ok(Verdict::Deny("BUDGET_FROZEN")),
            Err(other) => Err(reserve_error(other, scope)),
        }
    }
}

/// Whether a reservation would be allowed now; nothing is held, and a
/// later reserve may still be refused.
#[utoipa::path(
    post,
    path = "/v1/decide",
    tag = "cycles",
    params(
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = DecideBody,
    responses(
        (status = 200, description = "ALLOW or DENY; nothing held", body = DecideView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another tenant", body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_MISMATCH", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn decide(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    Json { body, raw }: Json<DecideBody>,
) -> Result<Reply, CyclesError> {
    auth::request_key(&headers, &body.idempotency_key)?;
    body.subject.check()?;
    auth::same_tenant(&tenant, body.subject.tenant.as_deref())?;
    let (scope_path, affected_scopes) = body.subject.scopes(&tenant);
    let estimate = body.estimate.to_micros("estimate", &scope_path)?;
    // The same rules as a reserve of this action.
    body.action.model()?;
    let user = state.user(&body.subject)?;
    let claimed = match state
        .begin(&tenant, "decide", "", &body.idempotency_key, &raw)
        .await?
    {
        Begun::Replay(reply) => return Ok(reply),
        Begun::Fresh(claimed) => claimed,
    };
    let verdict = state
        .evaluate(&tenant, &user, estimate, &scope_path)
        .await?;
    let (decision, reason_code) = verdict.decision();
    let view = DecideView {
        decision,
        reason_code,
        affected_scopes,
    };
    Ok(claimed
        .finish(&state, Reply::json(StatusCode::OK, &view)?)
        .await)
}
