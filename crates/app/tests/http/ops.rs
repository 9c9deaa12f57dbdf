//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;

use spendgate::Spendgate;
use spendgate::inbound::http::{HttpOptions, router};

use crate::on_every_backend;
use crate::support::Server;

on_every_backend!(
    healthz_answers_ok_without_touching_a_backend,
    readyz_is_200_when_store_and_database_answer_and_503_when_the_store_does_not,
    metrics_render_the_reserve_counter_in_prometheus_text,
);

async fn healthz_answers_ok_without_touching_a_backend(s: Server) {
    s.store.down.store(true, Ordering::SeqCst);
    let r = s.get("/healthz").send().await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
}

async fn readyz_is_200_when_store_and_database_answer_and_503_when_the_store_does_not(s: Server) {
    let r = s.get("/readyz").send().await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("ready")),
        "{}",
        r.text
    );
    s.store.down.store(true, Ordering::SeqCst);
    let r = s.get("/readyz").send().await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        (r.json["store"].as_bool(), r.json["database"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(r.headers.contains_key("retry-after"));
}

async fn metrics_render_the_reserve_counter_in_prometheus_text(s: Server) {
    let c = s.community("metrics", 10).await;
    s.reserve(&c, "k1").await;
    let r = s.get("/metrics").send().await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("text/plain"),
        "{}",
        r.content_type()
    );
    assert!(r.text.contains("spendgate_reserves_total"), "{}", r.text);
    let route = "route=\"/api/v1/communities/{community}/reservations\"";
    let counted = r.text.lines().any(|l| {
        l.starts_with("spendgate_http_requests_total")
            && l.contains(route)
            && l.contains("status=\"201\"")
    });
    assert!(counted, "{}", r.text);
}

#[tokio::test]
async fn building_the_router_twice_in_one_process_does_not_panic() {
    let sg = Spendgate::builder().build().await.unwrap();
    let _first = router(sg.clone(), HttpOptions::default());
    let _second = router(sg, HttpOptions::default());
}
