//! The OpenAPI document: generated from the code, checked in, served.

use spendgate::inbound::http::ApiDoc;
use utoipa::OpenApi;

use crate::support::{Backend, Server};

fn generated() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap();
    text.push('\n');
    text
}

/// Fails when `crates/app/openapi.json` differs from what the code
/// generates; `SPENDGATE_UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = generated();
    if std::env::var("SPENDGATE_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "crates/app/openapi.json is stale: run `SPENDGATE_UPDATE_OPENAPI=1 cargo test -p spendgate --test http openapi`"
    );
}

#[test]
fn the_document_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/communities/{community}/reservations",
        "/api/v1/communities/{community}/reservations/{user}/{key}",
        "/api/v1/communities/{community}/reservations/{user}/{key}/finalize",
        "/api/v1/communities/{community}/reservations/{user}/{key}/cancel",
        "/api/v1/communities/{community}/reservations/{user}/{key}/extend",
        "/api/v1/communities/{community}/budget/users",
        "/api/v1/communities/{community}/reservations/{user}/{key}/hand-over",
        "/api/v1/communities/{community}/budget",
        "/api/v1/communities/{community}/tiers",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_serves_the_generated_document() {
    let s = Server::start(Backend::Memory).await;
    let r = s.get("/openapi.json").send().await;
    assert_eq!(r.status, 200);
    let generated: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(r.json, generated);
}

/// The Cycles schemas as `cycles-protocol-v0` names them: every property
/// spendgate sends or reads, and the ones the spec requires.
const CYCLES_SCHEMAS: &[(&str, &[&str], &[&str])] = &[
    (
        "ReservationCreateRequest",
        &[
            "idempotency_key",
            "subject",
            "action",
            "estimate",
            "ttl_ms",
            "grace_period_ms",
            "overage_policy",
            "dry_run",
            "metadata",
        ],
        &["idempotency_key", "subject", "action", "estimate"],
    ),
    (
        "CommitRequest",
        &["idempotency_key", "actual", "metrics", "metadata"],
        &["idempotency_key", "actual"],
    ),
    (
        "ReleaseRequest",
        &["idempotency_key", "reason"],
        &["idempotency_key"],
    ),
    (
        "ReservationExtendRequest",
        &["idempotency_key", "extend_by_ms", "metadata"],
        &["idempotency_key", "extend_by_ms"],
    ),
    (
        "DecisionRequest",
        &[
            "idempotency_key",
            "subject",
            "action",
            "estimate",
            "metadata",
        ],
        &["idempotency_key", "subject", "action", "estimate"],
    ),
    (
        "EventCreateRequest",
        &[
            "idempotency_key",
            "subject",
            "action",
            "actual",
            "overage_policy",
            "metrics",
            "client_time_ms",
            "metadata",
        ],
        &["idempotency_key", "subject", "action", "actual"],
    ),
    (
        "ReservationCreateResponse",
        &[
            "decision",
            "reservation_id",
            "reserved",
            "expires_at_ms",
            "scope_path",
            "affected_scopes",
            "caps",
            "balances",
            "reason_code",
            "retry_after_ms",
            "cycles_evidence",
        ],
        &["decision", "affected_scopes"],
    ),
    (
        "DecisionResponse",
        &[
            "decision",
            "caps",
            "reason_code",
            "retry_after_ms",
            "affected_scopes",
            "cycles_evidence",
        ],
        &["decision"],
    ),
    (
        "CommitResponse",
        &[
            "status",
            "charged",
            "released",
            "balances",
            "cycles_evidence",
        ],
        &["status", "charged"],
    ),
    (
        "ReleaseResponse",
        &["status", "released", "balances", "cycles_evidence"],
        &["status", "released"],
    ),
    (
        "ReservationExtendResponse",
        &["status", "expires_at_ms", "balances"],
        &["status", "expires_at_ms"],
    ),
    (
        "EventCreateResponse",
        &["status", "event_id", "charged", "balances"],
        &["status", "event_id"],
    ),
    (
        "ReservationDetail",
        &[
            "reservation_id",
            "status",
            "idempotency_key",
            "subject",
            "action",
            "reserved",
            "committed",
            "created_at_ms",
            "expires_at_ms",
            "finalized_at_ms",
            "scope_path",
            "affected_scopes",
            "metadata",
            "committed_metadata",
            "evidence",
        ],
        &[
            "reservation_id",
            "status",
            "subject",
            "action",
            "reserved",
            "created_at_ms",
            "expires_at_ms",
            "scope_path",
            "affected_scopes",
        ],
    ),
    (
        "ReservationListResponse",
        &["reservations", "next_cursor", "has_more"],
        &["reservations"],
    ),
    (
        "Balance",
        &[
            "scope",
            "scope_path",
            "remaining",
            "reserved",
            "spent",
            "debt",
            "allocated",
            "overdraft_limit",
            "is_over_limit",
        ],
        &["scope", "scope_path", "remaining"],
    ),
    (
        "BalanceResponse",
        &["balances", "next_cursor", "has_more"],
        &["balances"],
    ),
    (
        "ErrorResponse",
        &[
            "error",
            "message",
            "request_id",
            "trace_id",
            "details",
            "cycles_evidence",
        ],
        &["error", "message", "request_id"],
    ),
    (
        "Subject",
        &[
            "tenant",
            "workspace",
            "app",
            "workflow",
            "agent",
            "toolset",
            "dimensions",
        ],
        &[],
    ),
    ("Action", &["kind", "name", "tags"], &["kind", "name"]),
    ("Amount", &["unit", "amount"], &["unit", "amount"]),
];

/// Where spendgate's document and the protocol's overlap they agree: no
/// property the spec does not define, every property it requires.
#[test]
fn the_cycles_routes_match_the_protocol_schemas() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    for path in [
        "/v1/reservations",
        "/v1/reservations/{reservation_id}",
        "/v1/reservations/{reservation_id}/commit",
        "/v1/reservations/{reservation_id}/release",
        "/v1/reservations/{reservation_id}/extend",
        "/v1/balances",
        "/v1/decide",
        "/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["cycles_api_key"]["name"],
        "X-Cycles-API-Key"
    );
    for (name, allowed, required) in CYCLES_SCHEMAS {
        let schema = &doc["components"]["schemas"][name];
        let properties = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} missing"));
        for property in properties.keys() {
            assert!(
                allowed.contains(&property.as_str()),
                "{name}.{property} is not in the protocol"
            );
        }
        let ours: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for property in *required {
            assert!(
                ours.contains(property),
                "{name}.{property} is required by the protocol"
            );
        }
    }
}
