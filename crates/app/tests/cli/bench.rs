//! `bench`: a short run directly on the SQLite file, and one against an
//! in-process HTTP server. Counts are checked, never wall-clock times.

use spendgate::Spendgate;
use spendgate::domain::CommunityId;
use spendgate::inbound::cli::Exit;
use spendgate::inbound::cycles::{CyclesKey, CyclesOptions};
use spendgate::inbound::http::{HttpOptions, serve};
use tokio_util::sync::CancellationToken;

use crate::support::Sandbox;

fn check(doc: &serde_json::Value) {
    assert!(doc["lifecycles"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(doc["error_count"], 0, "{doc}");
    let latency = &doc["latency_us"];
    assert!(
        latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap(),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_lifecycles_directly_on_the_sqlite_file() {
    let s = Sandbox::new();
    let run = s
        .run(&[
            "bench",
            "--concurrency",
            "4",
            "--duration-secs",
            "1",
            "--json",
        ])
        .await;
    let doc = run.ok_json();
    assert_eq!(doc["mode"], "direct");
    assert_eq!(doc["communities"], 4);
    check(&doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_lifecycles_against_a_server() {
    let app = Spendgate::builder().build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        app,
        HttpOptions::default(),
        shutdown.clone(),
    ));
    let s = Sandbox::new();
    let run = s
        .run(&[
            "bench",
            "--url",
            &url,
            "--concurrency",
            "4",
            "--communities",
            "2",
            "--duration-secs",
            "1",
            "--json",
        ])
        .await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let doc = run.ok_json();
    assert_eq!(doc["mode"], "http");
    assert_eq!(doc["communities"], 2);
    check(&doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_server_nobody_listens_on_exits_unavailable() {
    // Bind, note the port, close: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = Sandbox::new()
        .run(&["bench", "--url", &url, "--duration-secs", "1", "--json"])
        .await;
    assert_eq!(run.exit, Exit::Unavailable, "stderr: {}", run.err);
    assert_eq!(run.json()["error"]["code"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_server_nobody_listens_on_prints_no_secret_of_its_url() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    for url in [
        format!("http://bench:url-secret@127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/?token=url-secret"),
    ] {
        let run = Sandbox::new()
            .with_progress()
            .run(&["bench", "--url", &url, "--duration-secs", "1"])
            .await;
        assert_eq!(run.exit, Exit::Unavailable, "stderr: {}", run.err);
        let printed = format!("{}{}", run.out, run.err);
        assert!(printed.contains("***"), "{printed}");
        assert!(!printed.contains("url-secret"), "{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_cycles_lifecycles_against_a_server() {
    let app = Spendgate::builder().build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let options = HttpOptions {
        cycles: CyclesOptions {
            keys: vec![CyclesKey {
                secret: "bench-cycles-key-0123".to_owned(),
                tenant: CommunityId::parse("bench-tenant").unwrap(),
            }],
            ..CyclesOptions::default()
        },
        ..HttpOptions::default()
    };
    let server = tokio::spawn(serve(listener, app, options, shutdown.clone()));
    let s = Sandbox::new();
    let run = s
        .run(&[
            "bench",
            "--url",
            &url,
            "--cycles-api-key",
            "bench-cycles-key-0123=bench-tenant",
            "--concurrency",
            "4",
            "--duration-secs",
            "1",
            "--json",
        ])
        .await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let doc = run.ok_json();
    assert_eq!(doc["communities"], 1);
    assert!(doc["target"].as_str().unwrap().ends_with("(Cycles /v1)"));
    check(&doc);
}
