//! A loopback TCP proxy in front of a real server (Redis, PostgreSQL), for
//! the tests that need the network to fail: the workspace's one copy, used
//! by the app's and the adapters' outage tests and by the simulator's runs
//! on the real stores.
//!
//! The faults are the network's, so the client library and the adapter
//! meet them as in production: a **cut** drops every open connection and
//! refuses new ones (the server went away); **slow** delays every chunk in
//! both directions by a few milliseconds (a congested link); a **lost
//! reply** forwards a request to the server, which applies it, then drops
//! the server's answer and closes the connection (a timeout after the
//! write happened: the one fault where the caller cannot know the effect).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything at once.
    Pass,
    /// Every open connection was dropped when the mode was set; new ones
    /// are closed as soon as they are accepted.
    Cut,
    /// Forwards every chunk after a delay of 1 to `max_ms` milliseconds,
    /// different from chunk to chunk.
    Slow {
        /// The longest delay of one chunk.
        max_ms: u64,
    },
}

/// A reply the proxy is to lose: the first request after arming that
/// contains `needle` (any request when empty) is forwarded, and the
/// server's next bytes on that connection are dropped with the connection.
#[derive(Debug, Clone)]
struct Armed {
    needle: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    armed: Mutex<Option<Armed>>,
    lost: AtomicU64,
    chunks: AtomicU64,
    /// Bumped by a cut: connections opened before it close.
    generation: watch::Sender<u64>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    /// The arm, taken, when `chunk` is the request whose reply is lost.
    fn take_arm(&self, chunk: &[u8]) -> bool {
        let mut armed = lock(&self.armed);
        let hit = armed.as_ref().is_some_and(|a| {
            a.needle.is_empty() || chunk.windows(a.needle.len()).any(|w| w == a.needle)
        });
        if hit {
            *armed = None;
        }
        hit
    }

    async fn pace(&self) {
        if let Mode::Slow { max_ms } = self.mode() {
            let n = self.chunks.fetch_add(1, Ordering::Relaxed);
            let ms = 1 + n.wrapping_mul(7_919) % max_ms.max(1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards a loopback port to one upstream `host:port`, with faults on
/// demand. Dropping it stops accepting; open connections run out.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`
    /// (`host:port`), passing traffic.
    ///
    /// # Errors
    /// No loopback port could be bound.
    pub async fn start(upstream: impl Into<String>) -> io::Result<Self> {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (generation, _) = watch::channel(0_u64);
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            armed: Mutex::new(None),
            lost: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            generation,
        });
        let accepting = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.mode() == Mode::Cut {
                    continue;
                }
                let mut stop = accepting.generation.subscribe();
                // Only a cut after this connection opened closes it.
                stop.borrow_and_update();
                let shared = Arc::clone(&accepting);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let lose = Arc::new(watch::channel(false).0);
                    tokio::select! {
                        () = requests(client_read, server_write, &shared, &lose) => {}
                        () = replies(server_read, client_write, &shared, &lose) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            port,
            shared,
            accept,
        })
    }

    /// A proxy in front of the server of `url`
    /// (`scheme://[credentials@]host:port[/rest]`), and the same URL
    /// through it.
    ///
    /// # Errors
    /// `url` names no `host:port`, or no loopback port could be bound.
    pub async fn for_url(url: &str) -> io::Result<(Self, String)> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {url}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let (server, path) = match rest.split_once('/') {
            Some((server, path)) => (server, format!("/{path}")),
            None => (rest, String::new()),
        };
        let (credentials, authority) = match server.rsplit_once('@') {
            Some((credentials, authority)) => (format!("{credentials}@"), authority),
            None => (String::new(), server),
        };
        if authority.is_empty() {
            return Err(invalid());
        }
        let proxy = Self::start(authority).await?;
        let proxied = format!("{scheme}://{credentials}127.0.0.1:{}{path}", proxy.port);
        Ok((proxy, proxied))
    }

    /// The loopback port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sets how traffic is treated from now on; [`Mode::Cut`] drops every
    /// open connection at once.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        if mode == Mode::Cut {
            self.shared.generation.send_modify(|g| *g += 1);
        }
    }

    /// How traffic is treated now.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Cuts the server off ([`Mode::Cut`]) or lets traffic pass again.
    pub fn set_cut(&self, cut: bool) {
        self.set_mode(if cut { Mode::Cut } else { Mode::Pass });
    }

    /// Arms a lost reply: the next request containing `needle` (the next
    /// request at all when empty) reaches the server, and its reply is
    /// dropped with its connection. A later arm replaces an unfired one.
    pub fn lose_next_reply(&self, needle: &[u8]) {
        *lock(&self.shared.armed) = Some(Armed {
            needle: needle.to_vec(),
        });
    }

    /// Disarms a lost reply that has not fired; `true` when there was one.
    pub fn disarm(&self) -> bool {
        lock(&self.shared.armed).take().is_some()
    }

    /// How many replies were lost so far.
    pub fn replies_lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

