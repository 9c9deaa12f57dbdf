//! Graceful shutdown: requests in flight finish, new ones are refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{Backend, Server};

async fn in_flight_requests_finish(backend: Backend) {
    let mut s = Server::start(backend).await;
    let c = s.community("drain", 100).await;
    s.store.delay_ms.store(1_000, Ordering::SeqCst);
    let before = s.store.calls.load(Ordering::SeqCst);
    let calls = (0..8).map(|i| {
        let client = reqwest::Client::new();
        let url = format!("{}/api/v1/communities/{c}/reservations", s.base);
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(crate::support::ADMIN)
                .header("Idempotency-Key", format!("k{i}"))
                .json(&crate::support::tokens_body())
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    let calls: Vec<_> = calls.collect();
    // Every request is inside the server, waiting on the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.store.calls.load(Ordering::SeqCst) < before + 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.shutdown.cancel();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 201);
    }
    s.handle.take().unwrap().await.unwrap().unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .send()
        .await;
    assert!(refused.is_err(), "served after shutdown: {refused:?}");
    s.store.delay_ms.store(0, Ordering::SeqCst);
    let status =
        s.sg.budget()
            .status(
                &spendgate::domain::CommunityId::parse(c.as_str()).unwrap(),
                None,
                None,
            )
            .await
            .unwrap();
    assert_eq!(status.holds, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drops_no_request_in_flight_on_memory() {
    in_flight_requests_finish(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drops_no_request_in_flight_on_sqlite() {
    in_flight_requests_finish(Backend::Sqlite).await;
}
