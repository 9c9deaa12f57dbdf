//! Without tokens only this machine is served: a foreign `Host` (a page
//! that rebound its name to 127.0.0.1) or a foreign `Origin` is refused
//! before anything is read or changed. With tokens the check does not
//! apply.

use serde_json::json;

use crate::support::{Backend, Server, admin, community, options};

async fn without_tokens() -> Server {
    Server::start_with(Backend::Memory, options(Vec::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_foreign_host_cannot_set_a_budget() {
    let s = without_tokens().await;
    let c = community("rebound");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .header("host", "evil.example:8080")
        .key("b1")
        .json(json!({"limit_usd": "1000"}))
        .send()
        .await;
    r.assert_problem(403, "not-loopback");
    assert_eq!(r.json["field"], "Host");
    let status = s
        .get(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .send()
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert!(status.json["limit_micros"].is_null(), "{}", status.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_foreign_origin_is_refused_on_every_route() {
    let s = without_tokens().await;
    let c = community("origin");
    for origin in [
        "http://evil.example",
        "null",
        "http://localhost.evil.example",
    ] {
        let r = s
            .put(format!("/api/v1/communities/{c}/budget"))
            .token(None)
            .header("origin", origin)
            .key("b1")
            .json(json!({"limit_usd": "1000"}))
            .send()
            .await;
        r.assert_problem(403, "not-loopback");
        assert_eq!(r.json["field"], "Origin", "{origin}");
        s.get("/metrics")
            .token(None)
            .header("origin", origin)
            .send()
            .await
            .assert_problem(403, "not-loopback");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_loopback_hosts_and_origins_are_served() {
    let s = without_tokens().await;
    let c = community("local");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .key("b1")
        .json(json!({"limit_usd": "10"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for host in ["localhost", "localhost:8080", "127.0.0.2:1", "[::1]:8080"] {
        let r = s
            .get("/healthz")
            .token(None)
            .header("host", host)
            .send()
            .await;
        assert_eq!(r.status, 200, "{host}: {}", r.text);
    }
    let r = s
        .get(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .header("origin", "http://localhost:3000")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_any_host_and_origin_are_served() {
    let s = Server::start_with(Backend::Memory, options(vec![admin()])).await;
    let c = community("named");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .header("host", "spendgate.internal:8080")
        .header("origin", "https://dashboard.internal")
        .key("b1")
        .json(json!({"limit_usd": "10"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
