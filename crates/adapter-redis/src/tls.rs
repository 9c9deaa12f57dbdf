//! `rediss://`: TLS through rustls with the ring provider, behind the
//! crate's `tls` feature (what is trusted is documented on [`TlsFiles`]).

use std::path::PathBuf;

use redis::cluster::ClusterClientBuilder;
use spendgate_ports::redact_url;

use crate::connection::ConnectError;

/// TLS material for `rediss://` connections, which go through rustls with
/// the ring provider and need the crate's `tls` feature.
///
/// Empty (the default), a `rediss://` connection trusts the system's
/// certificate store (as `redis-cli --tls` does; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured): enough for a server whose certificate a
/// public CA signed. A deployment with a private CA names its CA file, and
/// a server that verifies clients (`tls-auth-clients yes`) gets the
/// client's certificate and key. Certificate checks cannot be turned off:
/// the `#insecure` URL fragment is refused. Files with a plain `redis://`
/// URL are refused too, rather than silently unused.
///
/// Without the `tls` feature a `rediss://` URL is refused at connect with
/// an `InvalidInput` error naming the feature, whatever features other
/// crates enable on the redis client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA certificate(s) to trust instead of the system's
    /// store: the server's certificate must chain to one of them.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key this client presents, for servers that
    /// verify clients (mutual TLS).
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// Whether no file is named.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client.is_none()
    }
}

