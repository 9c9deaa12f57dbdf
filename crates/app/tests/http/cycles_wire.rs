//! The Cycles routes over raw HTTP: the exact error bodies and answers the
//! client would hide, replays byte for byte, and the filters.

use serde_json::{Value, json};

use crate::cycles::{Env, KEY_A};

/// Sends `body` (or nothing) with tenant A's key; (status, body).
async fn send(env: &Env, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = env
        .server
        .client
        .request(method, format!("{}{path}", env.server.base))
        .header("X-Cycles-API-Key", KEY_A);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(env: &Env, path: &str, body: Value) -> (u16, Value) {
    send(env, reqwest::Method::POST, path, Some(body)).await
}

async fn get(env: &Env, path: &str) -> (u16, Value) {
    send(env, reqwest::Method::GET, path, None).await
}

fn create(env: &Env, key: &str, amount: i64) -> Value {
    json!({
        "idempotency_key": key,
        "subject": {"tenant": env.tenant, "workspace": "prod", "agent": "bot-1"},
        "action": {"kind": "llm.completion", "name": "cheap"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": amount},
        "ttl_ms": 30000,
    })
}

/// An error body is exactly the spec's: `error`, `message`, `request_id`
/// (and `details` when given), with the expected code.
fn assert_error(reply: &(u16, Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let body = reply.1.as_object().unwrap();
    assert_eq!(body["error"], code, "{}", reply.1);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["request_id"].as_str().is_some());
    assert!(
        body.keys()
            .all(|k| ["error", "message", "request_id", "details"].contains(&k.as_str())),
        "{}",
        reply.1
    );
}

fn no_nulls(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().all(no_nulls),
        Value::Object(map) => map.values().all(no_nulls),
        _ => true,
    }
}

crate::cycles_on_every_backend!(answers_and_replays, error_bodies, evaluations_and_queries);

async fn answers_and_replays(env: Env) {
    let first = post(&env, "/v1/reservations", create(&env, "k1", 12_345)).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let body = first.1.as_object().unwrap();
    assert_eq!(body["decision"], "ALLOW");
    // 12,345 microcents are held as 124 micro-USD.
    assert_eq!(
        body["reserved"],
        json!({"unit": "USD_MICROCENTS", "amount": 12_400})
    );
    let tenant = &env.tenant;
    assert_eq!(
        body["scope_path"],
        format!("tenant:{tenant}/workspace:prod/agent:bot-1")
    );
    assert_eq!(
        body["affected_scopes"],
        json!([
            format!("tenant:{tenant}"),
            format!("tenant:{tenant}/workspace:prod"),
            format!("tenant:{tenant}/workspace:prod/agent:bot-1"),
        ])
    );
    let mut keys: Vec<_> = body.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "affected_scopes",
            "decision",
            "expires_at_ms",
            "reservation_id",
            "reserved",
            "scope_path"
        ]
    );
    // Key order and spacing do not make another request.
    let reordered: Value = serde_json::from_str(&create(&env, "k1", 12_345).to_string()).unwrap();
    assert_eq!(post(&env, "/v1/reservations", reordered).await, first);
    let id = body["reservation_id"].as_str().unwrap().to_owned();

    let commit =
        json!({"idempotency_key": "c1", "actual": {"unit": "USD_MICROCENTS", "amount": 10_000}});
    let committed = post(
        &env,
        &format!("/v1/reservations/{id}/commit"),
        commit.clone(),
    )
    .await;
    assert_eq!(committed.0, 200, "{}", committed.1);
    assert_eq!(
        committed.1,
        json!({"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": 10_000}, "released": {"unit": "USD_MICROCENTS", "amount": 2_400}})
    );
    assert_eq!(
        post(&env, &format!("/v1/reservations/{id}/commit"), commit).await,
        committed
    );
    // Another key on a committed reservation.
    let other =
        json!({"idempotency_key": "c2", "actual": {"unit": "USD_MICROCENTS", "amount": 10_000}});
    let refused = post(&env, &format!("/v1/reservations/{id}/commit"), other).await;
    assert_error(&refused, 409, "RESERVATION_FINALIZED");
    let release = json!({"idempotency_key": "r1"});
    let refused = post(&env, &format!("/v1/reservations/{id}/release"), release).await;
    assert_error(&refused, 409, "RESERVATION_FINALIZED");

    let detail = get(&env, &format!("/v1/reservations/{id}")).await;
    assert_eq!(detail.0, 200, "{}", detail.1);
    assert!(no_nulls(&detail.1), "{}", detail.1);
    assert_eq!(detail.1["status"], "COMMITTED");
    assert_eq!(detail.1["idempotency_key"], "k1");
    assert_eq!(
        detail.1["action"],
        json!({"kind": "llm.completion", "name": "cheap"})
    );

    let event = json!({
        "idempotency_key": "e1",
        "subject": {"agent": "bot-2"},
        "action": {"kind": "tool.search", "name": "web.search"},
        "actual": {"unit": "USD_MICROCENTS", "amount": 500},
    });
    let applied = post(&env, "/v1/events", event.clone()).await;
    assert_eq!(applied.0, 201, "{}", applied.1);
    assert_eq!(applied.1["status"], "APPLIED");
    assert_eq!(post(&env, "/v1/events", event).await, applied);
    let balances = get(&env, &format!("/v1/balances?tenant={tenant}")).await;
    assert_eq!(balances.0, 200, "{}", balances.1);
    let ledger = &balances.1["balances"][0];
    assert_eq!(ledger["spent"]["amount"], 10_500);
    assert_eq!(ledger["reserved"]["amount"], 0);
    assert_eq!(ledger["allocated"]["amount"], 100_000_000);
    assert_eq!(ledger["remaining"]["amount"], 100_000_000 - 10_500);
}

