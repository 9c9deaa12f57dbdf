//! What a Cycles answer tells one tenant: nothing about other tenants'
//! reservations, and nothing about the process (request ids are random).

use serde_json::Value;

use crate::cycles::{Env, KEY_A, KEY_B};

/// (status, body, X-Request-Id) of `method path` with `key`.
async fn call(env: &Env, key: &str, method: reqwest::Method, path: &str) -> (u16, Value, String) {
    let mut request = env
        .server
        .client
        .request(method.clone(), format!("{}{path}", env.server.base))
        .header("X-Cycles-API-Key", key);
    if method == reqwest::Method::POST {
        request = request.json(&serde_json::json!({
            "idempotency_key": "probe",
            "actual": {"unit": "USD_MICROCENTS", "amount": 100},
        }));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, body, header)
}

/// The answer with the reservation id replaced, so two answers about two
/// ids compare equal when they say the same thing.
fn shape(answer: &(u16, Value, String), id: &str) -> (u16, String, String) {
    let message = answer.1["message"].as_str().unwrap().replace(id, "<id>");
    (
        answer.0,
        answer.1["error"].as_str().unwrap().to_owned(),
        message,
    )
}

crate::cycles_on_every_backend!(another_tenants_reservation_is_answered_as_an_unknown_one);

async fn another_tenants_reservation_is_answered_as_an_unknown_one(env: Env) {
    let created = env
        .client
        .create_reservation(&env.create("held", 100, 60_000))
        .await
        .unwrap();
    let theirs = created.reservation_id.unwrap().to_string();
    // An id of tenant A's shape (tag and user) whose hold was never made.
    let hash_start = "rsv_".len() + 8;
    let flipped = if &theirs[hash_start..=hash_start] == "0" {
        "1"
    } else {
        "0"
    };
    let unknown = format!(
        "{}{flipped}{}",
        &theirs[..hash_start],
        &theirs[hash_start + 1..]
    );
    for (method, suffix) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::POST, "/commit"),
    ] {
        let other = call(
            &env,
            KEY_B,
            method.clone(),
            &format!("/v1/reservations/{theirs}{suffix}"),
        )
        .await;
        let missing = call(
            &env,
            KEY_B,
            method.clone(),
            &format!("/v1/reservations/{unknown}{suffix}"),
        )
        .await;
        assert_eq!(other.0, 404, "{}", other.1);
        assert_eq!(other.1["error"], "NOT_FOUND");
        assert_eq!(shape(&other, &theirs), shape(&missing, &unknown));
    }
    // Tenant A still holds it, untouched by B's commit.
    let own = call(
        &env,
        KEY_A,
        reqwest::Method::GET,
        &format!("/v1/reservations/{theirs}"),
    )
    .await;
    assert_eq!(own.0, 200, "{}", own.1);
    assert_eq!(own.1["status"], "ACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_random_and_name_no_process_or_sequence() {
    let env = Env::start(crate::support::Backend::Memory).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = call(
            &env,
            "cycles-key-unknown-000",
            reqwest::Method::GET,
            "/v1/balances",
        )
        .await;
        assert_eq!(answer.0, 401, "{}", answer.1);
        let id = answer.1["request_id"].as_str().unwrap().to_owned();
        assert_eq!(answer.2, id, "X-Request-Id is the body's id");
        let bits = id.strip_prefix("req_").unwrap();
        assert_eq!(bits.len(), 32, "{id}");
        assert!(bits.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(
            !id.starts_with(&format!("req_{:x}_", std::process::id())),
            "{id} names the process"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}
