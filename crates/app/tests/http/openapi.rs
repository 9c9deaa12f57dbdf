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
