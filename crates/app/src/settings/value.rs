//! Reading one setting's value: each parser checks its text and names
//! the setting and where it came from when it refuses it, so start-up
//! stops with a message an operator can act on.

use std::net::SocketAddr;

use spendgate_ports::redact_url;

use super::key::Key;
use super::source::{Layers, Raw};
use super::{Origin, SettingsError};

pub(super) fn invalid(key: Key, origin: Origin, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.name(),
        origin,
        message: message.into(),
    }
}

pub(super) fn optional(
    layers: &Layers,
    key: Key,
    parse: fn(Key, &str, Origin) -> Result<String, SettingsError>,
) -> Result<Option<String>, SettingsError> {
    layers
        .get(key)
        .map(|(raw, origin)| parse(key, raw.text().trim(), origin))
        .transpose()
}

pub(super) fn positive(layers: &Layers, key: Key, default: u64) -> Result<u64, SettingsError> {
    let Some((raw, origin)) = layers.get(key) else {
        return Ok(default);
    };
    let text = raw.text();
    match text.trim().parse::<u64>() {
        Ok(0) => Err(invalid(key, origin, "must be greater than 0")),
        Ok(n) if n > MAX_NUMBER => Err(invalid(
            key,
            origin,
            format!("{n} is larger than the supported {MAX_NUMBER}"),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(invalid(
            key,
            origin,
            format!("{text:?} is not a positive whole number"),
        )),
    }
}

/// The largest number a size or interval setting takes (about 31 years in
/// seconds, 4 GiB in bytes): far past any sane value, far inside `u64`.
pub(super) const MAX_NUMBER: u64 = 1 << 32;

pub(super) fn parse_bool(key: Key, raw: &Raw, origin: Origin) -> Result<bool, SettingsError> {
    if let Raw::Bool(b) = raw {
        return Ok(*b);
    }
    let text = raw.text();
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            key,
            origin,
            format!("{text:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
        )),
    }
}

pub(super) fn parse_data_file(text: &str, origin: Origin) -> Result<String, SettingsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(Key::DataFile, origin, "is empty"));
    }
    if text.contains(['?', '#']) {
        return Err(invalid(
            Key::DataFile,
            origin,
            "a file path must not contain '?' or '#' (use database_url for URL options)",
        ));
    }
    Ok(text.to_owned())
}

pub(super) fn sqlite_url(data_file: &str) -> String {
    format!("sqlite://{data_file}?mode=rwc")
}

/// Refuses a URL holding whitespace: [`redact_url`] ends a URL there, so a
/// password with a space could not be hidden in print. The message does
/// not quote the URL.
fn no_whitespace(key: Key, text: &str, origin: &Origin) -> Result<(), SettingsError> {
    if text.contains(char::is_whitespace) {
        return Err(invalid(
            key,
            origin.clone(),
            "a URL must not contain whitespace; percent-encode it (a space is %20)",
        ));
    }
    Ok(())
}

pub(super) fn parse_database_url(text: &str, origin: Origin) -> Result<String, SettingsError> {
    let text = text.trim();
    no_whitespace(Key::DatabaseUrl, text, &origin)?;
    let known = ["postgres://", "postgresql://", "sqlite:"];
    if known.iter().any(|p| text.starts_with(p)) && text.len() > "sqlite:".len() {
        Ok(text.to_owned())
    } else {
        Err(invalid(
            Key::DatabaseUrl,
            origin,
            format!(
                "{:?} is not a postgres://, postgresql:// or sqlite: URL",
                redact_url(text)
            ),
        ))
    }
}

pub(super) fn parse_redis_url(
    key: Key,
    text: &str,
    origin: Origin,
) -> Result<String, SettingsError> {
    no_whitespace(key, text, &origin)?;
    let known = ["redis://", "rediss://", "redis+unix://", "unix://"];
    match known.iter().find(|p| text.starts_with(*p)) {
        Some(prefix) if text.len() > prefix.len() => Ok(text.to_owned()),
        _ => Err(invalid(
            key,
            origin,
            format!("{:?} is not a redis:// or rediss:// URL", redact_url(text)),
        )),
    }
}

pub(super) fn parse_cluster_urls(
    items: &[String],
    origin: Origin,
) -> Result<Vec<String>, SettingsError> {
    if items.is_empty() {
        return Err(invalid(Key::RedisClusterUrls, origin, "lists no node"));
    }
    items
        .iter()
        .map(|item| parse_redis_url(Key::RedisClusterUrls, item.trim(), origin.clone()))
        .collect()
}

pub(super) fn parse_http_url(
    key: Key,
    text: &str,
    origin: Origin,
) -> Result<String, SettingsError> {
    no_whitespace(key, text, &origin)?;
    let ok = ["http://", "https://"]
        .iter()
        .any(|p| text.len() > p.len() && text.starts_with(p));
    if !ok {
        return Err(invalid(
            key,
            origin,
            format!("{:?} is not an http:// or https:// URL", redact_url(text)),
        ));
    }
    if text.contains(['?', '#']) {
        return Err(invalid(
            key,
            origin,
            "must be a base URL without query or fragment",
        ));
    }
    Ok(text.to_owned())
}

pub(super) fn parse_bind(text: &str, origin: Origin) -> Result<SocketAddr, SettingsError> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            Key::HttpBind,
            origin,
            format!("{text:?} is not an IP address and port, such as 127.0.0.1:8080 or [::1]:8080"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{FlagValues, Settings, SettingsError};

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(&FlagValues::default(), &move |name| env.get(name).cloned())
    }

    #[test]
    fn printed_configuration_hides_secret_query_parameters_of_every_url() {
        let settings = load(&[
            (
                "SPENDGATE_DATABASE_URL",
                "postgres://app@db:5432/x?sslmode=require&password=pw-one&sslpassword=pw-two",
            ),
            (
                "SPENDGATE_REDIS_CLUSTER_URLS",
                "redis://n1:7001?password=pw-three,redis://:pw@four@n2:7002",
            ),
            (
                "SPENDGATE_PROVIDER_USAGE_URL",
                "https://u:pw-five@provider/v1",
            ),
        ])
        .unwrap();
        let redacted = settings.redacted();
        assert_eq!(
            redacted.database_url,
            "postgres://app@db:5432/x?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            redacted.redis_cluster_urls,
            ["redis://n1:7001?password=***", "redis://:***@n2:7002"]
        );
        let printed = format!("{} {settings:?}", toml::to_string(&redacted).unwrap());
        for secret in ["pw-one", "pw-two", "pw-three", "four", "pw-five"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn a_url_holding_whitespace_is_refused_without_quoting_it() {
        for (key, url) in [
            ("SPENDGATE_DATABASE_URL", "postgres://app:my secret@db/x"),
            ("SPENDGATE_REDIS_URL", "redis://:my secret@cache:6379"),
            ("SPENDGATE_REDIS_CLUSTER_URLS", "redis://:my secret@n1:7001"),
            (
                "SPENDGATE_PROVIDER_USAGE_URL",
                "https://u:my secret@provider/v1",
            ),
        ] {
            let error = load(&[(key, url)]).unwrap_err().to_string();
            assert!(error.contains("whitespace"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
