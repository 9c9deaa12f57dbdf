//! Every error status of the API, each as problem details with its own
//! type, and none of them writing anything.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::on_every_backend;
use crate::support::{Backend, Server, admin, options, tokens_body};

on_every_backend!(
    a_reserve_over_the_budget_is_402_with_remaining_limit_and_scope,
    a_reserve_over_the_user_cap_is_402_with_scope_user,
    a_model_the_tier_does_not_allow_is_403_with_its_own_type,
    a_community_without_budget_is_409_not_configured,
    a_community_with_ai_disabled_is_403_ai_disabled,
    malformed_json_is_400,
    a_missing_idempotency_key_is_400,
    an_idempotency_key_other_than_the_path_key_is_422,
    money_with_seven_decimals_is_422_never_rounded,
    negative_or_overflowing_micros_are_422,
    bad_ids_are_422,
    missing_or_mixed_fields_are_422,
    unknown_fields_are_422,
    an_invalid_tier_is_422,
    a_bad_ttl_is_422,
    a_body_over_the_limit_is_413,
    a_reserve_while_the_store_is_down_is_503_with_retry_after,
    an_unknown_route_is_404_and_a_wrong_method_405,
    a_finalize_of_a_hold_the_store_does_not_know_commits_without_it_and_the_rest_is_404,
    a_settle_while_the_store_is_down_is_202_queued_and_a_budget_change_is_202_not_applied,
    extend_of_a_settled_hold_is_409_not_live,
);

async fn a_reserve_over_the_budget_is_402_with_remaining_limit_and_scope(s: Server) {
    let c = s.community("exceeded", 1).await;
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("big")
        .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_usd": "1.000001"}))
        .send()
        .await;
    r.assert_problem(402, "budget-exceeded");
    assert_eq!(
        (
            r.json["remaining_usd"].as_str(),
            r.json["limit_usd"].as_str()
        ),
        (Some("1.000000"), Some("1.000000"))
    );
    assert_eq!(
        (
            r.json["remaining_micros"].as_i64(),
            r.json["limit_micros"].as_i64()
        ),
        (Some(1_000_000), Some(1_000_000))
    );
    assert_eq!(r.json["estimate_micros"], 1_000_001);
    assert_eq!(r.json["scope"], "community");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn a_reserve_over_the_user_cap_is_402_with_scope_user(s: Server) {
    let c = crate::support::community("cap");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("set")
        .json(json!({"limit_usd": "10", "per_user_cap_micros": 1000}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 1001}))
        .send()
        .await;
    r.assert_problem(402, "budget-exceeded");
    assert_eq!(
        (r.json["scope"].as_str(), r.json["limit_micros"].as_i64()),
        (Some("user"), Some(1000))
    );
}

