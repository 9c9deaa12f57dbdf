//! The `[redis]` section: TLS files for `rediss://` URLs and the optional
//! wait for replicas after each budget write ([`RedisOptions`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::SettingsError;
use super::key::Key;
use super::source::Layers;
use super::value::{MAX_NUMBER, invalid, positive};
use crate::builder::RedisOptions;

/// The most replicas `wait_replicas` accepts: far more than any
/// deployment runs, and a typo beyond it would make every write wait out
/// its timeout.
const MAX_REPLICAS: u32 = 64;

/// Reads the section; the Redis adapter checks the values again when it
/// connects (timeout range, files readable and well-formed, a rediss://
/// URL for TLS files).
pub(super) fn parse(layers: &Layers) -> Result<RedisOptions, SettingsError> {
    let tls_ca_file = path(layers, Key::RedisTlsCaFile)?;
    let cert = path(layers, Key::RedisTlsCertFile)?;
    let key = path(layers, Key::RedisTlsKeyFile)?;
    let tls_client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(needs_other(
                layers,
                Key::RedisTlsCertFile,
                Key::RedisTlsKeyFile,
            ));
        }
        (None, Some(_)) => {
            return Err(needs_other(
                layers,
                Key::RedisTlsKeyFile,
                Key::RedisTlsCertFile,
            ));
        }
    };
    let wait_replicas = match layers.get(Key::RedisWaitReplicas) {
        None => 0,
        Some((raw, origin)) => {
            let text = raw.text();
            match text.trim().parse::<u32>() {
                Ok(n) if n <= MAX_REPLICAS => n,
                Ok(n) => {
                    return Err(invalid(
                        Key::RedisWaitReplicas,
                        origin,
                        format!("{n} is more than the supported {MAX_REPLICAS}"),
                    ));
                }
                Err(_) => {
                    return Err(invalid(
                        Key::RedisWaitReplicas,
                        origin,
                        format!("{text:?} is not a whole number (0 turns waiting off)"),
                    ));
                }
            }
        }
    };
    let default_ms =
        u64::try_from(RedisOptions::DEFAULT_WAIT_TIMEOUT.as_millis()).unwrap_or(MAX_NUMBER);
    let wait_timeout =
        Duration::from_millis(positive(layers, Key::RedisWaitTimeoutMs, default_ms)?);
    let wait_connections = match layers.get(Key::RedisWaitConnections) {
        None => None,
        Some(_) => {
            let n = positive(layers, Key::RedisWaitConnections, 1)?;
            Some(usize::try_from(n).unwrap_or(usize::MAX))
        }
    };
    Ok(RedisOptions {
        tls_ca_file,
        tls_client,
        wait_replicas,
        wait_timeout,
        wait_connections,
    })
}

/// A file path setting: any non-blank text (the adapter reads the file).
fn path(layers: &Layers, key: Key) -> Result<Option<PathBuf>, SettingsError> {
    let Some((raw, origin)) = layers.get(key) else {
        return Ok(None);
    };
    let text = raw.text();
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(key, origin, "is empty"));
    }
    Ok(Some(PathBuf::from(text)))
}

/// The client certificate and key come together.
fn needs_other(layers: &Layers, set: Key, missing: Key) -> SettingsError {
    let origin = layers
        .get(set)
        .map(|(_, origin)| origin)
        .unwrap_or(super::Origin::Default);
    invalid(
        set,
        origin,
        format!(
            "a client certificate needs its key and the other way round: set {} ({}, {}) too",
            missing.name(),
            missing.env(),
            missing.flag()
        ),
    )
}

/// The `[redis]` section as `spendgate config` prints it (file paths are
/// not secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the keys of the settings table
pub struct RedactedRedis {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_connections: Option<usize>,
}

