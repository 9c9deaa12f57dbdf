//! `rediss://` against throw-away TLS-only `redis-server`s, with a CA and
//! certificates made for the test by the `openssl` command: a private CA
//! trusted through the CA file, mutual TLS, and the typed refusals.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use spendgate_adapter_redis::{ClientIdentity, ConnectOptions, RedisBudgetStore, TlsFiles};
use spendgate_domain::BudgetPolicy;
use spendgate_ports::StoreError;

use crate::lifecycle::lifecycle;
use crate::own_redis::OwnRedis;

/// A CA, a server certificate for 127.0.0.1 and localhost, a client
/// certificate, all signed by the CA, and a second CA that signed nothing
/// here; removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(label: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("spendgate-tls-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Self { dir };
        certs.ca("ca");
        certs.ca("other-ca");
        certs.leaf("server", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        certs.leaf("client", "extendedKeyUsage=clientAuth");
        certs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("the TLS tests need the openssl command: {e}"));
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN=spendgate test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn leaf(&self, name: &str, extension: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), format!("{extension}\n")).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn server(&self, verify_clients: bool) -> OwnRedis {
        OwnRedis::start_tls(
            &self.path("server.pem"),
            &self.path("server.key"),
            &self.path("ca.pem"),
            verify_clients,
        )
    }

    fn trusting(&self, ca: &str) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.path(&format!("{ca}.pem"))),
            client: None,
        }
    }

    fn with_client(&self) -> TlsFiles {
        TlsFiles {
            client: Some(ClientIdentity {
                cert_file: self.path("client.pem"),
                key_file: self.path("client.key"),
            }),
            ..self.trusting("ca")
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_url(server: &OwnRedis) -> String {
    format!("rediss://127.0.0.1:{}", server.port)
}

async fn connect(
    url: &str,
    tls: TlsFiles,
) -> Result<RedisBudgetStore<redis::aio::ConnectionManager>, StoreError> {
    let options = ConnectOptions {
        tls,
        replica_wait: None,
    };
    RedisBudgetStore::connect_with(url, BudgetPolicy::default(), &options).await
}

#[tokio::test]
async fn a_lifecycle_runs_over_tls_trusting_a_private_ca() {
    let certs = Certs::new("private-ca");
    let server = certs.server(false);

    let store = connect(&tls_url(&server), certs.trusting("ca"))
        .await
        .unwrap();

    lifecycle(&store, "tls").await.unwrap();
}

/// Runs `redis-cli` over TLS against `node` and returns its output.
fn cli(certs: &Certs, node: &OwnRedis, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(certs.path("ca.pem"))
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the cluster TLS test needs redis-cli: {e}"));
    assert!(output.status.success(), "redis-cli {args:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_lifecycle_runs_on_a_cluster_over_tls() {
    let certs = Certs::new("cluster");
    // One master holding every slot: enough to show the cluster client
    // speaks TLS to the node it discovers through CLUSTER SLOTS.
    let node = OwnRedis::start_tls_with(
        &certs.path("server.pem"),
        &certs.path("server.key"),
        &certs.path("ca.pem"),
        false,
        &[
            "--cluster-enabled",
            "yes",
            "--tls-cluster",
            "yes",
            "--cluster-announce-ip",
            "127.0.0.1",
        ],
    );
    cli(&certs, &node, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cli(&certs, &node, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
        assert!(Instant::now() < deadline, "the TLS cluster did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let options = ConnectOptions {
        tls: certs.trusting("ca"),
        replica_wait: None,
    };

    let store = RedisBudgetStore::connect_cluster_with(
        &[tls_url(&node)],
        BudgetPolicy::default(),
        &options,
    )
    .await
    .unwrap();

    lifecycle(&store, "tls-cluster").await.unwrap();
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_unavailable() {
    let certs = Certs::new("wrong-ca");
    let server = certs.server(false);

    let result = connect(&tls_url(&server), certs.trusting("other-ca")).await;

    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_private_ca_is_not_trusted_without_its_file() {
    let certs = Certs::new("system-store");
    let server = certs.server(false);

    let result = connect(&tls_url(&server), TlsFiles::default()).await;

    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn plain_redis_to_a_tls_port_is_unavailable() {
    let certs = Certs::new("plain");
    let server = certs.server(false);

    let result = connect(&server.url(), TlsFiles::default()).await;

    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_server_that_verifies_clients_accepts_the_client_certificate() {
    let certs = Certs::new("mutual");
    let server = certs.server(true);

    let store = connect(&tls_url(&server), certs.with_client())
        .await
        .unwrap();

    lifecycle(&store, "mtls").await.unwrap();
}

#[tokio::test]
async fn a_server_that_verifies_clients_refuses_one_without_a_certificate() {
    let certs = Certs::new("mutual-none");
    let server = certs.server(true);

    let result = connect(&tls_url(&server), certs.trusting("ca")).await;

    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_key_file_that_is_not_a_key_is_invalid_input() {
    let certs = Certs::new("bad-key");
    let server = certs.server(true);
    let mut files = certs.with_client();
    if let Some(client) = files.client.as_mut() {
        client.key_file = certs.path("ca.pem");
    }

    let result = connect(&tls_url(&server), files).await;

    assert!(
        matches!(result, Err(StoreError::InvalidInput(_))),
        "{result:?}"
    );
}
