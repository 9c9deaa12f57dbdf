//! `serve`: the long-running process. Checks the HTTP settings, builds the
//! services (migrating the database), starts the background workers, runs
//! until SIGTERM or Ctrl-C, then lets every worker finish its pass.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::open;
use crate::inbound::cli::Console;
use crate::inbound::cli::output::{CliError, Exit, Report};
use crate::settings::{Settings, redact_url};

/// How long the workers get to finish their pass at shutdown.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Cancels `shutdown` on Ctrl-C or (on Unix) SIGTERM, from a task on the
/// current runtime.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            // An error here means Ctrl-C cannot be awaited either; stop.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    // An error means the handler cannot be installed; stop rather than hang.
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs until `shutdown` is cancelled.
///
/// # Errors
/// [`CliError::Settings`] when the HTTP settings break the token or
/// loopback rule; [`CliError::Build`] when the stores cannot be reached.
pub async fn serve(
    settings: &Settings,
    console: &mut Console<'_>,
    shutdown: CancellationToken,
) -> Result<Report, CliError> {
    settings.check_serve()?;
    let app = open(settings, console).await?;
    let workers = app.start_workers(settings.worker_settings());
    tracing::info!(
        database = %redact_url(&settings.database_url),
        bind = %settings.http.bind,
        "spendgate serving: workers started"
    );
    console.progress(&format!(
        "spendgate {} running: workers started on {}; Ctrl-C or SIGTERM stops it",
        env!("CARGO_PKG_VERSION"),
        redact_url(&settings.database_url)
    ));
    // The HTTP API (`inbound::http::serve`) runs here, on `settings.http`,
    // until `shutdown` is cancelled.
    shutdown.cancelled().await;
    console.progress("stopping: workers finish their pass");
    let report = workers.shutdown(SHUTDOWN_DEADLINE).await;
    let doc = json!({
        "result": "stopped",
        "stopped": report.stopped,
        "aborted": report.aborted,
    });
    let mut text = format!("stopped {} worker(s)", report.stopped.len());
    let exit = if report.aborted.is_empty() {
        Exit::Ok
    } else {
        text.push_str(&format!(
            "; aborted at the deadline: {}",
            report.aborted.join(", ")
        ));
        Exit::Other
    };
    Ok(Report {
        json: doc,
        human: text,
        exit,
    })
}
