//! `serve`: the long-running process. Checks the HTTP settings, builds the
//! services (migrating the database), serves the HTTP API and runs the
//! background workers until SIGTERM or Ctrl-C, then drains in-flight
//! requests and lets every worker finish its pass.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::open;
use crate::inbound::cli::Console;
use crate::inbound::cli::output::{CliError, Exit, Report};
use crate::inbound::cycles::CyclesOptions;
use crate::inbound::http::{self, ApiToken, HttpOptions};
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

/// The HTTP API's options from the settings.
///
/// # Errors
/// [`CliError::Usage`] when the body limit does not fit this platform.
fn http_options(settings: &Settings) -> Result<HttpOptions, CliError> {
    let body_limit_bytes = usize::try_from(settings.http.body_limit_bytes).map_err(|_| {
        CliError::Usage(format!(
            "http.body_limit_bytes {} does not fit this platform",
            settings.http.body_limit_bytes
        ))
    })?;
    Ok(HttpOptions {
        tokens: settings
            .http
            .tokens
            .iter()
            .map(|t| ApiToken {
                secret: t.secret.clone(),
                role: t.role,
                communities: t
                    .communities
                    .as_ref()
                    .map(|list| list.iter().cloned().collect()),
            })
            .collect(),
        body_limit_bytes,
        request_timeout: settings.http.request_timeout,
        header_read_timeout: settings.http.header_read_timeout,
        idle_timeout: settings.http.idle_timeout,
        max_connections: settings.http.max_connections,
        metrics_token: settings.http.metrics_token.clone(),
        cycles: CyclesOptions {
            keys: settings.http.cycles_keys.clone(),
            user_level: settings.http.cycles_user_level,
            ..CyclesOptions::default()
        },
        ..HttpOptions::default()
    })
}

/// Serves the HTTP API and runs the workers until `shutdown` is cancelled,
/// then drains in-flight requests and lets every worker finish its pass.
///
/// # Errors
/// [`CliError::Settings`] when the HTTP settings break the token or
/// loopback rule; [`CliError::Build`] when the stores cannot be reached;
/// [`CliError::Io`] when the address cannot be bound or the server fails.
pub async fn serve(
    settings: &Settings,
    console: &mut Console<'_>,
    shutdown: CancellationToken,
) -> Result<Report, CliError> {
    settings.check_serve()?;
    let options = http_options(settings)?;
    let app = open(settings, console).await?;
    let listener = tokio::net::TcpListener::bind(settings.http.bind)
        .await
        .map_err(|source| CliError::Io {
            what: format!("cannot listen on {}", settings.http.bind),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| CliError::Io {
        what: "cannot read the bound address".into(),
        source,
    })?;
    let workers = app.start_workers(settings.worker_settings());
    tracing::info!(
        database = %redact_url(&settings.database_url),
        %bound,
        "spendgate serving: HTTP API up, workers started"
    );
    console.progress(&format!(
        "spendgate {} listening on http://{bound} ({}); Ctrl-C or SIGTERM stops it",
        env!("CARGO_PKG_VERSION"),
        redact_url(&settings.database_url)
    ));
    // Returns once `shutdown` fires and in-flight requests are answered, or
    // early if the listener fails; the workers stop either way.
    let served = http::serve(listener, app.clone(), options, shutdown.clone()).await;
    shutdown.cancel();
    console.progress("stopping: workers finish their pass");
    let report = workers.shutdown(SHUTDOWN_DEADLINE).await;
    served.map_err(|source| CliError::Io {
        what: "the HTTP server failed".into(),
        source,
    })?;
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
