//! `reserve`, `finalize`, `cancel` and `extend`: one call's hold, by its
//! ids, across separate invocations of the program.

use serde_json::{Value, json};
use spendgate_domain::{ExtendOutcome, FinalizeOutcome, HoldRef, Micros, TokenCounts, Ttl};

use crate::Spendgate;
use crate::inbound::cli::output::{CliError, Exit, Report, usd};
use crate::inbound::cli::{FinalizeArgs, HoldIds, ReserveArgs};
use crate::services::budget::{
    CostBasis, FinalizeError, KnownHold, ReserveDecision, ReserveRequest, SettleRequest, Settled,
    Usage,
};

fn ttl_arg(name: &str, ms: u32) -> Result<Ttl, CliError> {
    Ttl::from_millis(i64::from(ms)).map_err(|e| CliError::Usage(format!("invalid {name}: {e}")))
}

fn ids_json(ids: &HoldIds) -> Value {
    json!({
        "community": ids.community.as_str(),
        "user": ids.user.as_str(),
        "key": ids.key.as_str(),
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        base.extend(extra);
    }
    base
}

/// `reserve`: holds the estimate and keeps the hold for a later
/// `finalize` or `cancel` by ids. Exits 3 when it does not fit.
///
/// # Errors
/// [`CliError::Reserve`] for every refusal before the budget is consulted.
pub async fn reserve(app: &Spendgate, args: ReserveArgs) -> Result<Report, CliError> {
    let cost = match (
        args.estimate_usd,
        args.prompt_tokens,
        args.max_completion_tokens,
    ) {
        (Some(amount), None, None) => CostBasis::Estimate { amount },
        (None, Some(prompt), Some(max_completion)) => CostBasis::Tokens {
            prompt,
            max_completion,
            tool_use: args.tool_use,
        },
        _ => {
            return Err(CliError::Usage(
                "give either --prompt-tokens and --max-completion-tokens, or --estimate-usd".into(),
            ));
        }
    };
    let ttl = args.ttl_ms.map(|ms| ttl_arg("--ttl-ms", ms)).transpose()?;
    let request = ReserveRequest {
        community: args.ids.community.clone(),
        user: args.ids.user.clone(),
        key: args.ids.key.clone(),
        model: args.model.clone(),
        tier: args.tier,
        cost,
        ttl,
        trace_id: args.trace_id.clone(),
    };
    let ids = ids_json(&args.ids);
    match app.budget().reserve(request).await? {
        ReserveDecision::Reserved(guard) => {
            let replay = guard.is_replay();
            let (remaining, limit, warning) = (guard.remaining(), guard.limit(), guard.warning());
            // The hold outlives this process: settled later by its ids.
            let ticket = guard.into_ticket();
            let hold = &ticket.hold;
            let doc = merge(
                ids,
                json!({
                    "result": if replay { "already_reserved" } else { "reserved" },
                    "call_id": ticket.call_id().as_str(),
                    "model": hold.model.as_str(),
                    "estimate_usd": usd(hold.estimate),
                    "remaining_usd": remaining.map(usd),
                    "limit_usd": limit.map(usd),
                    "warning": warning,
                    "period": hold.period.to_string(),
                    "expires_at_ms": hold.expires_at.as_millis(),
                }),
            );
            let mut text = format!(
                "{} ${} for {} / {} / {} (period {}, call id {})",
                if replay {
                    "already reserved:"
                } else {
                    "reserved"
                },
                hold.estimate,
                args.ids.community,
                args.ids.user,
                args.ids.key,
                hold.period,
                ticket.call_id()
            );
            if let Some(remaining) = remaining {
                text.push_str(&format!("; ${remaining} left"));
            }
            if warning {
                text.push_str("; warning threshold reached");
            }
            Ok(Report::ok(doc, text))
        }
        ReserveDecision::BudgetExceeded {
            remaining,
            limit,
            scope,
            estimate,
        } => {
            let scope = match scope {
                spendgate_domain::LimitScope::Community => "community",
                spendgate_domain::LimitScope::User => "user",
            };
            let doc = merge(
                ids,
                json!({
                    "result": "budget_exceeded",
                    "scope": scope,
                    "estimate_usd": usd(estimate),
                    "remaining_usd": usd(remaining),
                    "limit_usd": usd(limit),
                }),
            );
            Ok(Report {
                json: doc,
                human: format!(
                    "budget exceeded ({scope} limit ${limit}): estimate ${estimate}, ${remaining} left; nothing held"
                ),
                exit: Exit::BudgetExceeded,
            })
        }
        ReserveDecision::AlreadySettled => Ok(Report::ok(
            merge(ids, json!({ "result": "already_settled" })),
            "already settled: this key's call was finalized, cancelled or reaped; do not run it again",
        )),
    }
}

/// `finalize`: commits what the call cost (a late finalize when it was
/// reaped). A finalized call reports its first cost; unknown ids exit 5.
///
/// # Errors
/// [`CliError::NotFound`], [`CliError::Status`], [`CliError::Finalize`].
pub async fn finalize(app: &Spendgate, args: FinalizeArgs) -> Result<Report, CliError> {
    let usage = match (args.actual_usd, args.prompt_tokens, args.completion_tokens) {
        (Some(actual), None, None) => Usage::cost(actual),
        (None, Some(prompt), Some(completion)) => Usage::Tokens {
            tokens: TokenCounts { prompt, completion },
        },
        _ => {
            return Err(CliError::Usage(
                "give either --actual-usd, or --prompt-tokens and --completion-tokens".into(),
            ));
        }
    };
    let known = KnownHold {
        model: args.model,
        period: args.period,
        ..KnownHold::default()
    };
    let request = settle_request(&args.ids, usage)
        .with_known(known)
        .with_trace_id(args.trace_id);
    settle(app, &args.ids, request, "finalized").await
}

fn settle_request(ids: &HoldIds, usage: Usage) -> SettleRequest {
    SettleRequest::new(
        ids.community.clone(),
        HoldRef {
            user: ids.user.clone(),
            key: ids.key.clone(),
        },
        usage,
    )
}

/// `cancel`: releases the hold without cost.
///
/// # Errors
/// As [`finalize`].
pub async fn cancel(app: &Spendgate, ids: HoldIds) -> Result<Report, CliError> {
    let request = settle_request(&ids, Usage::cost(Micros::ZERO));
    settle(app, &ids, request, "cancelled").await
}

/// Settles by ids through the service: never by reading the hold first,
/// so a store that cannot answer queues the settlement and a store that
/// lost the hold commits the cost without it.
async fn settle(
    app: &Spendgate,
    ids: &HoldIds,
    request: SettleRequest,
    verb: &str,
) -> Result<Report, CliError> {
    let settled = app
        .budget()
        .settle(request)
        .await
        .map_err(|error| match error {
            FinalizeError::UnknownHold { .. } => not_found(ids),
            other => other.into(),
        })?;
    let (result, fields, text) = match settled {
        Settled::Committed { outcome } => match &outcome {
            FinalizeOutcome::Finalized(r)
            | FinalizeOutcome::LateFinalized(r)
            | FinalizeOutcome::CommittedWithoutHold(r) => {
                let late = !matches!(outcome, FinalizeOutcome::Finalized(_));
                let result = match &outcome {
                    FinalizeOutcome::Finalized(_) => verb.to_owned(),
                    FinalizeOutcome::LateFinalized(_) => "late_finalized".to_owned(),
                    _ => "committed_without_hold".to_owned(),
                };
                let text = format!(
                    "{result}: ${} committed, estimate ${} {} (period {}){}",
                    r.actual,
                    r.estimate,
                    if late { "already released" } else { "released" },
                    r.period,
                    if r.overshoot > Micros::ZERO {
                        format!("; ${} over the limit", r.overshoot)
                    } else {
                        String::new()
                    }
                );
                let fields = json!({
                    "actual_usd": usd(r.actual),
                    "estimate_usd": usd(r.estimate),
                    "overshoot_usd": usd(r.overshoot),
                    "period": r.period.to_string(),
                });
                (result, fields, text)
            }
            &FinalizeOutcome::AlreadyFinalized { actual } => (
                "already_finalized".to_owned(),
                json!({ "actual_usd": usd(actual) }),
                format!("already settled with ${actual}; nothing changed"),
            ),
            _ => return Err(CliError::Failed("unexpected finalize answer".into())),
        },
        Settled::Queued { actual } => (
            "queued".to_owned(),
            json!({ "actual_usd": usd(actual) }),
            format!(
                "the store did not answer: ${actual} is kept in the finalize queue and applied by `serve`'s replay worker"
            ),
        ),
    };
    let doc = merge(merge(ids_json(ids), json!({ "result": result })), fields);
    Ok(Report::ok(doc, text))
}

fn not_found(ids: &HoldIds) -> CliError {
    CliError::NotFound(format!(
        "no hold for community {}, user {}, key {} (never reserved, or settled longer ago than markers are kept)",
        ids.community, ids.user, ids.key
    ))
}

/// `extend --ttl-ms`: pushes a live hold's expiry out. A hold that is
/// unknown, expired or settled exits 5.
///
/// # Errors
/// [`CliError::Extend`], [`CliError::NotFound`].
pub async fn extend(app: &Spendgate, ids: HoldIds, ttl_ms: u32) -> Result<Report, CliError> {
    let ttl = ttl_arg("--ttl-ms", ttl_ms)?;
    let hold_ref = HoldRef {
        user: ids.user.clone(),
        key: ids.key.clone(),
    };
    match app.budget().extend(&ids.community, &hold_ref, ttl).await? {
        ExtendOutcome::Extended { expires_at } => Ok(Report::ok(
            merge(
                ids_json(&ids),
                json!({ "result": "extended", "expires_at_ms": expires_at.as_millis() }),
            ),
            format!(
                "extended: expires at {} ms since the epoch",
                expires_at.as_millis()
            ),
        )),
        _ => Err(CliError::NotFound(format!(
            "hold of community {}, user {}, key {} is not live (expired or settled); nothing changed",
            ids.community, ids.user, ids.key
        ))),
    }
}