impl RedactedRedis {
    pub(super) fn new(options: &RedisOptions) -> Self {
        let shown = |path: &PathBuf| path.display().to_string();
        Self {
            tls_ca_file: options.tls_ca_file.as_ref().map(shown),
            tls_cert_file: options.tls_client.as_ref().map(|(cert, _)| shown(cert)),
            tls_key_file: options.tls_client.as_ref().map(|(_, key)| shown(key)),
            wait_replicas: options.wait_replicas,
            wait_timeout_ms: u64::try_from(options.wait_timeout.as_millis()).unwrap_or(u64::MAX),
            wait_connections: options.wait_connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use super::super::{FlagValues, Settings};

    fn load_err(flags: &FlagValues) -> String {
        Settings::load(flags, &|_| None).unwrap_err().to_string()
    }

    #[test]
    fn by_default_rediss_trusts_the_system_store_and_writes_do_not_wait() {
        let s = Settings::load(&FlagValues::default(), &|_| None).unwrap();
        assert_eq!(s.redis.tls_ca_file, None);
        assert_eq!(s.redis.tls_client, None);
        assert_eq!(s.redis.wait_replicas, 0);
        assert_eq!(s.redis.wait_timeout, Duration::from_millis(100));
        assert_eq!(s.redis.wait_connections, None);
    }

    #[test]
    fn the_redis_section_comes_from_the_file_the_environment_and_flags() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(
            b"[redis]\ntls_ca_file = \"/etc/ca.pem\"\ntls_cert_file = \"/etc/c.pem\"\n\
              tls_key_file = \"/etc/k.pem\"\nwait_replicas = 1\nwait_timeout_ms = 50\n",
        )
        .unwrap();
        let flags = FlagValues {
            config: Some(file.path().to_path_buf()),
            redis_wait_connections: Some("4".into()),
            ..FlagValues::default()
        };
        let env = |name: &str| (name == "SPENDGATE_REDIS_WAIT_REPLICAS").then(|| "2".to_owned());
        let s = Settings::load(&flags, &env).unwrap();
        assert_eq!(
            s.redis.tls_ca_file.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        assert_eq!(
            s.redis.tls_client,
            Some(("/etc/c.pem".into(), "/etc/k.pem".into()))
        );
        assert_eq!(s.redis.wait_replicas, 2, "environment beats file");
        assert_eq!(s.redis.wait_timeout, Duration::from_millis(50));
        assert_eq!(s.redis.wait_connections, Some(4));
        let shown = s.redacted().redis;
        assert_eq!(shown.tls_ca_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(shown.wait_timeout_ms, 50);
    }

    #[test]
    fn bad_wait_values_are_refused_naming_the_flag() {
        for (flags, flag) in [
            (
                FlagValues {
                    redis_wait_replicas: Some("two".into()),
                    ..FlagValues::default()
                },
                "--redis-wait-replicas",
            ),
            (
                FlagValues {
                    redis_wait_replicas: Some("-1".into()),
                    ..FlagValues::default()
                },
                "--redis-wait-replicas",
            ),
            (
                FlagValues {
                    redis_wait_replicas: Some("65".into()),
                    ..FlagValues::default()
                },
                "--redis-wait-replicas",
            ),
            (
                FlagValues {
                    redis_wait_timeout_ms: Some("0".into()),
                    ..FlagValues::default()
                },
                "--redis-wait-timeout-ms",
            ),
            (
                FlagValues {
                    redis_wait_connections: Some("0".into()),
                    ..FlagValues::default()
                },
                "--redis-wait-connections",
            ),
            (
                FlagValues {
                    redis_tls_ca_file: Some("  ".into()),
                    ..FlagValues::default()
                },
                "--redis-tls-ca-file",
            ),
        ] {
            let error = load_err(&flags);
            assert!(error.contains(flag), "{flag}: {error}");
        }
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused_naming_both() {
        let flags = FlagValues {
            redis_tls_cert_file: Some("/etc/c.pem".into()),
            ..FlagValues::default()
        };
        let error = load_err(&flags);
        assert!(error.contains("--redis-tls-cert-file"), "{error}");
        assert!(error.contains("SPENDGATE_REDIS_TLS_KEY_FILE"), "{error}");
        let flags = FlagValues {
            redis_tls_key_file: Some("/etc/k.pem".into()),
            ..FlagValues::default()
        };
        let error = load_err(&flags);
        assert!(error.contains("--redis-tls-key-file"), "{error}");
        assert!(error.contains("redis.tls_cert_file"), "{error}");
    }
}
