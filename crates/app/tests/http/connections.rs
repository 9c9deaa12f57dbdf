//! The server bounds its connections: a request head must arrive within
//! the header-read timeout, an idle kept-alive connection is closed after
//! the idle timeout, and one connection over the cap is answered 503 and
//! closed rather than left hanging. Durations are test-shortened; no test
//! asserts how long anything took, only that it happened within a
//! generous bound.

use std::time::Duration;

use spendgate::inbound::http::HttpOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, Server, admin, options};

/// Far longer than any timeout these tests set.
const GENEROUS: Duration = Duration::from_secs(20);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
/// A request head cut before its end.
const PARTIAL: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

fn with(header_read_ms: u64, idle_ms: u64, max_connections: u32) -> HttpOptions {
    HttpOptions {
        header_read_timeout: Duration::from_millis(header_read_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections,
        ..options(vec![admin()])
    }
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Whether the server closes `stream` within [`GENEROUS`], reading (and
/// dropping) whatever it sends first.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0_u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GENEROUS, closed).await.is_ok()
}

/// Reads one answer to [`HEALTHZ`] on a kept-alive connection.
async fn healthz_answer(stream: &mut TcpStream) -> String {
    stream.write_all(HEALTHZ).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(GENEROUS, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_request_head_is_closed_after_the_header_read_timeout() {
    let s = Server::start_with(Backend::Memory, with(200, 60_000, 1024)).await;
    let mut slow = connect(&s).await;
    slow.write_all(PARTIAL).await.unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "the partial head stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_new_connection_is_closed_after_the_header_read_timeout() {
    let s = Server::start_with(Backend::Memory, with(200, 60_000, 1024)).await;
    let mut silent = connect(&s).await;
    assert!(
        closed_by_server(&mut silent).await,
        "the silent connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let s = Server::start_with(Backend::Memory, with(60_000, 200, 1024)).await;
    let mut kept = connect(&s).await;
    let answer = healthz_answer(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed_by_server(&mut kept).await,
        "the idle connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_serves_requests_one_after_another() {
    let s = Server::start_with(Backend::Memory, with(60_000, 60_000, 1024)).await;
    let mut kept = connect(&s).await;
    for _ in 0..3 {
        let answer = healthz_answer(&mut kept).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_answered_503_and_closed() {
    let s = Server::start_with(Backend::Memory, with(60_000, 60_000, 2)).await;
    let mut first = connect(&s).await;
    first.write_all(PARTIAL).await.unwrap();
    let mut second = connect(&s).await;
    second.write_all(PARTIAL).await.unwrap();
    // Accepted in connection order: the third finds both slots taken.
    let mut third = connect(&s).await;
    third.write_all(HEALTHZ).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(GENEROUS, third.read_to_end(&mut answer))
        .await
        .expect("the refused connection hung")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
    assert!(
        lower.contains("content-type: application/problem+json\r\n"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        problem["type"],
        "https://spendgate.dev/problems/too-many-connections"
    );
    assert_eq!(problem["status"], 503);
    // A slot freed is a slot served.
    drop(first);
    let deadline = tokio::time::Instant::now() + GENEROUS;
    loop {
        let r = s.get("/healthz").send().await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(tokio::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_300_slow_connections_are_open() {
    let s = Server::start(Backend::Memory).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = connect(&s).await;
        stream.write_all(PARTIAL).await.unwrap();
        slow.push(stream);
    }
    let r = tokio::time::timeout(GENEROUS, s.get("/healthz").send())
        .await
        .expect("/healthz hung");
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_silent_or_slow_connection() {
    let mut s = Server::start_with(Backend::Memory, with(500, 60_000, 1024)).await;
    let _silent = connect(&s).await;
    let mut slow = connect(&s).await;
    slow.write_all(PARTIAL).await.unwrap();
    // Both are accepted once a later request is answered.
    assert_eq!(s.get("/healthz").send().await.status, 200);
    s.shutdown.cancel();
    let handle = s.handle.take().unwrap();
    tokio::time::timeout(GENEROUS, handle)
        .await
        .expect("shutdown waited on idle connections")
        .unwrap()
        .unwrap();
}
