//! `reap`, `drift` and `rebuild`: an operator's one-off passes of the
//! background jobs, for when `serve` is not running or cannot wait.

use serde_json::json;
use spendgate_domain::{CommunityId, Period};

use crate::Spendgate;
use crate::inbound::cli::Console;
use crate::inbound::cli::output::{CliError, Exit, Report, usd};
use crate::workers::{DriftJob, Job, ReaperJob};

/// `reap [<community>]`: releases expired holds of one community, or runs
/// one reaper pass over every enabled community.
///
/// # Errors
/// [`CliError::Store`] when the one community's store call fails.
pub async fn reap(
    app: &Spendgate,
    community: Option<&CommunityId>,
    console: &mut Console<'_>,
) -> Result<Report, CliError> {
    let ports = app.ports();
    let now = ports.clock.now();
    match community {
        Some(community) => {
            let reaped = ports
                .store
                .reap(community, now)
                .await
                .map_err(CliError::Store)?;
            Ok(Report::ok(
                json!({
                    "community": community.as_str(),
                    "reaped": reaped.count,
                    "reclaimed_usd": usd(reaped.reclaimed),
                }),
                format!(
                    "{community}: {} expired hold(s) released, ${} reclaimed",
                    reaped.count, reaped.reclaimed
                ),
            ))
        }
        None => {
            console.progress("reaping every enabled community");
            let job = ReaperJob::new(ports.store.clone(), ports.config.clone());
            let outcome = job.tick(now).await;
            pass_report(
                "reaper",
                "hold(s) released",
                outcome.items,
                outcome.failures,
            )
        }
    }
}

/// `drift`: one drift monitor pass; exits 1 when a community differs or
/// could not be read (details in the log).
///
/// # Errors
/// None beyond the report's exit code; kept fallible like the others.
pub async fn drift(app: &Spendgate, console: &mut Console<'_>) -> Result<Report, CliError> {
    let ports = app.ports();
    console.progress("comparing store counters with the usage log");
    let job = DriftJob::new(
        ports.store.clone(),
        ports.usage_log.clone(),
        ports.config.clone(),
    );
    let outcome = job.tick(ports.clock.now()).await;
    pass_report(
        "drift",
        "community(ies) checked",
        outcome.items,
        outcome.failures,
    )
}

fn pass_report(job: &str, what: &str, items: u64, failures: u64) -> Result<Report, CliError> {
    let mut report = Report::ok(
        json!({ "job": job, "items": items, "failures": failures }),
        format!("{job}: {items} {what}, {failures} failure(s)"),
    );
    if failures > 0 {
        report.human.push_str(" (see the log for which)");
        report.exit = Exit::Other;
    }
    Ok(report)
}

/// `rebuild <community> [--period]`: sets the store's committed sums of
/// the period (the current one by default) to the usage log's, user by
/// user; the repair for drift or a store that lost its data.
///
/// # Errors
/// [`CliError::Rebuild`].
pub async fn rebuild(
    app: &Spendgate,
    community: &CommunityId,
    period: Option<Period>,
    console: &mut Console<'_>,
) -> Result<Report, CliError> {
    console.progress(&format!("rebuilding {community} from the usage log"));
    let report = app.budget().rebuild(community, period).await?;
    let users: serde_json::Map<String, serde_json::Value> = report
        .users
        .iter()
        .map(|(user, cost)| (user.to_string(), json!(usd(*cost))))
        .collect();
    Ok(Report::ok(
        json!({
            "community": report.community.as_str(),
            "period": report.period.to_string(),
            "before_usd": usd(report.before),
            "after_usd": usd(report.after),
            "users": users,
        }),
        format!(
            "rebuilt {} {}: committed ${} -> ${} over {} user(s)",
            report.community,
            report.period,
            report.before,
            report.after,
            report.users.len()
        ),
    ))
}
