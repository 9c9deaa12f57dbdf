//! The adapter: one `GET` per look-up, its status and body mapped onto the
//! port.

use std::error::Error as _;
use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use spendgate_domain::CallId;
use spendgate_ports::{ProviderError, ProviderUsage, UsageSource, redact_url};

use crate::config::{AuthDebug, HttpConfigError, HttpUsageSourceBuilder};
use crate::wire;

/// The largest usage body read, in bytes; a longer answer is
/// [`ProviderError::InvalidResponse`].
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A [`UsageSource`] asking the provider's usage endpoint,
/// `GET {base}/v1/usage/{call_id}`.
///
/// Cheap to clone (the connection pool is shared). `Debug` shows the base
/// URL, the auth header's name and the timeout, never the header's value.
#[derive(Clone)]
pub struct HttpUsageSource {
    client: reqwest::Client,
    base: Url,
    auth: Option<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl HttpUsageSource {
    /// An adapter for `base_url` with no auth header and the
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT).
    ///
    /// # Errors
    /// [`HttpConfigError`] as for [`HttpUsageSourceBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<Self, HttpConfigError> {
        Self::builder(base_url).build()
    }

    /// A builder for `base_url` (`http` or `https`, optionally with a path
    /// prefix such as `https://gateway.example/openai`, no query), to set
    /// the auth header and the timeout.
    pub fn builder(base_url: impl Into<String>) -> HttpUsageSourceBuilder {
        HttpUsageSourceBuilder::new(base_url.into())
    }

    pub(crate) fn from_parts(
        client: reqwest::Client,
        base: Url,
        auth: Option<(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            base,
            auth,
            timeout,
        }
    }

    /// The validated base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The timeout of one look-up.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `{base}/v1/usage/{call_id}`. A call id is `sgc1_` and hex digits,
    /// so it is one path segment as it is: nothing to encode, no `.` or
    /// `..` segment a parser could resolve into another path.
    fn usage_url(&self, call: &CallId) -> Url {
        let mut url = self.base.clone();
        let path = format!(
            "{}/v1/usage/{}",
            url.path().trim_end_matches('/'),
            call.as_str()
        );
        url.set_path(&path);
        url
    }
}

impl fmt::Debug for HttpUsageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpUsageSource")
            .field("base_url", &redact_url(self.base.as_str()))
            .field(
                "auth_header",
                &self.auth.as_ref().map(|(name, _)| AuthDebug(name.as_str())),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl UsageSource for HttpUsageSource {
    async fn usage(&self, call: &CallId) -> Result<Option<ProviderUsage>, ProviderError> {
        let url = self.usage_url(call);
        let mut request = self
            .client
            .get(url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let mut response = request.send().await.map_err(|e| unavailable(&e))?;
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                return Err(ProviderError::Unavailable(format!("provider answered {s}")));
            }
            s => {
                return Err(ProviderError::InvalidResponse(format!(
                    "unexpected status {s}"
                )));
            }
        }
        if response
            .content_length()
            .is_some_and(|len| usize::try_from(len).map_or(true, |len| len > MAX_BODY_BYTES))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(&e))? {
            if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        wire::parse_usage(&body)
            .map(Some)
            .map_err(ProviderError::InvalidResponse)
    }
}

fn too_large() -> ProviderError {
    ProviderError::InvalidResponse(format!("usage body exceeds {MAX_BODY_BYTES} bytes"))
}

/// A transport failure as [`ProviderError::Unavailable`], naming timeouts.
fn unavailable(error: &reqwest::Error) -> ProviderError {
    let what = if error.is_timeout() {
        "usage request timed out"
    } else if error.is_connect() {
        "usage request could not connect"
    } else {
        "usage request failed"
    };
    ProviderError::Unavailable(redact_url(&format!("{what}: {}", describe(error))))
}

/// A reqwest error and its causes as one line of text.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
