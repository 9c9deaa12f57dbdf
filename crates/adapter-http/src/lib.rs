//! spendgate's [`UsageSource`](spendgate_ports::UsageSource) over HTTP: the
//! model provider's usage endpoint, asked by the reconciliation job when a
//! stream dropped before its cost was known.
//!
//! This crate is an adapter: `app -> adapters -> ports -> domain`. It
//! implements the port with one `GET {base}/v1/usage/{call_id}` per
//! look-up and maps the answer onto the port's contract.
//!
//! # The provider contract
//!
//! The provider (or the gateway in front of it) learns each call's
//! [`CallId`] with the call: the reserve answers it (`call_id` in the HTTP
//! API and the CLI, `HoldGuard::call_id` in the library), and the service
//! that makes the call passes it on, for example as a request header or in
//! the request's metadata. The usage endpoint then answers for that id,
//! and only that id: the caller's idempotency key is chosen per tenant and
//! per user, so it is never enough to find a call. The `model` it reports
//! is the model alias the call was reserved for, as the gateway named it
//! with the call; reconciliation refuses (and counts) an answer naming
//! another model, and commits nothing from it.
//!
//! # Answers
//!
//! | provider answer                                   | port result                                   |
//! |---------------------------------------------------|-----------------------------------------------|
//! | `200` with valid usage JSON                       | `Ok(Some(ProviderUsage))`                     |
//! | `404`                                             | `Ok(None)`: the provider does not know the call |
//! | `5xx`, `408`, `429`, connection error, timeout    | [`ProviderError::Unavailable`]                |
//! | anything else (bad JSON or fields, other status)  | [`ProviderError::InvalidResponse`]            |
//!
//! The usage JSON is
//! `{"costUsd": "0.0123" | 0.0123, "model": "…", "promptTokens": n,
//! "completionTokens": n, "completedAt": "<RFC 3339>"}`; other fields are
//! ignored. A cost given as a string is exact ([`Micros::parse_usd`]: at
//! most six decimals), a cost given as a number is rounded to the nearest
//! micro-USD ([`Micros::from_usd_f64`]); negative, non-finite or
//! out-of-range costs are rejected, never clamped. Bodies above
//! [`MAX_BODY_BYTES`] are rejected unread.
//!
//! * [`HttpUsageSource`] is the adapter; build it with
//!   [`HttpUsageSource::new`] or [`HttpUsageSource::builder`].
//! * [`HttpUsageSourceBuilder`] sets the optional auth header and the
//!   timeout ([`DEFAULT_TIMEOUT`]).
//! * [`HttpConfigError`] says why a configuration was refused.
//!
//! No `reqwest` type appears in the public API or in an error: transport
//! failures become [`ProviderError::Unavailable`] with a text reason. The
//! auth header's value never appears in `Debug` output or in an error.
//! Redirects are not followed (a `3xx` is an invalid answer), so the auth
//! header is only ever sent to the configured base URL.
//!
//! [`CallId`]: spendgate_domain::CallId
//! [`ProviderError::Unavailable`]: spendgate_ports::ProviderError::Unavailable
//! [`ProviderError::InvalidResponse`]: spendgate_ports::ProviderError::InvalidResponse
//! [`Micros::parse_usd`]: spendgate_domain::Micros::parse_usd
//! [`Micros::from_usd_f64`]: spendgate_domain::Micros::from_usd_f64

mod config;
mod source;
mod wire;

pub use config::{DEFAULT_TIMEOUT, HttpConfigError, HttpUsageSourceBuilder};
pub use source::{HttpUsageSource, MAX_BODY_BYTES};
