//! A call's hold over HTTP: reserve, look up, finalize, cancel, extend,
//! hand over, and the replays of each.

use serde_json::json;

use crate::on_every_backend;
use crate::support::Server;

/// `cheap` prices: 0.15 USD in and 0.60 USD out per million tokens.
const ESTIMATE_1200_800: i64 = 660;
const ACTUAL_1180_412: i64 = 425;

on_every_backend!(
    reserve_answers_201_with_the_hold_in_both_money_forms,
    reserve_with_an_own_estimate_holds_exactly_that_amount,
    reserve_replayed_with_the_same_body_answers_the_first_hold_with_200,
    reserve_replayed_with_another_estimate_or_model_is_409,
    finalize_with_an_actual_commits_it_and_releases_the_estimate,
    finalize_with_token_counts_prices_them_with_the_hold_model,
    cancel_releases_the_estimate_and_commits_nothing,
    extend_pushes_the_expiry_out,
    hand_over_answers_202_and_leaves_the_hold_to_reconciliation,
    hand_over_without_a_provider_is_409_and_leaves_the_hold,
    lookup_reports_held_then_finalized,
    finalize_replayed_answers_the_first_actual,
    finalize_replayed_with_another_actual_is_409,
    cancel_replayed_answers_the_cancel_and_cancel_after_a_cost_is_409,
    reserve_after_the_call_was_settled_is_409_already_settled,
);

fn hold(c: &str, key: &str) -> String {
    format!("/api/v1/communities/{c}/reservations/alice/{key}")
}

async fn reserve_answers_201_with_the_hold_in_both_money_forms(s: Server) {
    let c = s.community("reserve", 10).await;
    let r = s.reserve(&c, "k1").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let j = &r.json;
    assert_eq!(j["community"], c.as_str());
    assert_eq!(
        (j["user"].as_str(), j["key"].as_str()),
        (Some("alice"), Some("k1"))
    );
    assert_eq!(j["model"], "cheap");
    assert_eq!(j["estimate_usd"], "0.000660");
    assert_eq!(j["estimate_micros"], ESTIMATE_1200_800);
    assert_eq!(j["limit_usd"], "10.000000");
    assert_eq!(j["limit_micros"], 10_000_000);
    assert_eq!(j["remaining_micros"], 10_000_000 - ESTIMATE_1200_800);
    assert_eq!(
        (j["warning"].as_bool(), j["replay"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(j["expires_at_ms"].as_i64().unwrap() > j["created_at_ms"].as_i64().unwrap());
    let b = s.budget(&c).await;
    assert_eq!(
        (b["reserved_micros"].as_i64(), b["holds"].as_u64()),
        (Some(ESTIMATE_1200_800), Some(1))
    );
}

async fn reserve_with_an_own_estimate_holds_exactly_that_amount(s: Server) {
    let c = s.community("own", 10).await;
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k1")
        .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_usd": "0.012345", "ttl_ms": 60000, "trace_id": "t-1"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["estimate_micros"], 12_345);
    assert_eq!(
        r.json["expires_at_ms"].as_i64().unwrap() - r.json["created_at_ms"].as_i64().unwrap(),
        60_000
    );
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k2")
        .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 7}))
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["estimate_usd"].as_str()),
        (201, Some("0.000007"))
    );
    assert_eq!(s.budget(&c).await["reserved_micros"], 12_352);
}

async fn finalize_with_an_actual_commits_it_and_releases_the_estimate(s: Server) {
    let c = s.community("fin", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!("{}/finalize", hold(&c, "k1")))
        .key("k1")
        .json(json!({"actual_usd": "0.000425", "prompt_tokens": 1180, "completion_tokens": 412}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"], "finalized");
    assert_eq!(
        (
            r.json["actual_micros"].as_i64(),
            r.json["actual_usd"].as_str()
        ),
        (Some(425), Some("0.000425"))
    );
    assert_eq!(r.json["estimate_micros"], ESTIMATE_1200_800);
    assert_eq!(r.json["overshoot_micros"], 0);
    assert_eq!(r.json["replay"], false);
    let b = s.budget(&c).await;
    assert_eq!(
        (
            b["committed_micros"].as_i64(),
            b["reserved_micros"].as_i64(),
            b["holds"].as_u64()
        ),
        (Some(425), Some(0), Some(0))
    );
    let alice = s
        .get(format!("/api/v1/communities/{c}/budget?user=alice"))
        .send()
        .await;
    assert_eq!(alice.status, 200, "{}", alice.text);
    assert_eq!(alice.json["user"]["committed_usd"], "0.000425");
}

async fn finalize_with_token_counts_prices_them_with_the_hold_model(s: Server) {
    let c = s.community("fintok", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!("{}/finalize", hold(&c, "k1")))
        .key("k1")
        .json(json!({"prompt_tokens": 1180, "completion_tokens": 412}))
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["actual_micros"].as_i64()),
        (200, Some(ACTUAL_1180_412)),
        "{}",
        r.text
    );
    assert_eq!(s.budget(&c).await["committed_micros"], ACTUAL_1180_412);
}

