//! The connection loop under the router: hyper's HTTP/1 server driven by
//! hand, because `axum::serve` cannot bound how long a client takes to send
//! a request head, how long a kept-alive connection may sit idle, or how
//! many connections are open at once; without those bounds a few hundred
//! clients that send half a request head hold the server.
//!
//! Every connection has a watchdog over what its socket and its requests
//! do (see [`Activity`]):
//! * from the accept, or from the first byte of a later request, the whole
//!   head must arrive within the header-read timeout;
//! * between requests, a kept-alive connection may stay silent for the
//!   idle timeout;
//! * while a request is in the router, neither runs (the request timeout
//!   bounds the handler).
//!
//! A connection over the cap is answered 503 (a problem with
//! `Retry-After`) and closed at once, so its client learns to retry rather
//! than hang; refusals in flight are bounded too, beyond which a new
//! connection is closed without an answer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::problem::ApiError;

/// Counter of connections refused because the cap was reached.
pub const HTTP_CONNECTIONS_REFUSED: &str = "spendgate_http_connections_refused_total";

/// Refusals (503 answers) in flight at most; past them a connection over
/// the cap is closed without an answer.
const REFUSALS_IN_FLIGHT: u32 = 64;

/// How long a refusal may take: half of it waiting for the request head,
/// the rest writing the answer and seeing the client close.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// How long the accept loop pauses after an error that is not one
/// connection's (such as running out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The connection bounds [`run`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: u32,
}

/// Serves `router` on `listener` until `shutdown` fires, then stops
/// accepting, lets every open connection finish the request it is on, and
/// returns once all are closed.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(permits(limits.max_connections)));
    let refusals = Arc::new(Semaphore::new(permits(REFUSALS_IN_FLIGHT)));
    let service = TowerToHyperService::new(router);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error, &shutdown).await;
                    continue;
                }
            },
        };
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            let connection = serve_connection(stream, service.clone(), limits, shutdown.clone());
            tokio::spawn(async move {
                connection.await;
                drop(slot);
            });
            continue;
        }
        metrics::counter!(HTTP_CONNECTIONS_REFUSED).increment(1);
        if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            tokio::spawn(refuse(stream, limits.max_connections, refusal));
        }
    }
    drop(listener);
    // Every connection and refusal holds a permit until it is closed.
    let _all = tokio::join!(
        slots.acquire_many(limits.max_connections),
        refusals.acquire_many(REFUSALS_IN_FLIGHT),
    );
}

fn permits(count: u32) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// One connection's error (reset, aborted) is that client's; anything else
/// (out of file descriptors) is logged and waited out briefly, rather than
/// spinning or stopping the server.
async fn accept_failed(error: &io::Error, shutdown: &CancellationToken) {
    use io::ErrorKind as K;
    if matches!(
        error.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; pausing");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_PAUSE) => {}
    }
}

/// Serves one connection until it closes, its watchdog expires, or
/// shutdown drains it.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = Counted {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let connection = http1::Builder::new()
        // The watchdog times heads; hyper's own timer would also run
        // between requests and cut the idle timeout short.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                if activity.silent() {
                    return;
                }
                // Finishes the request in flight (or the one arriving,
                // within the header-read timeout), then closes.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            expired = activity.expired(limits) => {
                tracing::debug!(reason = expired, "closing a connection");
                return;
            }
        }
    }
}

/// Answers 503 to a connection over the cap and closes it. The request
/// head is awaited first (briefly: a client that has not finished sending
/// it would take an early answer for a broken connection), and what the
/// client sends after the answer is read and dropped until it closes, so
/// closing never resets the answer away.
async fn refuse(mut stream: TcpStream, cap: u32, _refusal: OwnedSemaphorePermit) {
    let problem = ApiError::TooManyConnections(cap).problem();
    let Ok(body) = serde_json::to_vec(&problem) else {
        return;
    };
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        super::PROBLEM_JSON,
        super::problem::RETRY_AFTER_SECS,
        body.len()
    );
    let answered = async {
        let mut received = Vec::new();
        let mut chunk = [0_u8; 1024];
        let request_head = async {
            while !received.windows(4).any(|w| w == b"\r\n\r\n") && received.len() < 16 * 1024 {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..n]);
            }
            Ok::<(), io::Error>(())
        };
        // Answered whether or not the head came in time.
        let _ = tokio::time::timeout(REFUSAL_TIME / 2, request_head).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        while stream.read(&mut chunk).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    // Either way the connection is closed when this returns.
    let _ = tokio::time::timeout(REFUSAL_TIME, answered).await;
}

/// What a connection is doing, for its watchdog.
struct Activity {
    state: Mutex<State>,
    /// Woken when a deadline may have moved earlier: a head started, or
    /// the last request in flight answered.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests the router is answering.
    in_flight: usize,
    /// When a request head started arriving (the accept for the first
    /// one) and has not been dispatched yet.
    head_since: Option<Instant>,
    /// Whether any byte of that head has arrived.
    head_bytes: bool,
    /// When the connection last did something while no request was in
    /// flight: the last answer, or a byte of it written.
    idle_since: Instant,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                head_since: Some(now),
                head_bytes: false,
                idle_since: now,
            }),
            changed: Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // The state holds plain numbers: a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Bytes arrived: between requests, the first of them starts a head.
    fn read(&self) {
        let started = self.with(|s| {
            if s.in_flight > 0 {
                return false;
            }
            s.head_bytes = true;
            let start = s.head_since.is_none();
            if start {
                s.head_since = Some(Instant::now());
            }
            start
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// Bytes of an answer left: the connection is not idle.
    fn wrote(&self) {
        self.with(|s| s.idle_since = Instant::now());
    }

    /// A head was parsed and handed to the router.
    fn dispatched(self: &Arc<Self>) -> InFlight {
        self.with(|s| {
            s.in_flight += 1;
            s.head_since = None;
            s.head_bytes = false;
        });
        InFlight(Arc::clone(self))
    }

    /// The router answered (or the request was dropped).
    fn answered(&self) {
        let idle = self.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.idle_since = Instant::now();
            s.in_flight == 0
        });
        if idle {
            self.changed.notify_one();
        }
    }

    /// Whether the connection is between requests with nothing of the
    /// next one received: closing it loses nothing.
    fn silent(&self) -> bool {
        self.with(|s| s.in_flight == 0 && !s.head_bytes)
    }

    /// When the connection must be closed, and why; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: ConnectionLimits) -> Option<(Instant, &'static str)> {
        self.with(|s| {
            if s.in_flight > 0 {
                None
            } else if let Some(since) = s.head_since {
                Some((since + limits.header_read_timeout, "header read timeout"))
            } else {
                Some((s.idle_since + limits.idle_timeout, "idle timeout"))
            }
        })
    }

    /// Resolves when the connection's deadline passes, with the reason.
    async fn expired(&self, limits: ConnectionLimits) -> &'static str {
        loop {
            // Created before reading the state, so no change is missed
            // (and `notify_one` keeps a wake-up for a later waiter).
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some((at, reason)) if at <= Instant::now() => return reason,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// The router as hyper's service, counting requests in flight.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

type Answer = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Counted {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.dispatched();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}

/// The connection's socket, reporting reads and writes to its
/// [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