/// Client to server: paced, and the request whose reply is to be lost
/// marks its connection before it is forwarded.
async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    lose: &watch::Sender<bool>,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        shared.pace().await;
        if shared.take_arm(chunk) {
            lose.send_replace(true);
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Server to client: paced; on a marked connection the first reply is
/// dropped and the connection closed.
async fn replies(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    lose: &watch::Sender<bool>,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *lose.borrow() {
            shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.pace().await;
        if to
            .write_all(buf.get(..n).unwrap_or_default())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// An upstream that answers every chunk with "ok:" and the chunk, and
    /// counts the chunks it received.
    async fn echo() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = [0_u8; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let mut reply = b"ok:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        if socket.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap()
    }

    /// The connection closed without an answer.
    fn unanswered(reply: &io::Result<Vec<u8>>) -> bool {
        reply.as_ref().map_or(true, Vec::is_empty)
    }

    async fn ask(stream: &mut TcpStream, what: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(what).await?;
        let mut buf = [0_u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn passes_traffic_both_ways() {
        let (upstream, _) = echo().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut s = connect(&proxy).await;
        assert_eq!(ask(&mut s, b"ping").await.unwrap(), b"ok:ping");
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_lifted() {
        let (upstream, _) = echo().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(ask(&mut open, b"a").await.unwrap(), b"ok:a");
        proxy.set_cut(true);
        let reply = ask(&mut open, b"b").await;
        assert!(unanswered(&reply), "closed: {reply:?}");
        let mut new = connect(&proxy).await;
        let reply = ask(&mut new, b"c").await;
        assert!(unanswered(&reply), "refused: {reply:?}");
        proxy.set_cut(false);
        let mut again = connect(&proxy).await;
        assert_eq!(ask(&mut again, b"d").await.unwrap(), b"ok:d");
    }

    #[tokio::test]
    async fn a_lost_reply_reaches_the_server_and_never_the_client() {
        let (upstream, seen) = echo().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut s = connect(&proxy).await;
        assert_eq!(ask(&mut s, b"read").await.unwrap(), b"ok:read");
        proxy.lose_next_reply(b"COMMIT");
        assert_eq!(ask(&mut s, b"other").await.unwrap(), b"ok:other");
        let reply = ask(&mut s, b"COMMIT").await;
        assert!(unanswered(&reply), "lost: {reply:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 3, "the server got the write");
        assert_eq!(proxy.replies_lost(), 1);
        assert!(!proxy.disarm(), "fired once");
    }

    #[tokio::test]
    async fn a_slow_proxy_still_delivers_in_order() {
        let (upstream, _) = echo().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        proxy.set_mode(Mode::Slow { max_ms: 3 });
        let mut s = connect(&proxy).await;
        for word in [&b"x"[..], b"y", b"z"] {
            let mut want = b"ok:".to_vec();
            want.extend_from_slice(word);
            assert_eq!(ask(&mut s, word).await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn for_url_keeps_credentials_and_path() {
        let (upstream, _) = echo().await;
        let (proxy, url) = FaultProxy::for_url(&format!("postgres://me@{upstream}/db?x=1"))
            .await
            .unwrap();
        assert_eq!(
            url,
            format!("postgres://me@127.0.0.1:{}/db?x=1", proxy.port())
        );
        assert!(FaultProxy::for_url("no-scheme").await.is_err());
    }
}