/// Whether `url` asks for TLS (`rediss://`, or `valkeys://`, which the
/// client treats alike).
pub(crate) fn is_tls_url(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or_default();
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// Refuses TLS files for a plain URL (they would be silently ignored), and
/// a TLS URL this build cannot serve or whose certificate checks are off.
fn check_url(url: &str, files: &TlsFiles) -> Result<bool, ConnectError> {
    let tls = is_tls_url(url);
    if !tls {
        if !files.is_empty() {
            return Err(ConnectError::InvalidInput(format!(
                "TLS files are set, but {} is not a rediss:// URL",
                redact_url(url)
            )));
        }
        return Ok(false);
    }
    if !cfg!(feature = "tls") {
        return Err(ConnectError::TlsDisabled(redact_url(url)));
    }
    if url.contains('#') {
        return Err(ConnectError::InvalidInput(format!(
            "{}: certificate checks cannot be turned off (#insecure); trust a private CA \
             through the CA file instead",
            redact_url(url)
        )));
    }
    Ok(true)
}

/// The client of a standalone server at `url`.
///
/// # Errors
/// [`ConnectError::InvalidInput`] for a malformed URL, unreadable or
/// malformed files, or files with a plain URL;
/// [`ConnectError::TlsDisabled`] for `rediss://` without the feature.
pub(crate) fn client(url: &str, files: &TlsFiles) -> Result<redis::Client, ConnectError> {
    let malformed = |e: redis::RedisError| {
        ConnectError::InvalidInput(redact_url(&format!("redis url {url}: {e}")))
    };
    let tls = check_url(url, files)?;
    if tls {
        install_crypto_provider();
        if !files.is_empty() {
            return with_files(url, files, malformed);
        }
    }
    redis::Client::open(url).map_err(malformed)
}

#[cfg(feature = "tls")]
fn with_files(
    url: &str,
    files: &TlsFiles,
    malformed: impl Fn(redis::RedisError) -> ConnectError,
) -> Result<redis::Client, ConnectError> {
    redis::Client::build_with_tls(url, rustls_files::certificates(files)?).map_err(malformed)
}

#[cfg(not(feature = "tls"))]
fn with_files(
    url: &str,
    _: &TlsFiles,
    _: impl Fn(redis::RedisError) -> ConnectError,
) -> Result<redis::Client, ConnectError> {
    Err(ConnectError::TlsDisabled(redact_url(url)))
}

/// Applies the files to a cluster client's builder, after checking every
/// node URL as [`client`] does (the client itself refuses a mix of TLS and
/// plain nodes).
///
/// # Errors
/// As [`client`].
pub(crate) fn cluster(
    builder: ClusterClientBuilder,
    urls: &[&str],
    files: &TlsFiles,
) -> Result<ClusterClientBuilder, ConnectError> {
    let mut tls = false;
    for url in urls {
        tls |= check_url(url, files)?;
    }
    if !tls {
        return Ok(builder);
    }
    install_crypto_provider();
    if files.is_empty() {
        return Ok(builder);
    }
    cluster_files(builder, files)
}

#[cfg(feature = "tls")]
fn cluster_files(
    builder: ClusterClientBuilder,
    files: &TlsFiles,
) -> Result<ClusterClientBuilder, ConnectError> {
    Ok(builder.certs(rustls_files::certificates(files)?))
}

#[cfg(not(feature = "tls"))]
fn cluster_files(
    _: ClusterClientBuilder,
    _: &TlsFiles,
) -> Result<ClusterClientBuilder, ConnectError> {
    Err(ConnectError::TlsDisabled("the cluster's nodes".into()))
}

/// Makes ring rustls' process-wide provider when none is installed, as
/// the client builds its TLS configuration from the process default: an
/// embedding program that installed its own keeps it, and a build where
/// another crate also enables a second provider does not panic.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer leaves a provider installed,
        // which is all that is needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(not(feature = "tls"))]
fn install_crypto_provider() {}

#[cfg(feature = "tls")]
mod rustls_files {
    use redis::{ClientTlsConfig, TlsCertificates};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use std::path::Path;

    use super::TlsFiles;
    use crate::connection::ConnectError;

    /// Reads one of the files, naming it and its role in the error.
    fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConnectError> {
        std::fs::read(path).map_err(|e| {
            ConnectError::InvalidInput(format!(
                "cannot read the redis TLS {what} {}: {e}",
                path.display()
            ))
        })
    }

    /// The files' contents, with the CA file checked to hold at least one
    /// certificate (an empty trust list would fail every handshake with a
    /// less helpful message).
    pub(super) fn certificates(files: &TlsFiles) -> Result<TlsCertificates, ConnectError> {
        let root_cert = match &files.ca_file {
            Some(path) => {
                let pem = read(path, "CA file")?;
                let mut count = 0;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    cert.map_err(|e| {
                        ConnectError::InvalidInput(format!(
                            "redis TLS CA file {}: {e}",
                            path.display()
                        ))
                    })?;
                    count += 1;
                }
                if count == 0 {
                    return Err(ConnectError::InvalidInput(format!(
                        "redis TLS CA file {} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match &files.client {
            Some(identity) => Some(ClientTlsConfig {
                client_cert: read(&identity.cert_file, "client certificate file")?,
                client_key: read(&identity.key_file, "client key file")?,
            }),
            None => None,
        };
        Ok(TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_only(path: &str) -> TlsFiles {
        TlsFiles {
            ca_file: Some(path.into()),
            client: None,
        }
    }

    #[test]
    fn only_rediss_and_valkeys_urls_ask_for_tls() {
        assert!(is_tls_url("rediss://cache:6380"));
        assert!(is_tls_url("REDISS://cache:6380"));
        assert!(is_tls_url("valkeys://cache"));
        assert!(!is_tls_url("redis://cache:6379"));
        assert!(!is_tls_url("unix:///tmp/redis.sock"));
    }

    #[test]
    fn tls_files_with_a_plain_url_are_refused() {
        let Err(ConnectError::InvalidInput(message)) =
            client("redis://cache:6379", &ca_only("ca.pem"))
        else {
            panic!("accepted TLS files for a plain URL");
        };
        assert!(message.contains("rediss://"), "{message}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_a_rediss_url_is_refused_naming_the_feature() {
        let Err(error) = client("rediss://user:secret@cache:6380", &TlsFiles::default()) else {
            panic!("rediss accepted without the tls feature");
        };
        let message = spendgate_ports::StoreError::from(error).to_string();
        assert!(message.contains("`tls` feature"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn certificate_checks_cannot_be_turned_off() {
        let result = client("rediss://cache:6380/#insecure", &TlsFiles::default());
        assert!(
            matches!(&result, Err(ConnectError::InvalidInput(m)) if m.contains("#insecure")),
            "{result:?}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn an_unreadable_ca_file_is_refused_naming_it() {
        let result = client("rediss://cache:6380", &ca_only("/nonexistent/ca.pem"));
        assert!(
            matches!(&result, Err(ConnectError::InvalidInput(m)) if m.contains("/nonexistent/ca.pem")),
            "{result:?}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let file =
            std::env::temp_dir().join(format!("spendgate-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&file, "not a certificate\n").unwrap();
        let result = client("rediss://cache:6380", &ca_only(file.to_str().unwrap()));
        let _ = std::fs::remove_file(&file);
        assert!(
            matches!(&result, Err(ConnectError::InvalidInput(m)) if m.contains("no PEM certificate")),
            "{result:?}"
        );
    }
}
