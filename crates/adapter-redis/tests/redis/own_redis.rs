//! Throw-away `redis-server`s on their own ports, for tests that kill a
//! server or count its commands, and for the bench (which includes this
//! file), so nothing else disturbs what they measure.

use std::net::TcpListener;
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
}

impl OwnRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, &[])
    }

    /// A node of a Redis Cluster, not yet part of one (see `OwnCluster`):
    /// cluster mode, its bus on a free port of its own (the default,
    /// port + 10000, may be taken or past 65535).
    pub fn start_cluster_node() -> Self {
        let bus = free_port().to_string();
        Self::spawn(
            free_port(),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ],
        )
    }

    fn spawn(port: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("spendgate-redis-test-{port}"));
        // A killed earlier run on the same port may have left its files
        // (a cluster node would load its old nodes.conf).
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server on port {port}: {e}"));
        let own = Self {
            port,
            child: Some(child),
            dir,
        };
        own.wait_ready();
        own
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
