//! Throw-away `redis-server`s on their own ports, for tests that kill a
//! server or count its commands, speak TLS to it or replicate it, and for
//! the bench (which includes this file), so nothing else disturbs what
//! they measure.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A `redis-server` this test started on its own port; killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    bus_port: Option<u16>,
}

impl OwnRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let own = Self::spawn(port, &["--port", &port.to_string()]);
        own.wait_ready();
        own
    }

    /// A server that speaks only TLS on its port, with the given PEM
    /// files; `verify_clients` asks clients for a certificate the CA
    /// signed.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path, verify_clients: bool) -> Self {
        Self::start_tls_with(cert, key, ca, verify_clients, &[])
    }

    /// [`Self::start_tls`] with more server arguments.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn start_tls_with(
        cert: &Path,
        key: &Path,
        ca: &Path,
        verify_clients: bool,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let mut args = vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path(cert),
            "--tls-key-file".to_owned(),
            path(key),
            "--tls-ca-cert-file".to_owned(),
            path(ca),
            "--tls-auth-clients".to_owned(),
            (if verify_clients { "yes" } else { "no" }).to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let own = Self::spawn(port, &args);
        own.wait_listening();
        own
    }

    /// A replica of `primary`, once its link to the primary is up.
    pub fn start_replica_of(primary: &OwnRedis) -> Self {
        let port = free_port();
        let own = Self::spawn(
            port,
            &[
                "--port",
                &port.to_string(),
                "--replicaof",
                "127.0.0.1",
                &primary.port.to_string(),
            ],
        );
        own.wait_ready();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut admin = own.admin();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut admin)
                .unwrap();
            if info.contains("master_link_status:up") {
                return own;
            }
            assert!(
                Instant::now() < deadline,
                "replica on {port} did not link to its primary"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A node of a Redis Cluster that knows no other node and serves no
    /// slot yet: cluster mode, its bus on a free port of its own (the
    /// default, port + 10000, may be taken or past 65535; `CLUSTER MEET`
    /// must then name it, see [`Self::bus_port`]).
    pub fn start_cluster_node() -> Self {
        let port = free_port();
        let bus = free_port();
        let mut own = Self::spawn(
            port,
            &[
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-announce-ip",
                "127.0.0.1",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ],
        );
        own.bus_port = Some(bus);
        own.wait_ready();
        own
    }

    /// The cluster bus port of a node from [`Self::start_cluster_node`].
    pub fn bus_port(&self) -> u16 {
        self.bus_port.expect("not a cluster node")
    }

    fn spawn(port: u16, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("spendgate-redis-test-{port}"));
        // A killed earlier run on the same port may have left its files
        // (a cluster node would load its old nodes.conf).
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server on port {port}: {e}"));
        Self {
            port,
            child: Some(child),
            dir,
            bus_port: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url().as_str()).unwrap();
        loop {
            if let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server at {} did not come up",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// For a TLS-only server, which a plain PING cannot reach: it accepts
    /// connections once it is up.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) on {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (`SIGSTOP`) without closing its connections, as
    /// a hung or overloaded server looks; [`Self::resume`] continues it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A blocking connection for admin commands.
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
