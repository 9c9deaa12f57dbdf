//! The reservation routes: reserve, look up, finalize, cancel, extend and
//! hand over one call's hold, by (community, user, key).
//!
//! The server keeps no guard between requests: a reserve gives the guard
//! up ([`crate::HoldGuard::into_ticket`]) and the settling routes settle by
//! ids ([`BudgetService::settle`]), never by reading the hold first: a
//! store that cannot answer keeps the settlement queued (202), a store that
//! lost the hold commits the cost without it. A call already finalized
//! answers its first actual (a replay), or 409 for another actual.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use spendgate_domain::{
    CallId, CommunityId, ExtendOutcome, FinalizeOutcome, Hold, HoldRef, HoldState, Micros,
    ModelAlias, Period, SettledAs, Timestamp, TokenCounts, UserId,
};

use super::ApiState;
use super::extract::{Body, HoldPath, KeyHeader, Tenant};
use super::problem::{ApiError, Problem};
use super::wire::{
    self, ExtendBody, ExtendView, FinalizeBody, HandoverView, HoldStateView, HoldView,
    ReservationView, ReserveBody, SettleBody, SettlementView, micros_i64, usd,
};
use crate::services::budget::{
    BudgetService, CostBasis, EstimateError, ExtendError, KnownHold, ReserveDecision,
    ReserveRequest, SettleRequest, Settled, Usage,
};

/// A reserve's answer and its status (201 new, 200 replay).
type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// Reserves budget for one call.
#[utoipa::path(
    post,
    path = "/api/v1/communities/{community}/reservations",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community charged"),
        ("Idempotency-Key" = String, Header, description = "The call's idempotency key"),
    ),
    request_body = ReserveBody,
    responses(
        (status = 201, description = "Held: make the call, then finalize or cancel", body = ReservationView),
        (status = 200, description = "A replay: the first hold", body = ReservationView),
        (status = 402, description = "Budget exceeded: do not make the call", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token not allowed for the community, AI disabled, or the tier does not allow the model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Key reused with another model or estimate, call already settled, or community not configured", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: denied, retry with the same key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reserve(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    KeyHeader(key): KeyHeader,
    Body(body): Body<ReserveBody>,
) -> Answer<ReservationView> {
    let user = UserId::parse(wire::required("user", body.user)?)
        .map_err(|e| ApiError::invalid("user", e))?;
    let model = ModelAlias::parse(wire::required("model", body.model)?)
        .map_err(|e| ApiError::invalid("model", e))?;
    let tier = wire::required("tier", body.tier)?;
    let estimate = wire::money(
        "estimate",
        body.estimate_usd.as_deref(),
        body.estimate_micros,
    )?;
    let cost = match (estimate, body.prompt_tokens, body.max_completion_tokens) {
        (Some(amount), None, None) if body.tool_use.is_none() => CostBasis::Estimate { amount },
        (Some(_), _, _) => {
            return Err(ApiError::invalid(
                "estimate",
                "give either an estimate or token counts (with tool_use), not both",
            ));
        }
        (None, Some(prompt), Some(max_completion)) => CostBasis::Tokens {
            prompt,
            max_completion,
            tool_use: body.tool_use.unwrap_or(false),
        },
        (None, _, _) => {
            return Err(ApiError::invalid(
                "prompt_tokens",
                "give prompt_tokens and max_completion_tokens, or estimate_usd or estimate_micros",
            ));
        }
    };
    let ttl = body.ttl_ms.map(|ms| wire::ttl("ttl_ms", ms)).transpose()?;
    let request = ReserveRequest {
        community: community.clone(),
        user,
        key,
        model: model.clone(),
        tier,
        cost,
        ttl,
        trace_id: body.trace_id,
    };
    let budget = state.app.budget();
    match budget.reserve(request).await? {
        ReserveDecision::Reserved(guard) => {
            let (replay, remaining, limit, warning) = (
                guard.is_replay(),
                guard.remaining(),
                guard.limit(),
                guard.warning(),
            );
            let ticket = guard.into_ticket();
            if replay {
                let expected = match cost {
                    CostBasis::Estimate { amount } => amount,
                    CostBasis::Tokens {
                        prompt,
                        max_completion,
                        tool_use,
                    } => budget
                        .estimate(&community, &model, prompt, max_completion, tool_use)
                        .await
                        .map_err(estimate_error)?,
                };
                let first = &ticket.hold;
                if first.model != model || first.estimate != expected {
                    return Err(ApiError::KeyReused(format!(
                        "the key holds {} for model {}; this request asks {} for model {}",
                        usd(first.estimate),
                        first.model,
                        usd(expected),
                        model
                    )));
                }
            }
            let view = ReservationView {
                hold: hold_view(&community, &ticket.hold),
                remaining_usd: remaining.map(usd),
                remaining_micros: remaining.map(micros_i64),
                limit_usd: limit.map(usd),
                limit_micros: limit.map(micros_i64),
                warning,
                replay,
            };
            let status = if replay {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(view)))
        }
        ReserveDecision::BudgetExceeded {
            remaining,
            limit,
            scope,
            estimate,
        } => Err(ApiError::BudgetExceeded {
            remaining,
            limit,
            scope,
            estimate,
        }),
        ReserveDecision::AlreadySettled => Err(ApiError::AlreadySettled),
    }
}