async fn a_model_the_tier_does_not_allow_is_403_with_its_own_type(s: Server) {
    let c = s.community("tier", 10).await;
    let mut body = tokens_body();
    body["model"] = json!("reasoning");
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(body)
        .send()
        .await;
    r.assert_problem(403, "model-not-allowed");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn a_community_without_budget_is_409_not_configured(s: Server) {
    let c = crate::support::community("unconfigured");
    s.reserve(&c, "k")
        .await
        .assert_problem(409, "community-not-configured");
}

async fn a_community_with_ai_disabled_is_403_ai_disabled(s: Server) {
    let c = crate::support::community("aioff");
    let config = spendgate::ports::CommunityConfig {
        community: spendgate::domain::CommunityId::parse(c.as_str()).unwrap(),
        ai_enabled: false,
        limits: spendgate::domain::Limits::new(spendgate::domain::Micros::from_usd(10)),
        pricing_overrides: Default::default(),
        version: Default::default(),
    };
    s.sg.budget().configure(&config).await.unwrap();
    s.reserve(&c, "k").await.assert_problem(403, "ai-disabled");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn a_finalize_of_a_hold_the_store_does_not_know_commits_without_it_and_the_rest_is_404(
    s: Server,
) {
    let c = s.community("unknown", 10).await;
    let base = format!("/api/v1/communities/{c}/reservations/alice/nope");
    s.get(base.clone())
        .send()
        .await
        .assert_problem(404, "unknown-hold");
    // Nothing is held and nothing is to be charged: 404, nothing written.
    for (action, body) in [
        ("cancel", json!({})),
        ("extend", json!({"ttl_ms": 1000})),
        ("hand-over", json!({})),
    ] {
        let r = s
            .post(format!("{base}/{action}"))
            .key("nope")
            .json(body)
            .send()
            .await;
        r.assert_problem(404, "unknown-hold");
    }
    assert_eq!(s.budget(&c).await["committed_micros"], 0);
    // A cost is money spent: the store may have lost the hold, so it is
    // committed without one, once.
    let finalize = || async {
        s.post(format!("{base}/finalize"))
            .key("nope")
            .json(json!({"actual_micros": 1}))
            .send()
            .await
    };
    let r = finalize().await;
    assert_eq!(
        (r.status, r.json["result"].as_str()),
        (200, Some("committed_without_hold")),
        "{}",
        r.text
    );
    let again = finalize().await;
    assert_eq!(
        (again.status, again.json["result"].as_str()),
        (200, Some("already_finalized")),
        "{}",
        again.text
    );
    assert_eq!(s.budget(&c).await["committed_micros"], 1);
}

async fn malformed_json_is_400(s: Server) {
    let c = s.community("malformed", 10).await;
    for raw in ["{", "not json", "{\"user\": }", "[1,"] {
        let r = s
            .post(format!("/api/v1/communities/{c}/reservations"))
            .key("k")
            .raw(raw)
            .send()
            .await;
        r.assert_problem(400, "malformed-json");
    }
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn a_missing_idempotency_key_is_400(s: Server) {
    let c = s.community("nokey", 10).await;
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .json(tokens_body())
        .send()
        .await;
    r.assert_problem(400, "bad-header");
    assert_eq!(r.json["field"], "Idempotency-Key");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .json(json!({"limit_usd": "1"}))
        .send()
        .await;
    r.assert_problem(400, "bad-header");
    assert_eq!(s.budget(&c).await["limit_micros"], 10_000_000);
}

async fn an_idempotency_key_other_than_the_path_key_is_422(s: Server) {
    let c = s.community("mismatch", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!(
            "/api/v1/communities/{c}/reservations/alice/k1/finalize"
        ))
        .key("k2")
        .json(json!({"actual_micros": 1}))
        .send()
        .await;
    r.assert_problem(422, "idempotency-key-mismatch");
    assert_eq!(s.budget(&c).await["holds"], 1);
}

async fn money_with_seven_decimals_is_422_never_rounded(s: Server) {
    let c = s.community("decimals", 10).await;
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_usd": "0.0000001"}))
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    assert_eq!(r.json["field"], "estimate_usd");
    for bad in ["-1", "1e3", " 1", "1.", "", "0x10", "1,5"] {
        let r = s
            .put(format!("/api/v1/communities/{c}/budget"))
            .key("k")
            .json(json!({ "limit_usd": bad }))
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
    }
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("k")
        .json(json!({ "limit_usd": 5 }))
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    assert_eq!(s.budget(&c).await["limit_micros"], 10_000_000);
}

async fn negative_or_overflowing_micros_are_422(s: Server) {
    let c = s.community("micros", 10).await;
    s.reserve(&c, "k1").await;
    for bad in [json!(-1), json!(9_007_199_254_740_992_i64), json!(1.5)] {
        let r = s
            .post(format!(
                "/api/v1/communities/{c}/reservations/alice/k1/finalize"
            ))
            .key("k1")
            .json(json!({ "actual_micros": bad }))
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
    }
    assert_eq!(s.budget(&c).await["holds"], 1);
}

async fn bad_ids_are_422(s: Server) {
    let c = s.community("ids", 10).await;
    let long = "x".repeat(129);
    for path in [
        format!("/api/v1/communities/{long}/budget"),
        "/api/v1/communities/a%7Bb/budget".to_owned(),
        "/api/v1/communities/a%20b/budget".to_owned(),
    ] {
        s.get(path)
            .send()
            .await
            .assert_problem(422, "invalid-value");
    }
    let mut body = tokens_body();
    body["user"] = json!("");
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(body)
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    assert_eq!(r.json["field"], "user");
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("has space")
        .json(tokens_body())
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    let r = s
        .get(format!("/api/v1/communities/{c}/reservations/al%7Dice/k"))
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn missing_or_mixed_fields_are_422(s: Server) {
    let c = s.community("fields", 10).await;
    for body in [
        json!({"model": "cheap", "tier": 1, "estimate_micros": 1}),
        json!({"user": "alice", "tier": 1, "estimate_micros": 1}),
        json!({"user": "alice", "model": "cheap", "estimate_micros": 1}),
        json!({"user": "alice", "model": "cheap", "tier": 1}),
        json!({"user": "alice", "model": "cheap", "tier": 1, "prompt_tokens": 1}),
        json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 1, "prompt_tokens": 1, "max_completion_tokens": 1}),
        json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 1, "estimate_usd": "0.000001"}),
        json!({"user": "alice", "model": "cheap", "tier": 1, "prompt_tokens": -1, "max_completion_tokens": 1}),
        json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 1, "trace_id": "t".repeat(257)}),
    ] {
        let r = s
            .post(format!("/api/v1/communities/{c}/reservations"))
            .key("k")
            .json(body.clone())
            .send()
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        r.assert_problem(422, "invalid-value");
    }
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!(
            "/api/v1/communities/{c}/reservations/alice/k1/finalize"
        ))
        .key("k1")
        .json(json!({"prompt_tokens": 1}))
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    let r = s
        .post(format!(
            "/api/v1/communities/{c}/reservations/alice/k1/finalize"
        ))
        .key("k1")
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    assert_eq!(s.budget(&c).await["holds"], 1);
}

