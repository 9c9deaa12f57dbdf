//! A community's settings: its budget (limit, per-user cap, the period's
//! counters) and its tier overrides.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use spendgate_domain::tier::access_level;
use spendgate_domain::{AccessLevel, Limits, Period, Tier, TierOverrides, UserId};
use spendgate_ports::{PageSize, StoreError, UsersCursor};
use utoipa::IntoParams;

use super::ApiState;
use super::extract::{Body, KeyHeader, Operator, Tenant};
use super::problem::{ApiError, Problem};
use super::wire::{
    self, BudgetBody, BudgetChangeView, BudgetView, TiersBody, TiersView, UserSpendView,
    UsersPageView, micros_i64, usd,
};
use crate::services::budget::{BudgetChangeError, StatusError};
use crate::services::tiers::OverrideSource;

/// `GET …/budget`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetQuery {
    /// The period to show (`YYYY-MM`); the current one when absent.
    period: Option<String>,
    /// A user whose sums to show too.
    user: Option<String>,
}

/// `GET …/budget/users`' query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersQuery {
    /// The period to list (`YYYY-MM`); the current one when absent.
    period: Option<String>,
    /// Where to resume: the `next_cursor` of the page before.
    cursor: Option<String>,
    /// Users per page, 1..=1000 (default 1000).
    limit: Option<u64>,
}

fn period_param(period: Option<&str>) -> Result<Option<Period>, ApiError> {
    period
        .map(|p| Period::parse(p).map_err(|e| ApiError::invalid("period", e)))
        .transpose()
}

/// A community's budget and spend for one period.
#[utoipa::path(
    get,
    path = "/api/v1/communities/{community}/budget",
    tag = "budget",
    params(("community" = String, Path, description = "The community"), BudgetQuery),
    responses(
        (status = 200, description = "The period's budget", body = BudgetView),
        (status = 422, description = "Invalid period", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn budget(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    query: Result<Query<BudgetQuery>, QueryRejection>,
) -> Result<Json<BudgetView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e))?;
    let period = period_param(query.period.as_deref())?;
    let user = query
        .user
        .map(|u| UserId::parse(u).map_err(|e| ApiError::invalid("user", e)))
        .transpose()?;
    let report = state
        .app
        .budget()
        .status(&community, period, user.as_ref())
        .await?;
    let user = user
        .as_ref()
        .zip(report.user)
        .map(|(u, spend)| UserSpendView::of(u, spend));
    let limit = report.limits.map(|l| l.limit);
    let cap = report.limits.and_then(|l| l.per_user_cap);
    Ok(Json(BudgetView {
        community: community.to_string(),
        period: report.period.to_string(),
        limit_usd: limit.map(usd),
        limit_micros: limit.map(micros_i64),
        per_user_cap_usd: cap.map(usd),
        per_user_cap_micros: cap.map(micros_i64),
        committed_usd: usd(report.committed),
        committed_micros: micros_i64(report.committed),
        reserved_usd: usd(report.reserved),
        reserved_micros: micros_i64(report.reserved),
        remaining_usd: usd(report.remaining),
        remaining_micros: micros_i64(report.remaining),
        overspend_usd: usd(report.overspend),
        overspend_micros: micros_i64(report.overspend),
        holds: report.holds,
        warned: report.warned,
        user,
    }))
}

