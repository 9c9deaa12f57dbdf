//! A community's budget and tier overrides over HTTP.

use serde_json::json;

use crate::on_every_backend;
use crate::support::{Server, community, tokens_body};

on_every_backend!(
    put_budget_creates_the_configuration_and_get_reports_it,
    put_budget_accepts_micros_and_a_per_user_cap,
    get_budget_of_another_period_reports_that_period,
    a_malformed_period_is_422,
    put_tiers_changes_the_models_a_tier_may_use,
    get_tiers_reports_the_defaults_without_overrides,
);

async fn put_budget_creates_the_configuration_and_get_reports_it(s: Server) {
    let c = community("putbudget");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("b1")
        .json(json!({"limit_usd": "12.5"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["limit_usd"].as_str(), r.json["applied"].as_bool()),
        (Some("12.500000"), Some(true))
    );
    assert!(r.json["per_user_cap_usd"].is_null());
    assert_eq!(s.reserve(&c, "k1").await.status, 201);
    let b = s.budget(&c).await;
    assert_eq!(b["limit_micros"], 12_500_000);
    assert_eq!(b["remaining_micros"], 12_500_000 - 660);
    assert!(b.get("user").is_none(), "no user asked for: {b}");
    assert!(b["period"].as_str().unwrap().len() == 7);
    let page = s
        .get(format!("/api/v1/communities/{c}/budget/users"))
        .send()
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.json["users"][0]["user"], "alice");
    assert_eq!(page.json["users"][0]["reserved_micros"], 660);
    assert!(page.json["next_cursor"].is_null());
}

async fn put_budget_accepts_micros_and_a_per_user_cap(s: Server) {
    let c = community("micros");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("b1")
        .json(json!({"limit_micros": 5_000_000, "per_user_cap_usd": "0.000700"}))
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["per_user_cap_micros"].as_i64()),
        (200, Some(700)),
        "{}",
        r.text
    );
    let b = s.budget(&c).await;
    assert_eq!(
        (b["limit_usd"].as_str(), b["per_user_cap_usd"].as_str()),
        (Some("5.000000"), Some("0.000700"))
    );
    assert_eq!(s.reserve(&c, "k1").await.status, 201);
    let mut body = tokens_body();
    body["user"] = json!("alice");
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k2")
        .json(body)
        .send()
        .await;
    r.assert_problem(402, "budget-exceeded");
}

async fn get_budget_of_another_period_reports_that_period(s: Server) {
    let c = s.community("period", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .get(format!("/api/v1/communities/{c}/budget?period=2001-01"))
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["period"].as_str()),
        (200, Some("2001-01")),
        "{}",
        r.text
    );
    assert_eq!(r.json["reserved_micros"], 0);
}

async fn a_malformed_period_is_422(s: Server) {
    let c = s.community("badperiod", 10).await;
    for bad in ["2026-13", "2026-1", "next", "2026-11-01"] {
        let r = s
            .get(format!("/api/v1/communities/{c}/budget?period={bad}"))
            .send()
            .await;
        r.assert_problem(422, "invalid-value");
    }
    s.get(format!("/api/v1/communities/{c}/budget?month=2026-11"))
        .send()
        .await
        .assert_problem(422, "invalid-value");
}

async fn put_tiers_changes_the_models_a_tier_may_use(s: Server) {
    let c = s.community("tiers", 10).await;
    let mut body = tokens_body();
    body["model"] = json!("reasoning");
    let reasoning = || {
        s.post(format!("/api/v1/communities/{c}/reservations"))
            .key("r1")
            .json(body.clone())
            .send()
    };
    reasoning().await.assert_problem(403, "model-not-allowed");
    let r = s
        .put(format!("/api/v1/communities/{c}/tiers"))
        .key("t1")
        .json(json!({"overrides": {"1": "enterprise"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.json["overrides"]["1"].as_str(),
            r.json["levels"]["1"].as_str()
        ),
        (Some("enterprise"), Some("enterprise"))
    );
    let r = s.get(format!("/api/v1/communities/{c}/tiers")).send().await;
    assert_eq!(r.json["overrides"]["1"], "enterprise");
    assert_eq!(reasoning().await.status, 201);
}

async fn get_tiers_reports_the_defaults_without_overrides(s: Server) {
    let c = s.community("tierdefaults", 10).await;
    let r = s.get(format!("/api/v1/communities/{c}/tiers")).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["overrides"], json!({}));
    assert_eq!(
        (
            r.json["levels"]["1"].as_str(),
            r.json["levels"]["4"].as_str(),
            r.json["levels"]["9"].as_str()
        ),
        (Some("free"), Some("pro"), Some("enterprise"))
    );
}