async fn unknown_fields_are_422(s: Server) {
    let c = s.community("unknownfield", 10).await;
    let mut body = tokens_body();
    body["prompt_tokenz"] = json!(1);
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(body)
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
}

async fn an_invalid_tier_is_422(s: Server) {
    let c = s.community("badtier", 10).await;
    for tier in [0, 10, -1] {
        let mut body = tokens_body();
        body["tier"] = json!(tier);
        let r = s
            .post(format!("/api/v1/communities/{c}/reservations"))
            .key("k")
            .json(body)
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
        assert_eq!(r.json["field"], "tier");
    }
    for bad in [
        json!({"overrides": {"0": "pro"}}),
        json!({"overrides": {"x": "pro"}}),
        json!({"overrides": {"2": "platinum"}}),
    ] {
        let r = s
            .put(format!("/api/v1/communities/{c}/tiers"))
            .key("k")
            .json(bad)
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
    }
}

async fn a_bad_ttl_is_422(s: Server) {
    let c = s.community("ttl", 10).await;
    let mut body = tokens_body();
    body["ttl_ms"] = json!(0);
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(body)
        .send()
        .await;
    r.assert_problem(422, "invalid-value");
    s.reserve(&c, "k1").await;
    for ttl in [json!(-5), json!(31_i64 * 24 * 3_600_000)] {
        let r = s
            .post(format!(
                "/api/v1/communities/{c}/reservations/alice/k1/extend"
            ))
            .key("k1")
            .json(json!({ "ttl_ms": ttl }))
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
    }
}