/// One page of a period's users with their sums: at most `limit`, in user
/// order on the memory and SQL stores, in scan order on Redis (where a
/// user may appear on two pages if the period gained users meanwhile).
/// Each page costs the store O(page), whatever the period holds.
#[utoipa::path(
    get,
    path = "/api/v1/communities/{community}/budget/users",
    tag = "budget",
    params(("community" = String, Path, description = "The community"), UsersQuery),
    responses(
        (status = 200, description = "One page of the period's users", body = UsersPageView),
        (status = 422, description = "Invalid period, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn users(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Json<UsersPageView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e))?;
    let period = period_param(query.period.as_deref())?;
    let cursor = query
        .cursor
        .map(|c| UsersCursor::parse(&c).map_err(|e| ApiError::invalid("cursor", e)))
        .transpose()?;
    let size = match query.limit {
        Some(n) => PageSize::new(n).map_err(|e| ApiError::invalid("limit", e))?,
        None => PageSize::MAX,
    };
    let (period, page) = state
        .app
        .budget()
        .users(&community, period, cursor.as_ref(), size)
        .await
        .map_err(|e| match e {
            StatusError::Store(StoreError::InvalidInput(message)) => {
                ApiError::invalid("cursor", message)
            }
            other => other.into(),
        })?;
    Ok(Json(UsersPageView {
        community: community.to_string(),
        period: period.to_string(),
        users: page
            .users
            .iter()
            .map(|(u, spend)| UserSpendView::of(u, *spend))
            .collect(),
        next_cursor: page.next.map(String::from),
    }))
}

/// Sets a community's monthly limit and per-user cap (creating its
/// configuration, AI enabled, when it has none). Operators only.
#[utoipa::path(
    put,
    path = "/api/v1/communities/{community}/budget",
    tag = "budget",
    params(
        ("community" = String, Path, description = "The community"),
        ("Idempotency-Key" = String, Header, description = "Required on every write"),
    ),
    request_body = BudgetBody,
    responses(
        (status = 200, description = "Saved and applied", body = BudgetChangeView),
        (status = 202, description = "Saved; the budget store gets it at the next config sync", body = BudgetChangeView),
        (status = 403, description = "A tenant's token (`insufficient-role`: only operators change budgets), or a token not allowed for this community (`community-forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing changed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_budget(
    State(state): State<ApiState>,
    Operator(community): Operator,
    KeyHeader(_): KeyHeader,
    Body(body): Body<BudgetBody>,
) -> Result<(StatusCode, Json<BudgetChangeView>), ApiError> {
    let limit = wire::required_money("limit", body.limit_usd.as_deref(), body.limit_micros)?;
    let cap = wire::money(
        "per_user_cap",
        body.per_user_cap_usd.as_deref(),
        body.per_user_cap_micros,
    )?;
    let limits = Limits {
        limit,
        per_user_cap: cap,
    };
    let applied = match state.app.budget().set_budget(&community, limits).await {
        Ok(()) => true,
        Err(
            error @ (BudgetChangeError::StoreNotUpdated(_) | BudgetChangeError::StoreNotRebuilt(_)),
        ) => {
            tracing::warn!(%community, %error, "budget saved, store not updated; config sync applies it");
            false
        }
        Err(error) => return Err(error.into()),
    };
    let status = if applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(BudgetChangeView {
            community: community.to_string(),
            limit_usd: usd(limit),
            limit_micros: micros_i64(limit),
            per_user_cap_usd: cap.map(usd),
            per_user_cap_micros: cap.map(micros_i64),
            applied,
        }),
    ))
}

/// A community's tier overrides and every tier's access level.
#[utoipa::path(
    get,
    path = "/api/v1/communities/{community}/tiers",
    tag = "tiers",
    params(("community" = String, Path, description = "The community")),
    responses((status = 200, description = "Overrides and levels", body = TiersView)),
    security(("bearer" = []))
)]
pub(crate) async fn tiers(
    State(state): State<ApiState>,
    Tenant(community): Tenant,
) -> Result<Json<TiersView>, ApiError> {
    let (overrides, source) = state.app.tiers().overrides(&community).await;
    tiers_view(&community.to_string(), &overrides, source).map(Json)
}

/// Replaces a community's tier overrides. Operators only.
#[utoipa::path(
    put,
    path = "/api/v1/communities/{community}/tiers",
    tag = "tiers",
    params(
        ("community" = String, Path, description = "The community"),
        ("Idempotency-Key" = String, Header, description = "Required on every write"),
    ),
    request_body = TiersBody,
    responses(
        (status = 200, description = "Saved", body = TiersView),
        (status = 403, description = "A tenant's token (`insufficient-role`: only operators change tiers), or a token not allowed for this community (`community-forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A tier outside 1–9 or an unknown level", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing changed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_tiers(
    State(state): State<ApiState>,
    Operator(community): Operator,
    KeyHeader(_): KeyHeader,
    Body(body): Body<TiersBody>,
) -> Result<Json<TiersView>, ApiError> {
    let raw = wire::required("overrides", body.overrides)?;
    let mut overrides = TierOverrides::new();
    for (tier, level) in raw {
        let field = format!("overrides.{tier}");
        let number: i64 = tier
            .parse()
            .map_err(|e: std::num::ParseIntError| ApiError::invalid(field.as_str(), e))?;
        let tier = Tier::new(number).map_err(|e| ApiError::invalid(field.as_str(), e))?;
        let level: AccessLevel = level
            .parse()
            .map_err(|e| ApiError::invalid(field.as_str(), e))?;
        overrides.insert(tier, level);
    }
    state
        .app
        .tiers()
        .set_overrides(&community, &overrides)
        .await?;
    tiers_view(&community.to_string(), &overrides, OverrideSource::Database).map(Json)
}

fn tiers_view(
    community: &str,
    overrides: &TierOverrides,
    source: OverrideSource,
) -> Result<TiersView, ApiError> {
    let mut levels = BTreeMap::new();
    for tier in 1..=9 {
        let level = access_level(tier, overrides).map_err(|e| ApiError::Internal(e.into()))?;
        levels.insert(tier.to_string(), level.to_string());
    }
    Ok(TiersView {
        community: community.to_owned(),
        overrides: overrides
            .iter()
            .map(|(tier, level)| (tier.get().to_string(), level.to_string()))
            .collect(),
        levels,
        source: match source {
            OverrideSource::Cache => "cache",
            OverrideSource::Database => "database",
            OverrideSource::LastKnown => "last_known",
            OverrideSource::Defaults => "defaults",
        }
        .to_owned(),
    })
}
