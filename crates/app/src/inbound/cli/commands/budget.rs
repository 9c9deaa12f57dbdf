//! `status`, `users` and `set-budget`: reading and changing a community's
//! budget.

use std::fmt::Write as _;

use serde_json::{Value, json};
use spendgate_domain::{CommunityId, Limits, Micros, Period, UserId, UserSpend};
use spendgate_ports::{PageSize, UsersCursor};

use crate::Spendgate;
use crate::inbound::cli::output::{CliError, Report, usd};

/// `status <community> [--period YYYY-MM] [--user U]`: limits,
/// committed, reserved, remaining, overspend, open holds and, with
/// `--user`, that user's sums.
///
/// # Errors
/// [`CliError::Status`].
pub async fn status(
    app: &Spendgate,
    community: &CommunityId,
    period: Option<Period>,
    user: Option<&UserId>,
) -> Result<Report, CliError> {
    let report = app.budget().status(community, period, user).await?;
    let limit = report.limits.map(|l| l.limit);
    let cap = report.limits.and_then(|l| l.per_user_cap);
    let mut doc = json!({
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
    if let (Some(user), Some(spend)) = (user, report.user) {
        doc["user"] = user_json(user, spend);
        let _ = writeln!(text, "{}", user_line(user, spend));
    }
    if report.limits.is_none() {
        text.push_str("  (no budget configured: reservations are denied)\n");
    }
    Ok(Report::ok(doc, text))
}

/// `users <community> [--period YYYY-MM] [--cursor C] [--limit N]`: one
/// page of the period's users with their sums, and the cursor of the next
/// page (`null` when the listing is complete).
///
/// # Errors
/// [`CliError::Status`] (a cursor this store did not issue included).
pub async fn users(
    app: &Spendgate,
    community: &CommunityId,
    period: Option<Period>,
    cursor: Option<&UsersCursor>,
    size: PageSize,
) -> Result<Report, CliError> {
    let (period, page) = app.budget().users(community, period, cursor, size).await?;
    let mut text = String::new();
    for (user, spend) in &page.users {
        let _ = writeln!(text, "{}", user_line(user, *spend));
    }
    match &page.next {
        Some(next) => {
            let _ = writeln!(text, "next page: --cursor {next}");
        }
        None => text.push_str("(end of list)\n"),
    }
    let users: Vec<Value> = page.users.iter().map(|(u, s)| user_json(u, *s)).collect();
    let doc = json!({
        "community": community.as_str(),
        "period": period.to_string(),
        "users": users,
        "next": page.next.as_ref().map(UsersCursor::as_str),
    });
    Ok(Report::ok(doc, text))
}

fn user_json(user: &UserId, spend: UserSpend) -> Value {
    json!({
        "user": user.as_str(),
        "committed_usd": usd(spend.committed),
        "reserved_usd": usd(spend.reserved),
    })
}

fn user_line(user: &UserId, spend: UserSpend) -> String {
    format!(
        "  user {user}: committed ${}, reserved ${}",
        spend.committed, spend.reserved
    )
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
