//! Without tokens, only this machine may call: every request must name a
//! loopback `Host` and, if it carries an `Origin`, a loopback one.
//!
//! A loopback bind alone does not keep other sites out. A page on
//! `evil.example` can rebind its name to 127.0.0.1, and the visitor's
//! browser then sends that page's requests (with `Host: evil.example` and
//! `Origin: http://evil.example`) to the unauthenticated server, which
//! would change budgets for it. Refusing foreign `Host` and `Origin`
//! values closes that. With tokens configured the check does not apply:
//! such a page cannot present a token it does not know, and a server
//! bound beyond loopback is reached under whatever names its clients use.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;

/// Refuses (403 `not-loopback`) a request whose `Host` (or, for an
/// absolute target, its authority) is not loopback, or whose `Origin` is
/// present and not loopback.
pub(super) async fn only_loopback(request: Request, next: Next) -> Response {
    match check(&request) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check(request: &Request) -> Result<(), ApiError> {
    let host = match request.headers().get(HOST) {
        Some(value) => Some(text(value)),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    };
    match host {
        Some(host) if is_loopback_authority(&host) => {}
        host => {
            return Err(ApiError::NotLoopback {
                header: "Host",
                value: host.unwrap_or_default(),
            });
        }
    }
    for origin in request.headers().get_all(ORIGIN) {
        let origin = text(origin);
        if !is_loopback_origin(&origin) {
            return Err(ApiError::NotLoopback {
                header: "Origin",
                value: origin,
            });
        }
    }
    Ok(())
}

fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// `localhost`, an address in 127.0.0.0/8 or `[::1]`, each with or without
/// a port.
fn is_loopback_authority(authority: &str) -> bool {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok && address.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if is_port(port) => host,
        Some(_) => return false,
        None => authority,
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `http` or `https` origin whose authority is loopback (`null` and
/// every other scheme are not).
fn is_loopback_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    web && is_loopback_authority(authority)
}

fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::{is_loopback_authority, is_loopback_origin};

    #[test]
    fn loopback_names_and_addresses_pass_with_or_without_a_port() {
        for host in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.255.0.9:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_authority(host), "{host}");
        }
    }

    #[test]
    fn every_other_host_fails() {
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            "128.0.0.1",
            "0.0.0.0:8080",
            "10.0.0.1",
            "127.1",
            "127.0.0.1:8080:80",
            "127.0.0.1:",
            "127.0.0.1:port",
            "[::2]:8080",
            "[::1",
            "[::1]8080",
            "[::ffff:127.0.0.1]",
            "::1",
        ] {
            assert!(!is_loopback_authority(host), "{host}");
        }
    }

    #[test]
    fn only_web_origins_on_loopback_pass() {
        for origin in [
            "http://localhost:8080",
            "https://127.0.0.1",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "file://localhost",
            "http://localhost/path",
            "localhost",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
