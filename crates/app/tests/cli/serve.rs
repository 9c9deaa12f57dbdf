//! `serve`: the start-up checks, and a clean stop.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::support::Sandbox;
use spendgate::inbound::cli::Exit;

#[tokio::test]
async fn serve_without_tokens_refuses_to_start_unless_allowed() {
    let s = Sandbox::new();
    let run = s.run_until(&["serve"], CancellationToken::new()).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(run.err.contains("no API tokens"), "{}", run.err);
}

#[tokio::test]
async fn serve_without_tokens_refuses_a_non_loopback_bind() {
    let s = Sandbox::new();
    let run = s
        .run_until(
            &[
                "serve",
                "--allow-unauthenticated-loopback",
                "--bind",
                "0.0.0.0:8080",
            ],
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(run.err.contains("loopback"), "{}", run.err);
}

#[tokio::test]
async fn serve_runs_the_workers_until_shutdown_then_stops_them() {
    let s = Sandbox::new();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let run = s
        .run_until(
            &["serve", "--allow-unauthenticated-loopback", "--json"],
            shutdown,
        )
        .await;
    let doc = run.ok_json();
    assert_eq!(doc["result"], "stopped");
    assert!(doc["stopped"].as_array().unwrap().len() >= 4, "{doc}");
    assert_eq!(doc["aborted"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_does_not_print_a_password_query_parameter_when_it_starts() {
    // PostgreSQL's trust authentication ignores the password.
    let (_db, url) = crate::servers::PgDb::create().await;
    let url = format!("{url}?password=serve-secret");
    let s = Sandbox::new().with_progress();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
    });
    let run = s
        .run_until(
            &[
                "--database-url",
                &url,
                "serve",
                "--allow-unauthenticated-loopback",
                "--bind",
                "127.0.0.1:0",
            ],
            shutdown,
        )
        .await;
    assert_eq!(run.exit, Exit::Ok, "{}", run.err);
    assert!(run.err.contains("listening on"), "{}", run.err);
    assert!(run.err.contains("password=***"), "{}", run.err);
    assert!(!run.err.contains("serve-secret"), "{}", run.err);
}
