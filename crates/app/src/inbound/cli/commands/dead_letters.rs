//! `dead-letters`: the settlements the store refused for good, parked in
//! the finalize queue instead of being replayed forever, for an operator
//! to read (and settle again with a cost that fits, which completes them).

use serde_json::{Value, json};
use spendgate_ports::{DeadLetter, PendingSettlement};

use crate::Spendgate;
use crate::inbound::cli::output::{CliError, Report, usd};

fn entry_json(dead: &DeadLetter<PendingSettlement>) -> Value {
    let pending = &dead.item;
    json!({
        "community": pending.community.as_str(),
        "user": pending.settlement.user.as_str(),
        "key": pending.settlement.key.as_str(),
        "actual_usd": usd(pending.settlement.actual),
        "estimate_usd": usd(pending.estimate),
        "model": pending.model.as_str(),
        "period": pending.period.to_string(),
        "source": pending.source.as_str(),
        "attempts": dead.attempts,
        "error": dead.error,
        "dead_at_ms": dead.dead_at.as_millis(),
    })
}

/// `dead-letters [--limit N]`: how many settlements are dead letters, and
/// the `limit` parked first. Finding some is not an error (exit 0); an
/// unreachable database is (exit 4).
///
/// # Errors
/// [`CliError::Queue`] when the finalize queue cannot be read.
pub async fn dead_letters(app: &Spendgate, limit: u32) -> Result<Report, CliError> {
    let queue = &app.ports().finalize_queue;
    let count = queue.dead_letter_count().await.map_err(CliError::Queue)?;
    let shown = queue.dead_letters(limit).await.map_err(CliError::Queue)?;
    let mut text = format!("{count} dead letter(s) in the finalize queue");
    if count > 0 {
        text.push_str(" (settlements the store refused for good; settling the call again with a cost that fits completes one)");
    }
    for dead in &shown {
        let p = &dead.item;
        text.push_str(&format!(
            "\n{} / {} / {}: ${} ({}, period {}), {} attempt(s): {}",
            p.community,
            p.settlement.user,
            p.settlement.key,
            p.settlement.actual,
            p.model,
            p.period,
            dead.attempts,
            dead.error
        ));
    }
    Ok(Report::ok(
        json!({
            "count": count,
            "dead_letters": shown.iter().map(entry_json).collect::<Vec<_>>(),
        }),
        text,
    ))
}
