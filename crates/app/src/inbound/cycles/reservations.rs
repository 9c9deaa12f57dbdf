//! The reservation lifecycle: create (or dry run), commit, release and
//! extend, each claimed in the idempotency records first (see `record`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use spendgate_domain::{
    CommunityId, FinalizeOutcome, HoldState, Micros, Period, Reservation, SettledAs, Timestamp, Ttl,
};

use super::auth::{self, Json, Tenant};
use super::error::{CyclesError, ErrorBody, Reply};
use super::ids::{self, ReservationId};
use super::record::{Begun, Claimed, ReservationRecord};
use super::wire::{
    Amount, CommitBody, CommitView, CreateBody, CreateView, ExtendBody, ExtendView, OveragePolicy,
    ReleaseBody, ReleaseView,
};
use super::{CyclesState, reserve_error};
use crate::services::budget::{
    ExtendError, FinalizeError, KnownHold, ReserveDecision, SettleRequest, Settled, Usage,
};

/// The spec's TTL bounds, in ms.
const TTL_MS: std::ops::RangeInclusive<i64> = 1_000..=86_400_000;
/// The spec's grace period bounds, in ms.
const GRACE_MS: std::ops::RangeInclusive<i64> = 0..=60_000;

/// Reserves the estimate (or, with `dry_run`, evaluates it).
#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "cycles",
    params(
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = CreateBody,
    responses(
        (status = 200, description = "ALLOW (or, with dry_run, ALLOW or DENY)", body = CreateView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another tenant", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no budget for the tenant", body = ErrorBody),
        (status = 409, description = "BUDGET_EXCEEDED, BUDGET_FROZEN, IDEMPOTENCY_MISMATCH or RESERVATION_FINALIZED", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR: denied, retry with the same key", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn create(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    Json { body, raw }: Json<CreateBody>,
) -> Result<Reply, CyclesError> {
    let key = body.idempotency_key.as_str();
    auth::request_key(&headers, key)?;
    body.subject.check()?;
    auth::same_tenant(&tenant, body.subject.tenant.as_deref())?;
    let (scope_path, affected_scopes) = body.subject.scopes(&tenant);
    let estimate = body.estimate.to_micros("estimate", &scope_path)?;
    let model = body.action.model()?;
    let ttl_ms = body.ttl_ms.unwrap_or(60_000);
    if !TTL_MS.contains(&ttl_ms) {
        return Err(CyclesError::invalid("ttl_ms", "from 1000 to 86400000"));
    }
    let grace_ms = body.grace_period_ms.unwrap_or(5_000);
    if !GRACE_MS.contains(&grace_ms) {
        return Err(CyclesError::invalid("grace_period_ms", "from 0 to 60000"));
    }
    let user = state.user(&body.subject)?;
    let id = ids::reservation(&tenant, key, &user)?;
    let claimed = match state.begin(&tenant, "create", "", key, &raw).await? {
        Begun::Replay(reply) => return Ok(reply),
        Begun::Fresh(claimed) => claimed,
    };
    if body.dry_run == Some(true) {
        let verdict = state
            .evaluate(&tenant, &user, estimate, &scope_path)
            .await?;
        let (decision, reason_code) = verdict.decision();
        let view = CreateView {
            decision,
            reservation_id: None,
            reserved: Some(Amount::of(estimate)),
            expires_at_ms: None,
            scope_path,
            affected_scopes,
            reason_code,
        };
        return Ok(claimed
            .finish(&state, Reply::json(StatusCode::OK, &view)?)
            .await);
    }
    let record = ReservationRecord {
        idempotency_key: key.to_owned(),
        subject: body.subject.clone(),
        action: body.action.clone(),
        overage_policy: body.overage_policy.unwrap_or_default(),
        grace_period_ms: grace_ms,
        created_at_ms: state.now().as_millis(),
        ttl_ms,
        estimate_micros: estimate.get(),
    };
    // The record first: a hold never exists without its policy and grace.
    state.save_record(&tenant, &id.text, &record).await?;
    let lifetime =
        Ttl::from_millis(ttl_ms + grace_ms).map_err(|e| CyclesError::invalid("ttl_ms", e))?;
    let reservation = Reservation {
        user: id.hold.user.clone(),
        key: id.hold.key.clone(),
        estimate,
        model,
        ttl: lifetime,
    };
    let decision = state
        .app
        .budget()
        .reserve_priced(&tenant, reservation, None)
        .await
        .map_err(|e| reserve_error(e, &scope_path))?;
    let hold = match decision {
        ReserveDecision::Reserved(guard) => guard.into_ticket().hold,
        ReserveDecision::BudgetExceeded {
            remaining, scope, ..
        } => {
            return Err(CyclesError::BudgetExceeded(format!(
                "insufficient remaining budget for scope {scope_path} ({scope:?} limit): {} USD_MICROCENTS remain, {} asked",
                Amount::of(remaining).amount,
                Amount::of(estimate).amount
            )));
        }
        ReserveDecision::AlreadySettled => return Err(finalized(&id)),
    };
    let view = CreateView {
        decision: "ALLOW",
        reservation_id: Some(id.text),
        reserved: Some(Amount::of(hold.estimate)),
        expires_at_ms: Some(hold.expires_at.as_millis() - grace_ms),
        scope_path,
        affected_scopes,
        reason_code: None,
    };
    Ok(claimed
        .finish(&state, Reply::json(StatusCode::OK, &view)?)
        .await)
}

/// A commit, release or extend, claimed, with what is known of its hold.
struct Found {
    id: ReservationId,
    claimed: Claimed,
    record: Option<ReservationRecord>,
    /// What the store holds for it; `None` when the store could not answer
    /// (a commit or release is then kept and applied when it can).
    state: Option<HoldState>,
}

impl Found {
    fn grace_ms(&self) -> i64 {
        self.record.as_ref().map_or(0, |r| r.grace_period_ms)
    }

    /// The estimate held: the store's, else the record's.
    fn estimate(&self) -> Option<Micros> {
        match &self.state {
            Some(HoldState::Held { hold }) => Some(hold.estimate),
            _ => self
                .record
                .as_ref()
                .and_then(|r| Micros::new(r.estimate_micros).ok()),
        }
    }

    /// What the store or the record knows of the hold, for a settlement
    /// the store may have to make without it.
    fn known(&self) -> KnownHold {
        if let Some(HoldState::Held { hold }) = &self.state {
            return KnownHold::from(hold);
        }
        let Some(record) = &self.record else {
            return KnownHold::default();
        };
        let created_at = Timestamp::from_millis(record.created_at_ms).ok();
        KnownHold {
            model: record.action.model().ok(),
            period: created_at.and_then(|at| Period::containing(at).ok()),
            estimate: Micros::new(record.estimate_micros).ok(),
            created_at,
        }
    }

    /// The 410 the protocol asks for a hold past `until` (its expiry, with
    /// the grace for commit and release) or reaped, when the store could
    /// tell; a settled hold is answered by the settlement itself.
    fn check_not_expired(&self, now: Timestamp, grace_counts: bool) -> Result<(), CyclesError> {
        match &self.state {
            Some(HoldState::Held { hold }) => {
                let until = if grace_counts {
                    hold.expires_at
                } else {
                    hold.expires_at
                        .plus_millis(-self.grace_ms())
                        .unwrap_or(hold.expires_at)
                };
                if now < until {
                    Ok(())
                } else {
                    Err(expired(&self.id))
                }
            }
            Some(HoldState::Settled {
                settled: SettledAs::Reaped { .. },
            }) => Err(expired(&self.id)),
            _ => Ok(()),
        }
    }

    /// A finalized hold's first cost, when the store said so.
    fn finalized_with(&self) -> Option<Micros> {
        match &self.state {
            Some(HoldState::Settled {
                settled: SettledAs::Finalized { actual },
            }) => Some(*actual),
            _ => None,
        }
    }
}

/// Resolves `text`, claims the request and reads the hold and its record.
/// The read only serves the protocol's answers (410 past the expiry, 409
/// once finalized): a store that cannot answer it, or no longer knows the
/// hold, does not stop a commit.
async fn find(
    state: &CyclesState,
    tenant: &CommunityId,
    text: &str,
    operation: &str,
    key: &str,
    raw: &serde_json::Value,
) -> Result<Result<Found, Reply>, CyclesError> {
    let id = state.resolve(tenant, text).await?;
    let claimed = match state.begin(tenant, operation, &id.text, key, raw).await? {
        Begun::Replay(reply) => return Ok(Err(reply)),
        Begun::Fresh(claimed) => claimed,
    };
    let found = match state.app.budget().lookup(tenant, &id.hold).await {
        Ok(found) => Some(found),
        Err(error) => {
            tracing::warn!(%tenant, reservation = %id.text, %error, "budget store unavailable; settling by ids");
            None
        }
    };
    let record = state.load_record(tenant, &id.text).await?;
    Ok(Ok(Found {
        id,
        claimed,
        record,
        state: found,
    }))
}

fn finalized(id: &ReservationId) -> CyclesError {
    CyclesError::ReservationFinalized(format!(
        "reservation {} is already committed or released",
        id.text
    ))
}

fn expired(id: &ReservationId) -> CyclesError {
    CyclesError::ReservationExpired(format!("reservation {} has expired", id.text))
}

fn not_found(id: &ReservationId) -> CyclesError {
    CyclesError::NotFound(format!("no reservation {}", id.text))
}

fn finalize_error(error: FinalizeError, id: &ReservationId) -> CyclesError {
    match error {
        FinalizeError::InvalidInput(message) => CyclesError::InvalidRequest(message),
        error @ FinalizeError::CostOutOfRange(_) => CyclesError::invalid("actual", error),
        FinalizeError::SettledOtherwise { .. } => finalized(id),
        FinalizeError::UnknownHold { .. } => not_found(id),
        other => CyclesError::Internal(format!("{other}; retry with the same key")),
    }
}

fn positive(amount: Option<Micros>) -> Option<Amount> {
    amount.filter(|a| *a > Micros::ZERO).map(Amount::of)
}

/// Commits the actual cost: the estimate is released, the actual charged.
#[utoipa::path(
    post,
    path = "/v1/reservations/{reservation_id}/commit",
    tag = "cycles",
    params(
        ("reservation_id" = String, Path, description = "The id the create answered"),
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = CommitBody,
    responses(
        (status = 200, description = "COMMITTED", body = CommitView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such reservation for this tenant (another tenant's id included)", body = ErrorBody),
        (status = 409, description = "BUDGET_EXCEEDED (REJECT), RESERVATION_FINALIZED or IDEMPOTENCY_MISMATCH", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR: retry with the same key", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn commit(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    Path(text): Path<String>,
    headers: HeaderMap,
    Json { body, raw }: Json<CommitBody>,
) -> Result<Reply, CyclesError> {
    auth::request_key(&headers, &body.idempotency_key)?;
    let actual = body
        .actual
        .to_micros("actual", &format!("tenant:{tenant}"))?;
    let found = match find(
        &state,
        &tenant,
        &text,
        "commit",
        &body.idempotency_key,
        &raw,
    )
    .await?
    {
        Ok(found) => found,
        Err(replay) => return Ok(replay),
    };
    if let Some(first) = found.finalized_with() {
        if found.claimed.retried && first == actual {
            // This request's first attempt committed, then was cut off.
            let view = CommitView {
                status: "COMMITTED",
                charged: Amount::of(first),
                released: positive(found.estimate().and_then(|e| e.checked_sub(first).ok())),
            };
            return Ok(found
                .claimed
                .finish(&state, Reply::json(StatusCode::OK, &view)?)
                .await);
        }
        return Err(finalized(&found.id));
    }
    found.check_not_expired(state.now(), true)?;
    let policy = found
        .record
        .as_ref()
        .map_or(OveragePolicy::default(), |r| r.overage_policy);
    if let Some(estimate) = found.estimate()
        && policy == OveragePolicy::Reject
        && actual > estimate
    {
        return Err(CyclesError::BudgetExceeded(format!(
            "actual {} exceeds the reserved {} USD_MICROCENTS under overage_policy REJECT; the reservation stays active",
            Amount::of(actual).amount,
            Amount::of(estimate).amount
        )));
    }
    let request = SettleRequest::new(tenant.clone(), found.id.hold.clone(), Usage::cost(actual))
        .with_known(found.known());
    let settled = state
        .app
        .budget()
        .settle(request)
        .await
        .map_err(|e| finalize_error(e, &found.id))?;
    let estimate = found.estimate();
    let (charged, released) = match settled {
        // Kept durably and applied exactly once when the store answers:
        // the protocol has no "accepted" answer, and the commit will not
        // fail, so it is answered as made (see the module docs).
        Settled::Queued { actual } => (actual, estimate.and_then(|e| e.checked_sub(actual).ok())),
        Settled::Committed { outcome } => match outcome {
            FinalizeOutcome::Finalized(r) => (r.actual, r.estimate.checked_sub(r.actual).ok()),
            FinalizeOutcome::LateFinalized(r) | FinalizeOutcome::CommittedWithoutHold(r) => {
                (r.actual, None)
            }
            FinalizeOutcome::AlreadyFinalized { actual: first } if found.claimed.retried => {
                (first, estimate.and_then(|e| e.checked_sub(first).ok()))
            }
            _ => return Err(finalized(&found.id)),
        },
    };
    let view = CommitView {
        status: "COMMITTED",
        charged: Amount::of(charged),
        released: positive(released),
    };
    Ok(found
        .claimed
        .finish(&state, Reply::json(StatusCode::OK, &view)?)
        .await)
}

/// Releases a reservation whose action never ran: nothing is charged.
#[utoipa::path(
    post,
    path = "/v1/reservations/{reservation_id}/release",
    tag = "cycles",
    params(
        ("reservation_id" = String, Path, description = "The id the create answered"),
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = ReleaseBody,
    responses(
        (status = 200, description = "RELEASED", body = ReleaseView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such reservation for this tenant (another tenant's id included)", body = ErrorBody),
        (status = 409, description = "RESERVATION_FINALIZED or IDEMPOTENCY_MISMATCH", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR: retry with the same key", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn release(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    Path(text): Path<String>,
    headers: HeaderMap,
    Json { body, raw }: Json<ReleaseBody>,
) -> Result<Reply, CyclesError> {
    auth::request_key(&headers, &body.idempotency_key)?;
    let found = match find(
        &state,
        &tenant,
        &text,
        "release",
        &body.idempotency_key,
        &raw,
    )
    .await?
    {
        Ok(found) => found,
        Err(replay) => return Ok(replay),
    };
    if let Some(first) = found.finalized_with() {
        if found.claimed.retried && first == Micros::ZERO {
            let view = ReleaseView {
                status: "RELEASED",
                released: Amount::of(found.estimate().unwrap_or(Micros::ZERO)),
            };
            return Ok(found
                .claimed
                .finish(&state, Reply::json(StatusCode::OK, &view)?)
                .await);
        }
        return Err(finalized(&found.id));
    }
    if found.state == Some(HoldState::Unknown) {
        // Nothing held, nothing to charge: nothing to release.
        return Err(not_found(&found.id));
    }
    found.check_not_expired(state.now(), true)?;
    let request =
        SettleRequest::cancel(tenant.clone(), found.id.hold.clone()).with_known(found.known());
    let settled = state
        .app
        .budget()
        .settle(request)
        .await
        .map_err(|e| finalize_error(e, &found.id))?;
    let estimate = found.estimate().unwrap_or(Micros::ZERO);
    let released = match settled {
        Settled::Queued { .. } => estimate,
        Settled::Committed { outcome } => match outcome {
            FinalizeOutcome::Finalized(r) => r.estimate,
            FinalizeOutcome::AlreadyFinalized { actual }
                if actual == Micros::ZERO && found.claimed.retried =>
            {
                estimate
            }
            FinalizeOutcome::LateFinalized(_) => return Err(expired(&found.id)),
            _ => return Err(finalized(&found.id)),
        },
    };
    let view = ReleaseView {
        status: "RELEASED",
        released: Amount::of(released),
    };
    Ok(found
        .claimed
        .finish(&state, Reply::json(StatusCode::OK, &view)?)
        .await)
}

/// Adds `extend_by_ms` to a live reservation's expiry (a heartbeat).
#[utoipa::path(
    post,
    path = "/v1/reservations/{reservation_id}/extend",
    tag = "cycles",
    params(
        ("reservation_id" = String, Path, description = "The id the create answered"),
        ("X-Idempotency-Key" = Option<String>, Header, description = "When sent, must equal the body's idempotency_key")
    ),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "ACTIVE, with the new expiry", body = ExtendView),
        (status = 400, description = "INVALID_REQUEST or UNIT_MISMATCH", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no such reservation for this tenant (another tenant's id included)", body = ErrorBody),
        (status = 409, description = "RESERVATION_FINALIZED or IDEMPOTENCY_MISMATCH", body = ErrorBody),
        (status = 410, description = "RESERVATION_EXPIRED", body = ErrorBody),
        (status = 500, description = "INTERNAL_ERROR: retry with the same key", body = ErrorBody),
    ),
    security(("cycles_api_key" = []))
)]
pub(super) async fn extend(
    State(state): State<CyclesState>,
    Tenant(tenant): Tenant,
    Path(text): Path<String>,
    headers: HeaderMap,
    Json { body, raw }: Json<ExtendBody>,
) -> Result<Reply, CyclesError> {
    auth::request_key(&headers, &body.idempotency_key)?;
    if !(1..=86_400_000).contains(&body.extend_by_ms) {
        return Err(CyclesError::invalid("extend_by_ms", "from 1 to 86400000"));
    }
    let found = match find(
        &state,
        &tenant,
        &text,
        "extend",
        &body.idempotency_key,
        &raw,
    )
    .await?
    {
        Ok(found) => found,
        Err(replay) => return Ok(replay),
    };
    let grace = found.grace_ms();
    let now = state.now();
    let hold = match &found.state {
        Some(HoldState::Held { hold }) => hold.clone(),
        Some(HoldState::Unknown) => return Err(not_found(&found.id)),
        Some(HoldState::Settled {
            settled: SettledAs::Finalized { .. },
        }) => return Err(finalized(&found.id)),
        Some(HoldState::Settled { .. }) => return Err(expired(&found.id)),
        None => {
            return Err(CyclesError::Internal(
                "budget store unavailable; nothing was extended, retry with the same key".into(),
            ));
        }
    };
    // Extend is refused past the expiry itself, not past the grace.
    found.check_not_expired(now, false)?;
    let wanted = hold
        .expires_at
        .plus_millis(body.extend_by_ms)
        .map_err(|e| CyclesError::invalid("extend_by_ms", e))?;
    let ttl = Ttl::from_millis(wanted.as_millis() - now.as_millis())
        .map_err(|e| CyclesError::invalid("extend_by_ms", e))?;
    let outcome = state
        .app
        .budget()
        .extend(&tenant, &found.id.hold, ttl)
        .await
        .map_err(|error| match error {
            ExtendError::UnknownHold(_) => not_found(&found.id),
            other => CyclesError::Internal(other.to_string()),
        })?;
    let expires_at = match outcome {
        spendgate_domain::ExtendOutcome::Extended { expires_at } => expires_at,
        _ => return Err(expired(&found.id)),
    };
    let view = ExtendView {
        status: "ACTIVE",
        expires_at_ms: expires_at.as_millis() - grace,
    };
    Ok(found
        .claimed
        .finish(&state, Reply::json(StatusCode::OK, &view)?)
        .await)
}
