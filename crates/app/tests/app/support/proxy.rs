//! A loopback TCP proxy the tests can cut, to make a real server
//! unreachable without touching the shared one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards 127.0.0.1:<port> to `upstream` until cut.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0_u64);
        let accept_cut = cut.clone();
        let accept_gen = generation.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if accept_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut stop = accept_gen.clone();
                // Only a cut after this connection opened closes it.
                stop.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            cut,
            generation,
        }
    }

    /// A proxy in front of the server of `url`
    /// (`scheme://[credentials@]host:port/rest`), and the same URL through
    /// it.
    pub async fn for_url(url: &str) -> (Self, String) {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (server, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, authority) = match server.rsplit_once('@') {
            Some((credentials, authority)) => (format!("{credentials}@"), authority),
            None => (String::new(), server),
        };
        let proxy = Self::start(authority.to_owned()).await;
        let proxied = format!("{scheme}://{credentials}127.0.0.1:{}/{path}", proxy.port);
        (proxy, proxied)
    }

    /// Drops every open connection and refuses new ones (or lets them in
    /// again).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}
