//! Extractors that turn every malformed part of a request into an
//! [`ApiError`] (never axum's plain-text rejections), and that enforce the
//! token's grant where the community is read: [`Tenant`] checks the
//! community, [`Operator`] the community and the operator role. Handlers
//! that change configuration take an [`Operator`]; that is the one place
//! the role rule lives.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use spendgate_domain::{CommunityId, HoldRef, IdempotencyKey, UserId};

use super::Role;
use super::problem::ApiError;

/// The header carrying a write's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the request's token may do: its role, and the communities it may
/// act on (`None` is every one). Put in the request's extensions by the
/// auth middleware; a request without one is refused (401), so a route
/// mounted outside the middleware fails closed.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) role: Role,
    pub(crate) communities: Option<Arc<BTreeSet<CommunityId>>>,
}

/// A JSON body of type `T`. Any content type is read as JSON; an empty
/// body reads as `{}`, so routes whose fields are all optional accept it.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_rejection(rejection, limit))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // Syntax first (400), then shape and values (422).
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| ApiError::MalformedJson(e.into()))?;
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::invalid("body", e))
    }
}

/// The configured body limit, for the 413 message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

fn body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::MalformedJson(rejection.into())
    }
}

/// The `Idempotency-Key` header, required on every write and validated as
/// an [`IdempotencyKey`].
#[derive(Debug, Clone)]
pub(crate) struct KeyHeader(pub(crate) IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let value = values.next().ok_or_else(|| ApiError::BadHeader {
            header: "Idempotency-Key",
            reason: "required on every write".to_owned(),
        })?;
        if values.next().is_some() {
            return Err(ApiError::BadHeader {
                header: "Idempotency-Key",
                reason: "given more than once".to_owned(),
            });
        }
        let text = value.to_str().map_err(|_| ApiError::BadHeader {
            header: "Idempotency-Key",
            reason: "not visible ASCII".to_owned(),
        })?;
        IdempotencyKey::parse(text)
            .map(KeyHeader)
            .map_err(|e| ApiError::invalid("Idempotency-Key", e))
    }
}

/// The `{community}` of the path, parsed and checked against the token's
/// communities (403 `community-forbidden` outside them). Either role may
/// pass: spending and reading are what a tenant does.
#[derive(Debug, Clone)]
pub(crate) struct Tenant(pub(crate) CommunityId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        granted(parts, state)
            .await
            .map(|(community, _)| Tenant(community))
    }
}

/// The `{community}` of a configuration write (budget, tiers): checked as
/// [`Tenant`], then the token must be an operator's (403
/// `insufficient-role` for a tenant's), so a tenant can never change its
/// own limits.
#[derive(Debug, Clone)]
pub(crate) struct Operator(pub(crate) CommunityId);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match granted(parts, state).await? {
            (community, Role::Operator) => Ok(Operator(community)),
            (_, role) => Err(ApiError::InsufficientRole(role)),
        }
    }
}

/// The path's community, if the request's grant covers it, and the role.
async fn granted<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<(CommunityId, Role), ApiError> {
    let raw = path_param(parts, state, "community").await?;
    let community =
        CommunityId::parse(raw.as_str()).map_err(|e| ApiError::invalid("community", e))?;
    let grant = parts
        .extensions
        .get::<Grant>()
        .ok_or(ApiError::Unauthorized)?;
    match &grant.communities {
        Some(allowed) if !allowed.contains(&community) => {
            Err(ApiError::CommunityForbidden(community.to_string()))
        }
        _ => Ok((community, grant.role)),
    }
}

/// The `{user}` and `{key}` of a hold's path.
#[derive(Debug, Clone)]
pub(crate) struct HoldPath(pub(crate) HoldRef);

impl<S: Send + Sync> FromRequestParts<S> for HoldPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = path_param(parts, state, "user").await?;
        let key = path_param(parts, state, "key").await?;
        Ok(HoldPath(HoldRef {
            user: UserId::parse(user).map_err(|e| ApiError::invalid("user", e))?,
            key: IdempotencyKey::parse(key).map_err(|e| ApiError::invalid("key", e))?,
        }))
    }
}

async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &'static str,
) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::invalid(name, e))?;
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| ApiError::NoRoute(parts.uri.path().to_owned()))
}