async fn cancel_releases_the_estimate_and_commits_nothing(s: Server) {
    let c = s.community("cancel", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!("{}/cancel", hold(&c, "k1")))
        .key("k1")
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["actual_micros"].as_i64()),
        (200, Some(0)),
        "{}",
        r.text
    );
    let b = s.budget(&c).await;
    assert_eq!(
        (
            b["committed_micros"].as_i64(),
            b["reserved_micros"].as_i64(),
            b["holds"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}

async fn extend_pushes_the_expiry_out(s: Server) {
    let c = s.community("extend", 10).await;
    let first = s.reserve(&c, "k1").await.json["expires_at_ms"]
        .as_i64()
        .unwrap();
    let r = s
        .post(format!("{}/extend", hold(&c, "k1")))
        .key("k1")
        .json(json!({"ttl_ms": 3_600_000}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["expires_at_ms"].as_i64().unwrap() > first);
    let looked = s.get(hold(&c, "k1")).send().await;
    assert_eq!(
        looked.json["hold"]["expires_at_ms"],
        r.json["expires_at_ms"]
    );
}

async fn hand_over_without_a_provider_is_409_and_leaves_the_hold(s: Server) {
    let s = Server::start_without_provider(s.backend).await;
    let c = s.community("no-provider", 10).await;
    s.reserve(&c, "k1").await;
    s.post(format!("{}/hand-over", hold(&c, "k1")))
        .key("k1")
        .send()
        .await
        .assert_problem(409, "no-usage-source");
    assert_eq!(s.sg.ports().reconciliation.len().await.unwrap(), 0);
    assert_eq!(s.budget(&c).await["holds"], 1);
}

async fn hand_over_answers_202_and_leaves_the_hold_to_reconciliation(s: Server) {
    let c = s.community("handover", 10).await;
    s.reserve(&c, "k1").await;
    let r = s
        .post(format!("{}/hand-over", hold(&c, "k1")))
        .key("k1")
        .send()
        .await;
    assert_eq!(
        (r.status, r.json["handed_over"].as_bool()),
        (202, Some(true)),
        "{}",
        r.text
    );
    assert_eq!(s.sg.ports().reconciliation.len().await.unwrap(), 1);
    assert_eq!(s.budget(&c).await["holds"], 1);
}

async fn lookup_reports_held_then_finalized(s: Server) {
    let c = s.community("lookup", 10).await;
    s.reserve(&c, "k1").await;
    let r = s.get(hold(&c, "k1")).send().await;
    assert_eq!(
        (r.status, r.json["state"].as_str()),
        (200, Some("held")),
        "{}",
        r.text
    );
    assert_eq!(r.json["hold"]["estimate_micros"], ESTIMATE_1200_800);
    s.post(format!("{}/finalize", hold(&c, "k1")))
        .key("k1")
        .json(json!({"actual_micros": 500}))
        .send()
        .await;
    let r = s.get(hold(&c, "k1")).send().await;
    assert_eq!(
        (r.json["state"].as_str(), r.json["actual_micros"].as_i64()),
        (Some("finalized"), Some(500))
    );
    assert!(r.json["hold"].is_null());
}

async fn reserve_replayed_with_the_same_body_answers_the_first_hold_with_200(s: Server) {
    let c = s.community("replay", 10).await;
    let first = s.reserve(&c, "k1").await;
    let again = s.reserve(&c, "k1").await;
    assert_eq!(
        (again.status, again.json["replay"].as_bool()),
        (200, Some(true)),
        "{}",
        again.text
    );
    for field in [
        "estimate_micros",
        "expires_at_ms",
        "created_at_ms",
        "model",
        "period",
    ] {
        assert_eq!(again.json[field], first.json[field], "{field}");
    }
    let b = s.budget(&c).await;
    assert_eq!(
        (b["reserved_micros"].as_i64(), b["holds"].as_u64()),
        (Some(ESTIMATE_1200_800), Some(1))
    );
}

async fn reserve_replayed_with_another_estimate_or_model_is_409(s: Server) {
    let c = s.community("conflict", 10).await;
    s.reserve(&c, "k1").await;
    let mut body = crate::support::tokens_body();
    body["prompt_tokens"] = json!(5000);
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k1")
        .json(body)
        .send()
        .await;
    r.assert_problem(409, "idempotency-conflict");
    let mut body = crate::support::tokens_body();
    body["model"] = json!("fast-code");
    body["tier"] = json!(5);
    let r = s
        .post(format!("/api/v1/communities/{c}/reservations"))
        .key("k1")
        .json(body)
        .send()
        .await;
    r.assert_problem(409, "idempotency-conflict");
    assert_eq!(s.budget(&c).await["reserved_micros"], ESTIMATE_1200_800);
}

async fn finalize_replayed_answers_the_first_actual(s: Server) {
    let c = s.community("finreplay", 10).await;
    s.reserve(&c, "k1").await;
    let finalize = || {
        s.post(format!("{}/finalize", hold(&c, "k1")))
            .key("k1")
            .json(json!({"actual_usd": "0.0005"}))
            .send()
    };
    assert_eq!(finalize().await.status, 200);
    let r = finalize().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["result"].as_str(), r.json["replay"].as_bool()),
        (Some("already_finalized"), Some(true))
    );
    assert_eq!(r.json["actual_micros"], 500);
    let tokens = s
        .post(format!("{}/finalize", hold(&c, "k1")))
        .key("k1")
        .json(json!({"prompt_tokens": 1, "completion_tokens": 1}))
        .send()
        .await;
    assert_eq!(
        (tokens.status, tokens.json["actual_micros"].as_i64()),
        (200, Some(500))
    );
    assert_eq!(s.budget(&c).await["committed_micros"], 500);
}

async fn finalize_replayed_with_another_actual_is_409(s: Server) {
    let c = s.community("finconflict", 10).await;
    s.reserve(&c, "k1").await;
    let finalize = |usd: &'static str| {
        s.post(format!("{}/finalize", hold(&c, "k1")))
            .key("k1")
            .json(json!({ "actual_usd": usd }))
            .send()
    };
    assert_eq!(finalize("0.0005").await.status, 200);
    finalize("0.0006")
        .await
        .assert_problem(409, "idempotency-conflict");
    assert_eq!(s.budget(&c).await["committed_micros"], 500);
}

