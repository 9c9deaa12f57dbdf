//! Configuration of [`HttpUsageSource`]: base URL, auth header, timeout.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use spendgate_ports::redact_url;

use crate::source::HttpUsageSource;

/// How long one look-up may take, connection and body included, unless
/// [`HttpUsageSourceBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an [`HttpUsageSource`] could not be built.
///
/// No variant carries the auth header's value or the base URL's text (which
/// could hold credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// The base URL does not parse as an absolute URL.
    #[error("base URL is not a valid absolute URL: {reason}")]
    InvalidBaseUrl {
        /// What the URL parser objected to.
        reason: String,
    },
    /// The base URL's scheme is neither `http` nor `https`.
    #[error("base URL scheme {0:?} is not supported; use http or https")]
    UnsupportedScheme(String),
    /// The base URL has a query (`?…`); the usage path is appended to it, so
    /// it must end in a path.
    #[error("base URL must not have a query")]
    BaseUrlHasQuery,
    /// The base URL has a fragment (`#…`).
    #[error("base URL must not have a fragment")]
    BaseUrlHasFragment,
    /// The base URL carries a user name or password; credentials belong in
    /// the auth header, which is kept out of logs.
    #[error("base URL must not carry credentials; use the auth header")]
    BaseUrlHasCredentials,
    /// The auth header's name is not a valid HTTP header name.
    #[error("auth header name {0:?} is not a valid HTTP header name")]
    InvalidAuthHeaderName(String),
    /// The auth header's value is not a valid HTTP header value (for
    /// example it holds a line break). The value itself is not shown.
    #[error("the value of auth header {name:?} is not a valid HTTP header value")]
    InvalidAuthHeaderValue {
        /// The header's name.
        name: String,
    },
    /// A zero timeout would fail every look-up.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
    /// The HTTP client could not be set up (for example TLS roots).
    #[error("HTTP client could not be built: {0}")]
    Client(String),
}

/// Builds an [`HttpUsageSource`]; see [`HttpUsageSource::builder`].
///
/// Nothing is validated until [`HttpUsageSourceBuilder::build`]. `Debug`
/// shows the auth header's name, never its value.
#[derive(Clone)]
#[must_use]
pub struct HttpUsageSourceBuilder {
    base_url: String,
    auth: Option<(String, String)>,
    timeout: Duration,
}

impl HttpUsageSourceBuilder {
    pub(crate) fn new(base_url: String) -> Self {
        Self {
            base_url,
            auth: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sends `name: value` with every look-up (for example
    /// `authorization: Bearer …` or `x-api-key: …`). The value is marked
    /// sensitive and never shown in `Debug` output or errors. A second call
    /// replaces the first.
    pub fn auth_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.auth = Some((name.into(), value.into()));
        self
    }

    /// The longest one look-up may take, from connecting to the end of the
    /// body; past it the look-up is [`Unavailable`]. Defaults to
    /// [`DEFAULT_TIMEOUT`].
    ///
    /// [`Unavailable`]: spendgate_ports::ProviderError::Unavailable
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates the configuration and builds the adapter.
    ///
    /// # Errors
    /// [`HttpConfigError`] when the base URL is not an `http`/`https` URL
    /// without query, fragment or credentials, when the auth header is not
    /// a valid header, when the timeout is zero, or when the HTTP client
    /// cannot be set up.
    pub fn build(self) -> Result<HttpUsageSource, HttpConfigError> {
        let base = validate_base_url(&self.base_url)?;
        let auth = self
            .auth
            .map(|(name, value)| validate_auth(name, &value))
            .transpose()?;
        if self.timeout.is_zero() {
            return Err(HttpConfigError::ZeroTimeout);
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("spendgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpConfigError::Client(redact_url(&crate::source::describe(&e))))?;
        Ok(HttpUsageSource::from_parts(
            client,
            base,
            auth,
            self.timeout,
        ))
    }
}

impl fmt::Debug for HttpUsageSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpUsageSourceBuilder")
            .field("base_url", &redact_url(&self.base_url))
            .field(
                "auth_header",
                &self.auth.as_ref().map(|(name, _)| AuthDebug(name)),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Shows an auth header as `name: <redacted>`.
pub(crate) struct AuthDebug<'a>(pub(crate) &'a str);

impl fmt::Debug for AuthDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.0)
    }
}

fn validate_base_url(text: &str) -> Result<Url, HttpConfigError> {
    let url = Url::parse(text).map_err(|e| HttpConfigError::InvalidBaseUrl {
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpConfigError::UnsupportedScheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpConfigError::BaseUrlHasCredentials);
    }
    if url.query().is_some() {
        return Err(HttpConfigError::BaseUrlHasQuery);
    }
    if url.fragment().is_some() {
        return Err(HttpConfigError::BaseUrlHasFragment);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(HttpConfigError::InvalidBaseUrl {
            reason: "no host".to_owned(),
        });
    }
    Ok(url)
}

fn validate_auth(name: String, value: &str) -> Result<(HeaderName, HeaderValue), HttpConfigError> {
    let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
        return Err(HttpConfigError::InvalidAuthHeaderName(name));
    };
    let Ok(mut header_value) = HeaderValue::from_str(value) else {
        return Err(HttpConfigError::InvalidAuthHeaderValue { name });
    };
    header_value.set_sensitive(true);
    Ok((header_name, header_value))
}
