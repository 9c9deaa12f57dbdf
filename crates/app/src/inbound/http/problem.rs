//! Errors of the HTTP API and their RFC 9457 problem details.
//!
//! Every failure a handler can meet is one [`ApiError`] variant, and every
//! variant has one stable problem `type` URI, so clients branch on the type
//! rather than on the human text. Service errors are mapped here, variant
//! by variant, with no catch-all: a new service error fails to compile
//! until someone decides its status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use spendgate_domain::{LimitScope, Micros};
use spendgate_ports::{RepoError, StoreError};
use utoipa::ToSchema;

use super::Role;
use super::wire::{micros_i64, usd};
use crate::services::budget::{
    BudgetChangeError, ExtendError, FinalizeError, HandoverError, RebuildError, ReserveError,
    StatusError,
};
use crate::services::tiers::TierWriteError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where problem type URIs live; the suffix names the problem.
const TYPE_BASE: &str = "https://spendgate.dev/problems/";

/// Seconds a client should wait before retrying after a 503.
pub(super) const RETRY_AFTER_SECS: u32 = 1;

/// A boxed cause, for variants whose source may be of several types.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An RFC 9457 problem details body, as spendgate sends it. The extension
/// members are present only for the problems that define them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A stable URI naming the problem (`https://spendgate.dev/problems/…`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request field or header at fault (422, 400).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Headroom under the limit that refused a reserve (402), USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_usd: Option<String>,
    /// The same in micro-USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_micros: Option<i64>,
    /// The limit that refused a reserve (402), USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<String>,
    /// The same in micro-USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_micros: Option<i64>,
    /// What the refused call was estimated at (402), USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_usd: Option<String>,
    /// The same in micro-USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_micros: Option<i64>,
    /// Which limit refused a reserve (402): `community` or `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Why a request failed, one variant per problem type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization: Bearer` token, or one no configured token
    /// matches.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// The token is valid but limited to other communities.
    #[error("this token is not allowed for community {0}")]
    CommunityForbidden(String),
    /// Without tokens, a request named a host other than this machine, or
    /// came from another site's page (`Origin`): the defence against DNS
    /// rebinding.
    #[error(
        "without API tokens only loopback clients are served; {header} {value:?} is not loopback"
    )]
    NotLoopback {
        /// `Host` or `Origin`.
        header: &'static str,
        /// Its value.
        value: String,
    },
    /// The token's role may not do this: a tenant's token tried to change
    /// configuration (a budget, tier overrides). Use an operator's token.
    #[error("a {0} token may not change a community's configuration; an operator token is needed")]
    InsufficientRole(Role),
    /// The body is not JSON, or not the JSON of this route's shape.
    #[error("malformed JSON body: {0}")]
    MalformedJson(#[source] Cause),
    /// A header is missing or unreadable.
    #[error("header {header}: {reason}")]
    BadHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A value is well-formed JSON but not a valid value: a bad id,
    /// money with more than 6 decimals, a period, a tier.
    #[error("invalid {field}: {source}")]
    InvalidValue {
        /// The field at fault.
        field: String,
        /// Why it is invalid.
        #[source]
        source: Cause,
    },
    /// The `Idempotency-Key` header differs from the key in the path.
    #[error("Idempotency-Key header {header:?} differs from the path key {path:?}")]
    KeyMismatch {
        /// The header's key.
        header: String,
        /// The path's key.
        path: String,
    },
    /// A settlement's cost would take a counter out of the micro-USD
    /// range; nothing was committed, and the same request cannot succeed.
    #[error("cost out of range: {0}")]
    CostOutOfRange(#[source] Cause),
    /// The estimate does not fit the budget: do not make the call.
    #[error("budget exceeded: {remaining} left under the {scope:?} limit of {limit}")]
    BudgetExceeded {
        /// Headroom under the refusing limit.
        remaining: Micros,
        /// That limit.
        limit: Micros,
        /// Community or user cap.
        scope: LimitScope,
        /// The refused estimate.
        estimate: Micros,
    },
    /// The community has agent calls turned off, or its tier may not use
    /// the model.
    #[error(transparent)]
    Refused(ReserveError),
    /// No hold, marker or tombstone for (user, key).
    #[error("no reservation for user {user} and key {key}")]
    UnknownHold {
        /// The user.
        user: String,
        /// The key.
        key: String,
    },
    /// No route for this path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The route exists, but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request: {0}")]
    KeyReused(String),
    /// The call was already settled (finalized, cancelled or reaped): it
    /// must not run again, and cannot be handed over.
    #[error("the call was already settled")]
    AlreadySettled,
    /// The hold expired or was settled; an extend changed nothing.
    #[error("the hold is no longer live")]
    HoldNotLive,
    /// A hand-over on a server with no provider usage source: nothing would
    /// ask what the call cost. Finalize it with its cost instead.
    #[error("no provider usage source is configured: finalize the call with its cost")]
    NoUsageSource,
    /// A backend could not answer: the request was denied or not applied;
    /// retrying it (with the same idempotency key) is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The request did not finish within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The server has as many connections open as it accepts (the
    /// number); this one is answered and closed. Retry after a moment.
    #[error("the server has its maximum of {0} connections open; retry shortly")]
    TooManyConnections(u32),
    /// A backend refused the request for a reason that is not the
    /// caller's: corrupt data, a counter out of range.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

impl ApiError {
    /// An [`ApiError::InvalidValue`] for `field`.
    pub fn invalid(field: impl Into<String>, source: impl Into<Cause>) -> Self {
        ApiError::InvalidValue {
            field: field.into(),
            source: source.into(),
        }
    }

    /// The status, type suffix and title of the problem.
    fn kind(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::CommunityForbidden(_) => (
                S::FORBIDDEN,
                "community-forbidden",
                "Token not allowed for this community",
            ),
            ApiError::NotLoopback { .. } => (
                S::FORBIDDEN,
                "not-loopback",
                "Only loopback clients are served without tokens",
            ),
            ApiError::InsufficientRole(_) => (
                S::FORBIDDEN,
                "insufficient-role",
                "Token's role may not change configuration",
            ),
            ApiError::MalformedJson(_) => (S::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            ApiError::BadHeader { .. } => (S::BAD_REQUEST, "bad-header", "Missing or bad header"),
            ApiError::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::InvalidValue { .. } => {
                (S::UNPROCESSABLE_ENTITY, "invalid-value", "Invalid value")
            }
            ApiError::KeyMismatch { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-mismatch",
                "Idempotency-Key differs from the path key",
            ),
            ApiError::CostOutOfRange(_) => (
                S::UNPROCESSABLE_ENTITY,
                "cost-out-of-range",
                "Cost out of range",
            ),
            ApiError::BudgetExceeded { .. } => {
                (S::PAYMENT_REQUIRED, "budget-exceeded", "Budget exceeded")
            }
            ApiError::Refused(error) => refusal_kind(error),
            ApiError::UnknownHold { .. } => (S::NOT_FOUND, "unknown-hold", "Unknown hold"),
            ApiError::NoRoute(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::KeyReused(_) => (
                S::CONFLICT,
                "idempotency-conflict",
                "Idempotency key reused with a different request",
            ),
            ApiError::AlreadySettled => (S::CONFLICT, "already-settled", "Call already settled"),
            ApiError::HoldNotLive => (S::CONFLICT, "hold-not-live", "Hold no longer live"),
            ApiError::NoUsageSource => (
                S::CONFLICT,
                "no-usage-source",
                "No provider usage source to reconcile with",
            ),
            ApiError::Unavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
            ),
            ApiError::Timeout => (
                S::SERVICE_UNAVAILABLE,
                "request-timeout",
                "Request timed out",
            ),
            ApiError::TooManyConnections(_) => (
                S::SERVICE_UNAVAILABLE,
                "too-many-connections",
                "Too many connections",
            ),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The problem details body of this error.
    pub fn problem(&self) -> Problem {
        let (status, suffix, title) = self.kind();
        let mut problem = Problem {
            problem_type: format!("{TYPE_BASE}{suffix}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            field: None,
            remaining_usd: None,
            remaining_micros: None,
            limit_usd: None,
            limit_micros: None,
            estimate_usd: None,
            estimate_micros: None,
            scope: None,
        };
        match self {
            ApiError::InvalidValue { field, .. } => problem.field = Some(field.clone()),
            ApiError::BadHeader { header, .. } | ApiError::NotLoopback { header, .. } => {
                problem.field = Some((*header).to_owned());
            }
            ApiError::BudgetExceeded {
                remaining,
                limit,
                scope,
                estimate,
            } => {
                problem.remaining_usd = Some(usd(*remaining));
                problem.remaining_micros = Some(micros_i64(*remaining));
                problem.limit_usd = Some(usd(*limit));
                problem.limit_micros = Some(micros_i64(*limit));
                problem.estimate_usd = Some(usd(*estimate));
                problem.estimate_micros = Some(micros_i64(*estimate));
                problem.scope = Some(
                    match scope {
                        LimitScope::Community => "community",
                        LimitScope::User => "user",
                    }
                    .to_owned(),
                );
            }
            _ => {}
        }
        problem
    }
}

/// Status and type of a reserve refusal that is not a budget decision.
fn refusal_kind(error: &ReserveError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match error {
        ReserveError::AiDisabled(_) => (S::FORBIDDEN, "ai-disabled", "AI disabled"),
        ReserveError::ModelNotAllowed { .. } => (
            S::FORBIDDEN,
            "model-not-allowed",
            "Model not allowed for the tier",
        ),
        ReserveError::NotConfigured(_) => (
            S::CONFLICT,
            "community-not-configured",
            "Community has no budget",
        ),
        ReserveError::InvalidTier(_) | ReserveError::Pricing(_) | ReserveError::InvalidInput(_) => {
            (S::UNPROCESSABLE_ENTITY, "invalid-value", "Invalid value")
        }
        ReserveError::ConfigUnavailable(_) | ReserveError::StoreUnavailable(_) => (
            S::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        ),
        ReserveError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "request denied: unavailable");
        }
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spendgate\""),
            );
        }
        response
    }
}

