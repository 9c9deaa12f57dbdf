//! Reading one setting's value: each parser checks its text and names
//! the setting and where it came from when it refuses it, so start-up
//! stops with a message an operator can act on.

use std::net::SocketAddr;

use spendgate_domain::CommunityId;
use spendgate_ports::redact_url;

use super::key::Key;
use super::source::{Layers, Raw};
use super::{MIN_TOKEN_LEN, Origin, SettingsError, TokenSetting};

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

pub(super) fn parse_database_url(text: &str, origin: Origin) -> Result<String, SettingsError> {
    let text = text.trim();
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

pub(super) fn parse_tokens(
    items: &[String],
    origin: Origin,
) -> Result<Vec<TokenSetting>, SettingsError> {
    let mut tokens: Vec<TokenSetting> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let position = index + 1;
        let bad = |message: String| invalid(Key::HttpTokens, origin.clone(), message);
        let (secret, communities) = match item.trim().split_once('=') {
            Some((secret, list)) => (secret, Some(list)),
            None => (item.trim(), None),
        };
        if secret.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "token #{position}: the secret is shorter than {MIN_TOKEN_LEN} characters"
            )));
        }
        if !secret
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'=' | b'|'))
        {
            return Err(bad(format!(
                "token #{position}: the secret must be printable ASCII without spaces, ',', '=' or '|'"
            )));
        }
        let communities = match communities {
            None => None,
            Some(list) => {
                let mut ids = Vec::new();
                for name in list.split('|') {
                    let id = CommunityId::parse(name.trim())
                        .map_err(|e| bad(format!("token #{position}: community list: {e}")))?;
                    ids.push(id);
                }
                Some(ids)
            }
        };
        if tokens.iter().any(|t| t.secret == secret) {
            return Err(bad(format!(
                "token #{position}: the same secret is configured twice"
            )));
        }
        tokens.push(TokenSetting {
            secret: secret.to_owned(),
            communities,
        });
    }
    Ok(tokens)
}
