//! The protocol's errors: one enum, one variant per answer the Cycles spec
//! defines, rendered as its `ErrorResponse` (`error`, `message`,
//! `request_id`, optional `details`), never as the native API's problem
//! details.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The response header carrying the request id of an error.
pub const REQUEST_ID: &str = "x-request-id";

/// Why a Cycles request was refused; the variant decides the status and
/// the spec's error code.
#[derive(Debug, thiserror::Error)]
pub enum CyclesError {
    /// 400 `INVALID_REQUEST`: malformed JSON, a field out of its range, a
    /// header that disagrees with the body.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `UNIT_MISMATCH`: spendgate budgets only `USD_MICROCENTS`.
    #[error(
        "spendgate budgets are kept in USD_MICROCENTS; {requested} cannot be reserved or charged"
    )]
    UnitMismatch {
        /// The unit the client sent.
        requested: String,
        /// The scope where the budget lives.
        scope: String,
    },
    /// 401 `UNAUTHORIZED`: no `X-Cycles-API-Key`, or an unknown one.
    #[error("a valid X-Cycles-API-Key header is required")]
    Unauthorized,
    /// 403 `FORBIDDEN`: another tenant named in the subject or a filter.
    /// (Another tenant's reservation id is a [`CyclesError::NotFound`].)
    #[error("{0}")]
    Forbidden(String),
    /// 404 `NOT_FOUND`: no such reservation for this tenant (never made,
    /// or made for another tenant), or no budget for the tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `BUDGET_EXCEEDED`: the estimate (or, under `REJECT`, the
    /// actual) does not fit.
    #[error("{0}")]
    BudgetExceeded(String),
    /// 409 `BUDGET_FROZEN`: the tenant's community has agent calls turned
    /// off.
    #[error("{0}")]
    BudgetFrozen(String),
    /// 409 `RESERVATION_FINALIZED`: already committed or released.
    #[error("{0}")]
    ReservationFinalized(String),
    /// 410 `RESERVATION_EXPIRED`: past its expiry (plus grace for commit
    /// and release).
    #[error("{0}")]
    ReservationExpired(String),
    /// 409 `IDEMPOTENCY_MISMATCH`: the key was used for another request.
    #[error("the idempotency key was already used with a different request")]
    IdempotencyMismatch,
    /// 500 `INTERNAL_ERROR`: a store or database could not answer (a
    /// reserve is then denied); retrying with the same key is safe.
    #[error("{0}")]
    Internal(String),
}

impl CyclesError {
    /// The status and the spec's error code.
    pub fn code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            Self::UnitMismatch { .. } => (StatusCode::BAD_REQUEST, "UNIT_MISMATCH"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::BudgetExceeded(_) => (StatusCode::CONFLICT, "BUDGET_EXCEEDED"),
            Self::BudgetFrozen(_) => (StatusCode::CONFLICT, "BUDGET_FROZEN"),
            Self::ReservationFinalized(_) => (StatusCode::CONFLICT, "RESERVATION_FINALIZED"),
            Self::ReservationExpired(_) => (StatusCode::GONE, "RESERVATION_EXPIRED"),
            Self::IdempotencyMismatch => (StatusCode::CONFLICT, "IDEMPOTENCY_MISMATCH"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// A 400 naming the field at fault.
    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::InvalidRequest(format!("{field}: {reason}"))
    }

    /// A 404 for a tenant without a budget, worded as the spec asks so
    /// clients recognise it.
    pub(crate) fn no_budget(scope: &str) -> Self {
        Self::NotFound(format!("Budget not found for provided scope: {scope}"))
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::UnitMismatch { requested, scope } => Some(serde_json::json!({
                "scope": scope,
                "requested_unit": requested,
                "expected_units": ["USD_MICROCENTS"],
            })),
            _ => None,
        }
    }
}

/// The spec's `ErrorResponse`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorResponse)]
pub struct ErrorBody {
    /// The spec's error code, such as `BUDGET_EXCEEDED`.
    error: &'static str,
    /// What went wrong, for people.
    message: String,
    /// This answer's id, also sent as `X-Request-Id`.
    request_id: String,
    /// For `UNIT_MISMATCH`: the scope, the unit asked and the units kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// A request id, `req_` and 128 random bits in hex: errors carry one so a
/// report can be matched with the server's log line. Random rather than
/// counted, so an id tells a client nothing about the process or how many
/// errors others met. Should the system's random source fail (it does not
/// once the system has booted), the id is `req_unavailable` and the
/// failure is logged.
fn request_id() -> String {
    let mut bits = [0_u8; 16];
    match getrandom::fill(&mut bits) {
        Ok(()) => {
            let mut id = String::with_capacity(4 + 2 * bits.len());
            id.push_str("req_");
            for byte in bits {
                // Writing to a String cannot fail.
                let _ = write!(id, "{byte:02x}");
            }
            id
        }
        Err(error) => {
            tracing::error!(%error, "no random request id: the system's random source failed");
            "req_unavailable".to_owned()
        }
    }
}

impl IntoResponse for CyclesError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        let request_id = request_id();
        if status.is_server_error() {
            tracing::warn!(%request_id, error = %self, "Cycles request failed");
        }
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
            request_id: request_id.clone(),
            details: self.details(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
}

/// A success answer as bytes, so the first answer to a request can be
/// stored and replayed byte for byte.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Reply {
    /// `value` as JSON with `status`.
    pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Result<Self, CyclesError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| CyclesError::Internal(format!("answer not serialisable: {e}")))?;
        Ok(Self { status, body })
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn request_ids_are_128_random_bits_that_name_no_process_or_sequence() {
        let ids: Vec<String> = (0..64).map(|_| request_id()).collect();
        for id in &ids {
            let hex = id.strip_prefix("req_").unwrap_or_default();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len());
    }
}