/// What the store knows of one call.
#[utoipa::path(
    get,
    path = "/api/v1/communities/{community}/reservations/{user}/{key}",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community"),
        ("user" = String, Path, description = "The user"),
        ("key" = String, Path, description = "The call's idempotency key"),
    ),
    responses(
        (status = 200, description = "Held, finalized or reaped", body = HoldStateView),
        (status = 404, description = "Unknown hold", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn lookup(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    HoldPath(hold): HoldPath,
) -> Result<Json<HoldStateView>, ApiError> {
    let found = state.app.budget().lookup(&community, &hold).await?;
    let mut view = HoldStateView {
        community: community.to_string(),
        user: hold.user.to_string(),
        key: hold.key.to_string(),
        state: String::new(),
        hold: None,
        actual_usd: None,
        actual_micros: None,
    };
    match found {
        HoldState::Held { hold: held } => {
            view.state = "held".to_owned();
            view.hold = Some(hold_view(&community, &held));
        }
        HoldState::Settled {
            settled: SettledAs::Reaped { hold: reaped },
        } => {
            view.state = "reaped".to_owned();
            view.hold = Some(hold_view(&community, &reaped));
        }
        HoldState::Settled {
            settled: SettledAs::Finalized { actual },
        } => {
            view.state = "finalized".to_owned();
            view.actual_usd = Some(usd(actual));
            view.actual_micros = Some(micros_i64(actual));
        }
        HoldState::Unknown => return Err(unknown(&hold)),
    }
    Ok(Json(view))
}

/// Finalizes a call with what it used.
#[utoipa::path(
    post,
    path = "/api/v1/communities/{community}/reservations/{user}/{key}/finalize",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community"),
        ("user" = String, Path, description = "The user"),
        ("key" = String, Path, description = "The call's idempotency key"),
        ("Idempotency-Key" = String, Header, description = "Must equal the path's key"),
    ),
    request_body = FinalizeBody,
    responses(
        (status = 200, description = "Committed (also without a hold, when the store lost it), or a replay: the first actual", body = SettlementView),
        (status = 202, description = "Store unavailable: kept and applied when it is back", body = SettlementView),
        (status = 409, description = "Already finalized with another actual", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value; a cost that would take a counter out of range (cost-out-of-range: kept as a dead letter, retrying cannot help); token counts for a hold the store lost, without its model; or Idempotency-Key differs from the path key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Neither store nor finalize queue answered, or (token counts without the model) the store could not tell the model: retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn finalize(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    HoldPath(hold): HoldPath,
    KeyHeader(key): KeyHeader,
    Body(body): Body<FinalizeBody>,
) -> Answer<SettlementView> {
    check_key(&key, &hold)?;
    let actual = wire::money("actual", body.actual_usd.as_deref(), body.actual_micros)?;
    let tokens = match (body.prompt_tokens, body.completion_tokens) {
        (Some(prompt), Some(completion)) => Some(TokenCounts { prompt, completion }),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                "completion_tokens",
                "give both prompt_tokens and completion_tokens, or neither",
            ));
        }
    };
    let usage = match (actual, tokens) {
        (Some(actual), tokens) => Usage::Cost { actual, tokens },
        (None, Some(tokens)) => Usage::Tokens { tokens },
        (None, None) => {
            return Err(ApiError::invalid(
                "actual",
                "give actual_usd, actual_micros, or prompt_tokens and completion_tokens",
            ));
        }
    };
    let known = KnownHold {
        model: body
            .model
            .map(|m| ModelAlias::parse(m).map_err(|e| ApiError::invalid("model", e)))
            .transpose()?,
        period: body
            .period
            .map(|p| Period::parse(&p).map_err(|e| ApiError::invalid("period", e)))
            .transpose()?,
        estimate: None,
        created_at: body
            .created_at_ms
            .map(|ms| Timestamp::from_millis(ms).map_err(|e| ApiError::invalid("created_at_ms", e)))
            .transpose()?,
    };
    let request = SettleRequest::new(community, hold, usage)
        .with_known(known)
        .with_trace_id(body.trace_id);
    settle(state.app.budget(), request).await
}