async fn cancel_replayed_answers_the_cancel_and_cancel_after_a_cost_is_409(s: Server) {
    let c = s.community("cancelreplay", 10).await;
    s.reserve(&c, "k1").await;
    s.reserve(&c, "k2").await;
    let cancel = |key: &'static str| s.post(format!("{}/cancel", hold(&c, key))).key(key).send();
    assert_eq!(cancel("k1").await.status, 200);
    let again = cancel("k1").await;
    assert_eq!(
        (again.status, again.json["replay"].as_bool()),
        (200, Some(true))
    );
    s.post(format!("{}/finalize", hold(&c, "k2")))
        .key("k2")
        .json(json!({"actual_micros": 300}))
        .send()
        .await;
    cancel("k2")
        .await
        .assert_problem(409, "idempotency-conflict");
    assert_eq!(s.budget(&c).await["committed_micros"], 300);
}

async fn reserve_after_the_call_was_settled_is_409_already_settled(s: Server) {
    let c = s.community("settled", 10).await;
    s.reserve(&c, "k1").await;
    s.post(format!("{}/cancel", hold(&c, "k1")))
        .key("k1")
        .send()
        .await;
    s.reserve(&c, "k1")
        .await
        .assert_problem(409, "already-settled");
    s.post(format!("{}/hand-over", hold(&c, "k1")))
        .key("k1")
        .send()
        .await
        .assert_problem(409, "already-settled");
}
