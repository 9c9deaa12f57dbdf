//! A settlement whose cost would take a counter out of range is a typed
//! 422 on the synchronous path, and its write-ahead entry is parked as a
//! dead letter rather than replayed forever.

use serde_json::json;

use crate::on_every_backend;
use crate::support::Server;

on_every_backend!(a_finalize_whose_cost_would_overflow_is_422_cost_out_of_range_and_a_dead_letter);

async fn a_finalize_whose_cost_would_overflow_is_422_cost_out_of_range_and_a_dead_letter(
    s: Server,
) {
    let max: i64 = (1 << 53) - 1;
    let c = crate::support::community("overflow");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .key("set")
        .json(json!({ "limit_micros": max }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for key in ["k1", "k2"] {
        let r = s
            .post(format!("/api/v1/communities/{c}/reservations"))
            .key(key)
            .json(json!({"user": "alice", "model": "cheap", "tier": 1, "estimate_micros": 1}))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let finalize = |key: &'static str, actual: i64| {
        s.post(format!(
            "/api/v1/communities/{c}/reservations/alice/{key}/finalize"
        ))
        .key(key)
        .json(json!({ "actual_micros": actual }))
    };
    let r = finalize("k1", max - 1).send().await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = finalize("k2", 2).send().await;
    r.assert_problem(422, "cost-out-of-range");
    let again = finalize("k2", 2).send().await;
    again.assert_problem(422, "cost-out-of-range");
    let queue = &s.sg.ports().finalize_queue;
    assert_eq!(queue.len().await.unwrap(), 0);
    assert_eq!(queue.dead_letter_count().await.unwrap(), 1);
    let budget = s.budget(&c).await;
    assert_eq!(
        (
            budget["committed_micros"].as_i64(),
            budget["holds"].as_u64()
        ),
        (Some(max - 1), Some(1))
    );
}

crate::cycles_on_every_backend!(a_cycles_commit_whose_cost_would_overflow_is_400_invalid_request);

async fn a_cycles_commit_whose_cost_would_overflow_is_400_invalid_request(env: crate::cycles::Env) {
    use spendgate::domain::{CommunityId, Limits, Micros};
    let max: i64 = (1 << 53) - 1;
    let tenant = CommunityId::parse(env.tenant.as_str()).unwrap();
    env.server
        .sg
        .budget()
        .set_budget(&tenant, Limits::new(Micros::new(max).unwrap()))
        .await
        .unwrap();
    let post = |path: String, body: serde_json::Value| {
        let request = env
            .server
            .client
            .post(format!("{}{path}", env.server.base))
            .header("X-Cycles-API-Key", crate::cycles::KEY_A)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let mut ids = Vec::new();
    for key in ["c1", "c2"] {
        let (status, body) = post(
            "/v1/reservations".to_owned(),
            json!({
                "idempotency_key": key,
                "subject": {"tenant": env.tenant, "agent": "bot-1"},
                "action": {"kind": "llm.completion", "name": "cheap"},
                "estimate": {"unit": "USD_MICROCENTS", "amount": 100},
            }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["reservation_id"].as_str().unwrap().to_owned());
    }
    let commit = |id: &str, key: &str, micros: i64| {
        post(
            format!("/v1/reservations/{id}/commit"),
            json!({
                "idempotency_key": key,
                "actual": {"unit": "USD_MICROCENTS", "amount": micros * 100},
            }),
        )
    };
    let (status, body) = commit(&ids[0], "k1", max - 1).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = commit(&ids[1], "k2", 2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("INVALID_REQUEST")),
        "{body}"
    );
    assert_eq!(
        env.server
            .sg
            .ports()
            .finalize_queue
            .dead_letter_count()
            .await
            .unwrap(),
        1
    );
}