/// Cancels a call that never ran: its estimate is released, nothing
/// committed.
#[utoipa::path(
    post,
    path = "/api/v1/communities/{community}/reservations/{user}/{key}/cancel",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community"),
        ("user" = String, Path, description = "The user"),
        ("key" = String, Path, description = "The call's idempotency key"),
        ("Idempotency-Key" = String, Header, description = "Must equal the path's key"),
    ),
    request_body(content = Option<SettleBody>, description = "Optional"),
    responses(
        (status = 200, description = "Cancelled (or a replay of the cancel)", body = SettlementView),
        (status = 202, description = "Store unavailable: kept and applied when it is back", body = SettlementView),
        (status = 404, description = "Unknown hold: nothing held, nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finalized with a cost", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key differs from the path key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Neither store nor finalize queue answered: retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    HoldPath(hold): HoldPath,
    KeyHeader(key): KeyHeader,
    Body(body): Body<SettleBody>,
) -> Answer<SettlementView> {
    check_key(&key, &hold)?;
    let request = SettleRequest::cancel(community, hold).with_trace_id(body.trace_id);
    settle(state.app.budget(), request).await
}

/// Pushes a live hold's expiry out (a long stream's heartbeat).
#[utoipa::path(
    post,
    path = "/api/v1/communities/{community}/reservations/{user}/{key}/extend",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community"),
        ("user" = String, Path, description = "The user"),
        ("key" = String, Path, description = "The call's idempotency key"),
        ("Idempotency-Key" = String, Header, description = "Must equal the path's key"),
    ),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "Extended", body = ExtendView),
        (status = 404, description = "Unknown hold", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The hold expired or was settled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid TTL, or Idempotency-Key differs from the path key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn extend(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    HoldPath(hold): HoldPath,
    KeyHeader(key): KeyHeader,
    Body(body): Body<ExtendBody>,
) -> Result<Json<ExtendView>, ApiError> {
    check_key(&key, &hold)?;
    let ttl = wire::ttl("ttl_ms", wire::required("ttl_ms", body.ttl_ms)?)?;
    let outcome = state
        .app
        .budget()
        .extend(&community, &hold, ttl)
        .await
        .map_err(|error| match error {
            ExtendError::UnknownHold(_) => unknown(&hold),
            other => other.into(),
        })?;
    match outcome {
        ExtendOutcome::Extended { expires_at } => Ok(Json(ExtendView {
            community: community.to_string(),
            user: hold.user.to_string(),
            key: hold.key.to_string(),
            expires_at_ms: expires_at.as_millis(),
        })),
        ExtendOutcome::NotLive => Err(ApiError::HoldNotLive),
        other => Err(ApiError::Internal(
            format!("unexpected extend outcome {other:?}").into(),
        )),
    }
}

/// Hands a call whose cost is unknown to reconciliation, which asks the
/// provider later and finalizes with the real cost.
#[utoipa::path(
    post,
    path = "/api/v1/communities/{community}/reservations/{user}/{key}/hand-over",
    tag = "reservations",
    params(
        ("community" = String, Path, description = "The community"),
        ("user" = String, Path, description = "The user"),
        ("key" = String, Path, description = "The call's idempotency key"),
        ("Idempotency-Key" = String, Header, description = "Must equal the path's key"),
    ),
    request_body(content = Option<SettleBody>, description = "Optional"),
    responses(
        (status = 202, description = "Handed over", body = HandoverView),
        (status = 404, description = "Unknown hold", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finalized, or no provider usage source is configured (no-usage-source): finalize with the cost instead", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key differs from the path key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or reconciliation queue unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn hand_over(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    HoldPath(hold): HoldPath,
    KeyHeader(key): KeyHeader,
    Body(body): Body<SettleBody>,
) -> Answer<HandoverView> {
    check_key(&key, &hold)?;
    state
        .app
        .budget()
        .hand_over_by_ids(&community, &hold, body.trace_id)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HandoverView {
            community: community.to_string(),
            user: hold.user.to_string(),
            key: hold.key.to_string(),
            handed_over: true,
        }),
    ))
}