async fn error_bodies(env: Env) {
    let tenant = env.tenant.clone();
    let mut unknown_field = create(&env, "x1", 100);
    unknown_field["surprise"] = json!(1);
    assert_error(
        &post(&env, "/v1/reservations", unknown_field).await,
        400,
        "INVALID_REQUEST",
    );
    let mut bad_ttl = create(&env, "x2", 100);
    bad_ttl["ttl_ms"] = json!(10);
    assert_error(
        &post(&env, "/v1/reservations", bad_ttl).await,
        400,
        "INVALID_REQUEST",
    );
    let mut negative = create(&env, "x3", 100);
    negative["estimate"]["amount"] = json!(-1);
    assert_error(
        &post(&env, "/v1/reservations", negative).await,
        400,
        "INVALID_REQUEST",
    );
    let mut credits = create(&env, "x4", 100);
    credits["estimate"]["unit"] = json!("CREDITS");
    let mismatch = post(&env, "/v1/reservations", credits).await;
    assert_error(&mismatch, 400, "UNIT_MISMATCH");
    assert_eq!(mismatch.1["details"]["requested_unit"], "CREDITS");
    assert_eq!(
        mismatch.1["details"]["expected_units"],
        json!(["USD_MICROCENTS"])
    );
    let mut dimensions_only = create(&env, "x5", 100);
    dimensions_only["subject"] = json!({"dimensions": {"team": "a"}});
    assert_error(
        &post(&env, "/v1/reservations", dimensions_only).await,
        400,
        "INVALID_REQUEST",
    );
    let mut foreign = create(&env, "x6", 100);
    foreign["subject"]["tenant"] = json!(env.other);
    assert_error(
        &post(&env, "/v1/reservations", foreign).await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &post(&env, "/v1/reservations", json!("nope")).await,
        400,
        "INVALID_REQUEST",
    );
    // The header copy of the key must match the body's.
    let reply = env
        .server
        .client
        .post(format!("{}/v1/reservations", env.server.base))
        .header("X-Cycles-API-Key", KEY_A)
        .header("X-Idempotency-Key", "other")
        .json(&create(&env, "x7", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    // No key at all.
    let reply = env
        .server
        .client
        .get(format!("{}/v1/balances?tenant={tenant}", env.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "UNAUTHORIZED");
    // Ids this server never made, or made for nobody.
    let commit = json!({"idempotency_key": "c", "actual": {"unit": "USD_MICROCENTS", "amount": 1}});
    assert_error(
        &post(&env, "/v1/reservations/rsv_nope/commit", commit).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &get(&env, "/v1/reservations/whatever").await,
        404,
        "NOT_FOUND",
    );
    // Budget denial of a live reserve.
    let too_much = post(&env, "/v1/reservations", create(&env, "x8", 200_000_000)).await;
    assert_error(&too_much, 409, "BUDGET_EXCEEDED");
    // Extend and release after the expiry.
    let mut short = create(&env, "x9", 100);
    short["ttl_ms"] = json!(1000);
    short["grace_period_ms"] = json!(0);
    let created = post(&env, "/v1/reservations", short).await;
    let id = created.1["reservation_id"].as_str().unwrap().to_owned();
    let extended = post(
        &env,
        &format!("/v1/reservations/{id}/extend"),
        json!({"idempotency_key": "e1", "extend_by_ms": 500}),
    )
    .await;
    assert_eq!(extended.0, 200, "{}", extended.1);
    assert_eq!(extended.1["status"], "ACTIVE");
    assert_eq!(
        extended.1["expires_at_ms"].as_i64().unwrap(),
        created.1["expires_at_ms"].as_i64().unwrap() + 500
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    let late = post(
        &env,
        &format!("/v1/reservations/{id}/extend"),
        json!({"idempotency_key": "e2", "extend_by_ms": 500}),
    )
    .await;
    assert_error(&late, 410, "RESERVATION_EXPIRED");
    let late = post(
        &env,
        &format!("/v1/reservations/{id}/release"),
        json!({"idempotency_key": "r2"}),
    )
    .await;
    assert_error(&late, 410, "RESERVATION_EXPIRED");
    assert_error(
        &get(&env, &format!("/v1/reservations/{id}")).await,
        410,
        "RESERVATION_EXPIRED",
    );
    // REJECT refuses an overage and keeps the reservation.
    let mut strict = create(&env, "x10", 1_000);
    strict["overage_policy"] = json!("REJECT");
    let created = post(&env, "/v1/reservations", strict).await;
    let id = created.1["reservation_id"].as_str().unwrap().to_owned();
    let over =
        json!({"idempotency_key": "c", "actual": {"unit": "USD_MICROCENTS", "amount": 1_100}});
    assert_error(
        &post(&env, &format!("/v1/reservations/{id}/commit"), over).await,
        409,
        "BUDGET_EXCEEDED",
    );
    assert_eq!(
        get(&env, &format!("/v1/reservations/{id}")).await.1["status"],
        "ACTIVE"
    );
}

async fn evaluations_and_queries(env: Env) {
    let tenant = env.tenant.clone();
    let mut dry = create(&env, "d1", 300_000_000);
    dry["dry_run"] = json!(true);
    let denied = post(&env, "/v1/reservations", dry).await;
    assert_eq!(denied.0, 200, "{}", denied.1);
    assert_eq!(denied.1["decision"], "DENY");
    assert_eq!(denied.1["reason_code"], "BUDGET_EXCEEDED");
    assert!(denied.1.get("reservation_id").is_none());
    assert!(denied.1.get("expires_at_ms").is_none());
    let decide = json!({
        "idempotency_key": "q1",
        "subject": {"agent": "bot-1"},
        "action": {"kind": "llm.completion", "name": "cheap"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1_000},
    });
    let allowed = post(&env, "/v1/decide", decide).await;
    assert_eq!(allowed.0, 200, "{}", allowed.1);
    assert_eq!(
        allowed.1,
        json!({"decision": "ALLOW", "affected_scopes": [format!("tenant:{tenant}"), format!("tenant:{tenant}/agent:bot-1")]})
    );
    // Nothing was held by either.
    let balances = get(&env, "/v1/balances?agent=bot-1").await;
    assert_eq!(balances.1["balances"][0]["reserved"]["amount"], 0);

    let created = post(&env, "/v1/reservations", create(&env, "l1", 100)).await;
    let id = created.1["reservation_id"].clone();
    let found = get(&env, "/v1/reservations?idempotency_key=l1&agent=bot-1").await;
    assert_eq!(found.0, 200, "{}", found.1);
    assert_eq!(found.1["reservations"][0]["reservation_id"], id);
    assert_eq!(found.1["reservations"][0]["status"], "ACTIVE");
    let filtered = get(
        &env,
        "/v1/reservations?idempotency_key=l1&agent=bot-1&status=COMMITTED",
    )
    .await;
    assert_eq!(filtered.1["reservations"], json!([]));
    assert_error(&get(&env, "/v1/reservations").await, 400, "INVALID_REQUEST");
    assert_error(
        &get(
            &env,
            &format!("/v1/reservations?idempotency_key=l1&tenant={}", env.other),
        )
        .await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &get(&env, &format!("/v1/balances?tenant={}", env.other)).await,
        403,
        "FORBIDDEN",
    );
}
