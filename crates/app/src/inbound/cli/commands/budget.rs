//! `status` and `set-budget`: reading and changing a community's budget.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use spendgate_domain::{CommunityId, Limits, Micros, Period};

use crate::Spendgate;
use crate::inbound::cli::output::{CliError, Report, usd};

/// `status <community> [--period YYYY-MM]`: limits, committed, reserved,
/// remaining, overspend, open holds and per-user sums.
///
/// # Errors
/// [`CliError::Status`].
pub async fn status(
    app: &Spendgate,
    community: &CommunityId,
    period: Option<Period>,
) -> Result<Report, CliError> {
    let report = app.budget().status(community, period).await?;
    let limit = report.limits.map(|l| l.limit);
    let cap = report.limits.and_then(|l| l.per_user_cap);
    let mut users = Map::new();
    for (user, spend) in &report.users {
        users.insert(
            user.to_string(),
            json!({ "committed_usd": usd(spend.committed), "reserved_usd": usd(spend.reserved) }),
        );
    }
    let doc = json!({
        "community": report.community.as_str(),
        "period": report.period.to_string(),
        "configured": report.limits.is_some(),
        "limit_usd": limit.map(usd),
        "per_user_cap_usd": cap.map(usd),
        "committed_usd": usd(report.committed),
        "reserved_usd": usd(report.reserved),
        "remaining_usd": usd(report.remaining),
        "overspend_usd": usd(report.overspend),
        "holds": report.holds,
        "warned": report.warned,
        "users": Value::Object(users),
    });
    let mut text = format!("community {} period {}\n", report.community, report.period);
    let dollars = |m: Option<Micros>| m.map_or_else(|| "none".to_owned(), |m| format!("${m}"));
    let _ = writeln!(text, "  limit         {}", dollars(limit));
    let _ = writeln!(text, "  per-user cap  {}", dollars(cap));
    let _ = writeln!(text, "  committed     ${}", report.committed);
    let _ = writeln!(text, "  reserved      ${}", report.reserved);
    let _ = writeln!(text, "  remaining     ${}", report.remaining);
    if report.overspend > Micros::ZERO {
        let _ = writeln!(text, "  overspend     ${}", report.overspend);
    }
    let _ = writeln!(text, "  open holds    {}", report.holds);
    for (user, spend) in &report.users {
        let _ = writeln!(
            text,
            "  user {user}: committed ${}, reserved ${}",
            spend.committed, spend.reserved
        );
    }
    if report.limits.is_none() {
        text.push_str("  (no budget configured: reservations are denied)\n");
    }
    Ok(Report::ok(doc, text))
}

/// `set-budget <community> <usd> [--per-user-cap <usd>]`.
///
/// # Errors
/// [`CliError::BudgetChange`]: not saved, or saved but not yet in the
/// store.
pub async fn set_budget(
    app: &Spendgate,
    community: &CommunityId,
    limit: Micros,
    per_user_cap: Option<Micros>,
) -> Result<Report, CliError> {
    let mut limits = Limits::new(limit);
    if let Some(cap) = per_user_cap {
        limits = limits.with_per_user_cap(cap);
    }
    app.budget().set_budget(community, limits).await?;
    let doc = json!({
        "result": "ok",
        "community": community.as_str(),
        "limit_usd": usd(limit),
        "per_user_cap_usd": per_user_cap.map(usd),
    });
    let cap = per_user_cap.map_or_else(String::new, |c| format!(", ${c} per user"));
    Ok(Report::ok(
        doc,
        format!("budget of {community} set to ${limit} per period{cap}"),
    ))
}