impl From<ReserveError> for ApiError {
    fn from(error: ReserveError) -> Self {
        match error {
            ReserveError::InvalidTier(e) => ApiError::invalid("tier", e),
            ReserveError::Pricing(e) => ApiError::invalid("model", e),
            ReserveError::InvalidInput(message) => ApiError::invalid("request", message),
            ReserveError::ConfigUnavailable(e) => ApiError::Unavailable(e.into()),
            ReserveError::StoreUnavailable(e) => ApiError::Unavailable(e.into()),
            ReserveError::Store(e) => ApiError::Internal(e.into()),
            refusal @ (ReserveError::AiDisabled(_)
            | ReserveError::ModelNotAllowed { .. }
            | ReserveError::NotConfigured(_)) => ApiError::Refused(refusal),
        }
    }
}

impl From<FinalizeError> for ApiError {
    fn from(error: FinalizeError) -> Self {
        match error {
            FinalizeError::Pricing(e) => ApiError::invalid("usage", e),
            FinalizeError::InvalidInput(message) => ApiError::invalid("request", message),
            FinalizeError::CostOutOfRange(e) => ApiError::CostOutOfRange(e.into()),
            FinalizeError::Store(e) => ApiError::Internal(e.into()),
            FinalizeError::NotKept(e) => ApiError::Unavailable(e.into()),
            FinalizeError::UnknownHold { user, key } => ApiError::UnknownHold { user, key },
            error @ FinalizeError::ModelUnknown => ApiError::invalid("model", error),
            FinalizeError::ModelUnavailable(e) => ApiError::Unavailable(e.into()),
            error @ FinalizeError::SettledOtherwise { .. } => {
                ApiError::KeyReused(error.to_string())
            }
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(error: StatusError) -> Self {
        match error {
            StatusError::Store(e) => store_error(e),
            StatusError::Period(message) => ApiError::invalid("period", message),
        }
    }
}

impl From<ExtendError> for ApiError {
    fn from(error: ExtendError) -> Self {
        match error {
            ExtendError::UnknownHold(e) => store_error(e),
            ExtendError::Unavailable(e) => ApiError::Unavailable(e.into()),
            ExtendError::Store(e) => store_error(e),
        }
    }
}

impl From<HandoverError> for ApiError {
    fn from(error: HandoverError) -> Self {
        match error {
            HandoverError::Queue(e) => repo_error(e),
            HandoverError::NoUsageSource => ApiError::NoUsageSource,
            HandoverError::UnknownHold { user, key } => ApiError::UnknownHold { user, key },
            HandoverError::AlreadySettled { .. } => ApiError::AlreadySettled,
            HandoverError::StoreUnavailable(e) => ApiError::Unavailable(e.into()),
            HandoverError::Store(e) => store_error(e),
        }
    }
}

impl From<BudgetChangeError> for ApiError {
    fn from(error: BudgetChangeError) -> Self {
        match error {
            BudgetChangeError::Database(e) => repo_error(e),
            BudgetChangeError::StoreNotUpdated(e) => store_error(e),
            BudgetChangeError::StoreNotRebuilt(e) => match e {
                RebuildError::UsageLog(e) | RebuildError::Queue(e) => repo_error(e),
                RebuildError::Store(e) => store_error(e),
                other @ RebuildError::SettlementsPending { .. } => {
                    ApiError::Unavailable(other.into())
                }
                other @ RebuildError::Period(_) => ApiError::Internal(other.into()),
            },
        }
    }
}

impl From<TierWriteError> for ApiError {
    fn from(error: TierWriteError) -> Self {
        match error {
            TierWriteError::Database(e) => repo_error(e),
        }
    }
}

/// A store error outside the reserve path: outages are 503, bad input 422,
/// everything else the server's fault.
pub(crate) fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(_) => ApiError::Unavailable(error.into()),
        StoreError::InvalidInput(_) => ApiError::invalid("request", error),
        StoreError::UnknownHold { user, key } => ApiError::UnknownHold { user, key },
        StoreError::NotConfigured(c) => ApiError::Refused(ReserveError::NotConfigured(c)),
        // Overflow, corrupt data, and whatever the port adds later.
        _ => ApiError::Internal(error.into()),
    }
}

/// A repository error: outages are 503, bad input 422, unreadable data the
/// server's fault.
pub(crate) fn repo_error(error: RepoError) -> ApiError {
    match error {
        RepoError::Unavailable(_) => ApiError::Unavailable(error.into()),
        RepoError::InvalidInput(_) => ApiError::invalid("request", error),
        // Unreadable data, and whatever the port adds later.
        _ => ApiError::Internal(error.into()),
    }
}
