//! Who is asking, and what they sent: the `X-Cycles-API-Key` check that
//! binds a request to its tenant, and the JSON body reader that turns
//! every malformed body into the protocol's 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use spendgate_domain::CommunityId;
use subtle::ConstantTimeEq;

use super::CyclesState;
use super::error::CyclesError;

/// The header carrying the API key.
pub const API_KEY: &str = "x-cycles-api-key";
/// The optional header copy of the body's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";

/// A configured key, kept as the SHA-256 of its secret so comparing in
/// constant time hides contents and lengths.
pub(super) struct KeyDigest {
    pub(super) digest: [u8; 32],
    pub(super) tenant: CommunityId,
}

impl KeyDigest {
    pub(super) fn new(secret: &str, tenant: CommunityId) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
            tenant,
        }
    }
}

/// The effective tenant of the request, put in its extensions by
/// [`authenticate`].
#[derive(Debug, Clone)]
pub(super) struct Tenant(pub(super) CommunityId);

/// Finds the key's tenant; no key, or an unknown one, is a 401.
pub(super) async fn authenticate(
    State(state): State<CyclesState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(presented) = request
        .headers()
        .get(API_KEY)
        .and_then(|value| value.to_str().ok())
    else {
        return CyclesError::Unauthorized.into_response();
    };
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    let mut found: Option<&KeyDigest> = None;
    for key in state.keys.iter() {
        // Every key is compared, whatever matched before.
        if bool::from(key.digest.ct_eq(&digest)) && found.is_none() {
            found = Some(key);
        }
    }
    match found {
        Some(key) => {
            request.extensions_mut().insert(Tenant(key.tenant.clone()));
            next.run(request).await
        }
        None => CyclesError::Unauthorized.into_response(),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Tenant {
    type Rejection = CyclesError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or(CyclesError::Unauthorized)
    }
}

/// A JSON body: the typed request and the raw value (the idempotency
/// fingerprint is taken over the raw value, in canonical form).
pub(super) struct Json<T> {
    pub(super) body: T,
    pub(super) raw: Value,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = CyclesError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| CyclesError::invalid("body", rejection.body_text()))?;
        let raw: Value =
            serde_json::from_slice(&bytes).map_err(|e| CyclesError::invalid("body", e))?;
        let body =
            serde_json::from_value(raw.clone()).map_err(|e| CyclesError::invalid("body", e))?;
        Ok(Self { body, raw })
    }
}

/// The body's idempotency key, checked, and equal to the header's when the
/// header is sent (the spec's rule).
pub(super) fn request_key(headers: &HeaderMap, body_key: &str) -> Result<(), CyclesError> {
    super::wire::check_key(body_key)?;
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Err(CyclesError::invalid(
                "X-Idempotency-Key",
                "sent more than once",
            ));
        }
        if value.to_str().ok() != Some(body_key) {
            return Err(CyclesError::invalid(
                "X-Idempotency-Key",
                "differs from the body's idempotency_key",
            ));
        }
    }
    Ok(())
}

/// The subject's tenant, when named, must be the key's tenant.
pub(super) fn same_tenant(tenant: &CommunityId, named: Option<&str>) -> Result<(), CyclesError> {
    match named {
        Some(name) if name != tenant.as_str() => Err(CyclesError::Forbidden(format!(
            "this API key acts for tenant {tenant}, not {name}"
        ))),
        _ => Ok(()),
    }
}
