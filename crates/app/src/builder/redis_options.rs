//! [`RedisOptions`]: how the Redis shapes connect beyond their URLs.

use std::path::PathBuf;
use std::time::Duration;

/// How the Redis and Redis Cluster shapes connect beyond their URLs: TLS
/// files for `rediss://`, and the optional wait for replicas after each
/// budget write. The default trusts the system's certificate store and
/// does not wait.
///
/// Waiting (`wait_replicas` > 0) sends each budget write over one of a few
/// dedicated connections, followed by `WAIT`; when fewer replicas
/// acknowledge within `wait_timeout` the call fails as `Unavailable`
/// (reserve denies; a settlement stays queued and is replayed). The full
/// design and its cost are documented on the Redis adapter's
/// `ReplicaWait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// PEM CA certificate(s) to trust for `rediss://` instead of the
    /// system's store (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate chain and private key (PEM files) for servers
    /// that verify clients (mutual TLS).
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Replicas every budget write waits for; 0 (the default) is off.
    pub wait_replicas: u32,
    /// How long one write waits for them.
    pub wait_timeout: Duration,
    /// Dedicated write connections while waiting; `None` is the adapter's
    /// default (16).
    pub wait_connections: Option<usize>,
}

impl RedisOptions {
    /// The wait for replicas when none is configured otherwise: 100 ms.
    pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(100);
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            tls_ca_file: None,
            tls_client: None,
            wait_replicas: 0,
            wait_timeout: Self::DEFAULT_WAIT_TIMEOUT,
            wait_connections: None,
        }
    }
}