async fn a_body_over_the_limit_is_413(s: Server) {
    let c = s.community("large", 10).await;
    let mut body = tokens_body();
    body["trace_id"] = json!("x".repeat(70 * 1024));
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k")
        .json(body)
        .send()
        .await;
    r.assert_problem(413, "payload-too-large");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

async fn a_reserve_while_the_store_is_down_is_503_with_retry_after(s: Server) {
    let c = s.community("down", 10).await;
    s.store.down.store(true, Ordering::SeqCst);
    let r = s.reserve(&c, "k1").await;
    r.assert_problem(503, "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    s.get(format!("/api/v1/communities/{c}/budget"))
        .send()
        .await
        .assert_problem(503, "unavailable");
    s.store.down.store(false, Ordering::SeqCst);
    assert_eq!(s.budget(&c).await["holds"], 0);
    assert_eq!(s.reserve(&c, "k1").await.status, 201);
}

async fn a_settle_while_the_store_is_down_is_202_queued_and_a_budget_change_is_202_not_applied(
    s: Server,
) {
    let c = s.community("queued", 10).await;
    s.reserve(&c, "k1").await;
    // Settled by ids, never after a look-up: the settlement is kept and
    // the answer says so.
    s.store.down.store(true, Ordering::SeqCst);
    let finalize = || async {
        s.post(format!(
            "/api/v1/communities/{c}/reservations/alice/k1/finalize"
        ))
        .key("k1")
        .json(json!({"actual_micros": 400}))
        .send()
        .await
    };
    let r = finalize().await;
    assert_eq!(
        (
            r.status,
            r.json["result"].as_str(),
            r.json["actual_micros"].as_i64()
        ),
        (202, Some("queued"), Some(400)),
        "{}",
        r.text
    );
    assert_eq!(s.sg.ports().finalize_queue.len().await.unwrap(), 1);
    s.store.down.store(false, Ordering::SeqCst);
    let r = finalize().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let report = s.sg.budget().replay_settlements(100).await.unwrap();
    assert_eq!(report.claimed, 0, "not due yet: {report:?}");
    let budget = s.budget(&c).await;
    assert_eq!(
        (
            budget["committed_micros"].as_i64(),
            budget["holds"].as_i64()
        ),
        (Some(400), Some(0))
    );
    // A budget saved while the store is down is saved, not yet applied.
    s.store.down.store(true, Ordering::SeqCst);
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("b")
        .json(json!({"limit_usd": "20"}))
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["applied"].as_bool()),
        (202, Some(false)),
        "{}",
        r.text
    );
}

async fn an_unknown_route_is_404_and_a_wrong_method_405(s: Server) {
    s.get("/api/v1/nothing")
        .send()
        .await
        .assert_problem(404, "not-found");
    s.get("/v1/nothing")
        .send()
        .await
        .assert_problem(404, "not-found");
    // `/v1` is the Cycles protocol's: its own errors, its own key.
    let r = s.get("/v1/reservations").send().await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("UNAUTHORIZED")),
        "{}",
        r.text
    );
    s.call(reqwest::Method::DELETE, "/healthz")
        .send()
        .await
        .assert_problem(405, "method-not-allowed");
}

async fn extend_of_a_settled_hold_is_409_not_live(s: Server) {
    let c = s.community("notlive", 10).await;
    s.reserve(&c, "k1").await;
    s.post(format!(
        "/api/v1/communities/{c}/reservations/alice/k1/cancel"
    ))
    .key("k1")
    .send()
    .await;
    let r = s
        .post(format!(
            "/api/v1/communities/{c}/reservations/alice/k1/extend"
        ))
        .key("k1")
        .json(json!({"ttl_ms": 1000}))
        .send()
        .await;
    r.assert_problem(409, "hold-not-live");
}

/// A request slower than the timeout is a 503 problem, not a dropped
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_is_503_with_a_problem_body() {
    let mut options = options(vec![admin()]);
    options.request_timeout = std::time::Duration::from_millis(100);
    let s = Server::start_with(Backend::Memory, options).await;
    let c = s.community("timeout", 10).await;
    s.store.delay_ms.store(1_000, Ordering::SeqCst);
    let r = s
        .get(format!("/api/v1/communities/{c}/budget"))
        .send()
        .await;
    r.assert_problem(503, "request-timeout");
    assert!(r.headers.contains_key("retry-after"));
}