/// Settles a call by its ids through the service and answers what
/// happened: 200 committed (or a replay), 202 queued.
async fn settle(budget: &BudgetService, request: SettleRequest) -> Answer<SettlementView> {
    let mut view = SettlementView {
        community: request.community.to_string(),
        user: request.hold.user.to_string(),
        key: request.hold.key.to_string(),
        result: String::new(),
        actual_usd: String::new(),
        actual_micros: 0,
        estimate_usd: None,
        estimate_micros: None,
        overshoot_usd: None,
        overshoot_micros: None,
        period: None,
        replay: false,
    };
    let receipt = match budget.settle(request).await? {
        Settled::Queued { actual } => {
            view.result = "queued".to_owned();
            set_actual(&mut view, actual);
            return Ok((StatusCode::ACCEPTED, Json(view)));
        }
        Settled::Committed { outcome } => match outcome {
            FinalizeOutcome::Finalized(receipt) => {
                view.result = "finalized".to_owned();
                receipt
            }
            FinalizeOutcome::LateFinalized(receipt) => {
                view.result = "late_finalized".to_owned();
                receipt
            }
            FinalizeOutcome::CommittedWithoutHold(receipt) => {
                view.result = "committed_without_hold".to_owned();
                receipt
            }
            FinalizeOutcome::AlreadyFinalized { actual } => {
                view.result = "already_finalized".to_owned();
                view.replay = true;
                set_actual(&mut view, actual);
                return Ok((StatusCode::OK, Json(view)));
            }
            other => {
                return Err(ApiError::Internal(
                    format!("unexpected finalize outcome {other:?}").into(),
                ));
            }
        },
    };
    set_actual(&mut view, receipt.actual);
    view.estimate_usd = Some(usd(receipt.estimate));
    view.estimate_micros = Some(micros_i64(receipt.estimate));
    view.overshoot_usd = Some(usd(receipt.overshoot));
    view.overshoot_micros = Some(micros_i64(receipt.overshoot));
    view.period = Some(receipt.period.to_string());
    Ok((StatusCode::OK, Json(view)))
}

fn set_actual(view: &mut SettlementView, actual: Micros) {
    view.actual_usd = usd(actual);
    view.actual_micros = micros_i64(actual);
}

/// The header key must be the path's key on the routes of one hold.
fn check_key(header: &spendgate_domain::IdempotencyKey, hold: &HoldRef) -> Result<(), ApiError> {
    if *header == hold.key {
        Ok(())
    } else {
        Err(ApiError::KeyMismatch {
            header: header.to_string(),
            path: hold.key.to_string(),
        })
    }
}

fn unknown(hold: &HoldRef) -> ApiError {
    ApiError::UnknownHold {
        user: hold.user.to_string(),
        key: hold.key.to_string(),
    }
}

fn estimate_error(error: EstimateError) -> ApiError {
    match error {
        EstimateError::Pricing(e) => ApiError::invalid("model", e),
        EstimateError::ConfigUnavailable(e) => ApiError::Unavailable(e.into()),
    }
}

pub(crate) fn hold_view(community: &CommunityId, hold: &Hold) -> HoldView {
    HoldView {
        community: community.to_string(),
        user: hold.user.to_string(),
        key: hold.key.to_string(),
        call_id: CallId::of(community, hold).to_string(),
        model: hold.model.to_string(),
        estimate_usd: usd(hold.estimate),
        estimate_micros: micros_i64(hold.estimate),
        period: hold.period.to_string(),
        created_at_ms: hold.created_at.as_millis(),
        expires_at_ms: hold.expires_at.as_millis(),
    }
}
