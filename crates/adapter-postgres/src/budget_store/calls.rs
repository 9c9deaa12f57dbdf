//! The PostgreSQL path of the writes: each operation is one call of its
//! PL/pgSQL function (migration `m20261129_000012`), one statement and one
//! round trip, which locks the community's row, reads under the lock,
//! applies the rules, writes and returns the outcome as one row.

use std::ops::Deref;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, RuntimeErr, Statement, Value};
use spendgate_domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, LimitScope, Limits,
    Micros, Reaped, Receipt, Reservation, ReserveOutcome, Timestamp, Ttl, UnheldCommit,
};
use spendgate_ports::StoreError;

use super::rows::{found_hold, read_count, read_micros, read_time};
use super::{MARKER_CLEANUP_BATCH, REAP_BATCH, SqlBudgetStore, StoreTimeouts, domain, unknown};
use crate::error::store_error;
use crate::migration::m20261129_000012_budget_operation_functions::{
    CORRUPT_SQLSTATE, OVERFLOW_SQLSTATE,
};

/// What `spendgate_budget_reserve` returns.
#[derive(Debug, FromQueryResult)]
struct ReserveRow {
    outcome: String,
    o_limit: Option<i64>,
    o_remaining: Option<i64>,
    o_warning: Option<bool>,
    o_user_scope: Option<bool>,
    h_estimate: Option<i64>,
    h_model: Option<String>,
    h_period: Option<String>,
    h_created: Option<i64>,
    h_expires: Option<i64>,
}

/// What `spendgate_budget_settle` returns: the outcome, and for a cost
/// committed the hold (or tombstone) it was committed against.
#[derive(Debug, FromQueryResult)]
struct SettleRow {
    outcome: String,
    o_actual: Option<i64>,
    o_overshoot: Option<i64>,
    h_estimate: Option<i64>,
    h_model: Option<String>,
    h_period: Option<String>,
    h_created: Option<i64>,
    h_expires: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct ExtendRow {
    outcome: String,
    o_expires: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct ReapRow {
    o_count: i64,
    o_reclaimed: i64,
}

/// A database error of a function call: the functions' own SQLSTATEs for
/// failed checked arithmetic and stored data out of range, otherwise as
/// every other statement (a lock or statement timeout is `Unavailable`).
fn call_error(error: DbErr) -> StoreError {
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = &error
        && let sea_orm::sqlx::Error::Database(db) = e.deref()
    {
        match db.code().as_deref() {
            Some(OVERFLOW_SQLSTATE) => return StoreError::Overflow(db.message().to_owned()),
            Some(CORRUPT_SQLSTATE) => return StoreError::Corrupt(db.message().to_owned()),
            _ => {}
        }
    }
    store_error(error)
}

fn unexpected(function: &str, outcome: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{function} returned the unknown outcome {outcome:?}"
    ))
}

fn missing(what: &str) -> StoreError {
    StoreError::Corrupt(format!("the outcome row has no {what}"))
}

impl SqlBudgetStore {
    fn timeout_values(&self) -> [Value; 2] {
        [
            StoreTimeouts::setting(self.timeouts.lock).into(),
            StoreTimeouts::setting(self.timeouts.statement).into(),
        ]
    }

    /// Runs one function call for `community` (bound as `$1`, the
    /// timeouts after `values`) under the community's pass, and reads its
    /// one row.
    async fn call<R: FromQueryResult>(
        &self,
        community: &CommunityId,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<R, StoreError> {
        let _pass = self.pass(community).await?;
        let values = std::iter::once(community.as_str().into())
            .chain(values)
            .chain(self.timeout_values());
        R::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .one(&self.db)
        .await
        .map_err(call_error)?
        .ok_or_else(|| missing("row"))
    }

    pub(super) async fn call_reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        // Computed here, refused by the function only where the model would
        // refuse them (after the replay and configuration answers).
        let timing = reservation.timing(now);
        let (period, expires) = match &timing {
            Ok((p, e)) => (Some(p.to_string()), Some(e.as_millis())),
            Err(_) => (None, None),
        };
        let row: ReserveRow = self
            .call(
                community,
                "SELECT * FROM spendgate_budget_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                vec![
                    reservation.user.as_str().into(),
                    reservation.key.as_str().into(),
                    reservation.estimate.get().into(),
                    reservation.model.as_str().into(),
                    period.into(),
                    now.as_millis().into(),
                    expires.into(),
                    i32::from(self.policy.warning_percent()).into(),
                ],
            )
            .await?;
        let limit = || read_micros("limit", row.o_limit.ok_or_else(|| missing("limit"))?);
        let remaining = || {
            read_micros(
                "remaining",
                row.o_remaining.ok_or_else(|| missing("remaining"))?,
            )
        };
        match row.outcome.as_str() {
            "not_configured" => Err(StoreError::NotConfigured(community.clone())),
            "already_settled" => Ok(ReserveOutcome::AlreadySettled),
            "exceeded" => Ok(ReserveOutcome::BudgetExceeded {
                remaining: remaining()?,
                limit: limit()?,
                scope: if row.o_user_scope.ok_or_else(|| missing("scope"))? {
                    LimitScope::User
                } else {
                    LimitScope::Community
                },
            }),
            "reserved" => Ok(ReserveOutcome::Reserved {
                remaining: remaining()?,
                limit: limit()?,
                warning: row.o_warning.ok_or_else(|| missing("warning"))?,
                expires_at: timing
                    .map(|(_, expires_at)| expires_at)
                    .map_err(|_| unexpected("reserve", "reserved"))?,
            }),
            "time_out_of_range" => match timing {
                Err(e) => Err(domain(community)(e)),
                Ok(_) => Err(unexpected("reserve", "time_out_of_range")),
            },
            "already_reserved" => {
                let hold_ref = HoldRef {
                    user: reservation.user.clone(),
                    key: reservation.key.clone(),
                };
                let hold = found_hold(
                    &hold_ref,
                    row.h_estimate,
                    row.h_model,
                    row.h_period,
                    row.h_created,
                    row.h_expires,
                )?
                .ok_or_else(|| missing("hold"))?;
                Ok(ReserveOutcome::AlreadyReserved { hold })
            }
            other => Err(unexpected("reserve", other)),
        }
    }

    /// `finalize` and `cancel` (`unheld` is `None`), or `commit_unheld`.
    pub(super) async fn call_settle(
        &self,
        community: &CommunityId,
        hold_ref: &HoldRef,
        actual: Micros,
        now: Timestamp,
        unheld: Option<&UnheldCommit>,
    ) -> Result<FinalizeOutcome, StoreError> {
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let row: SettleRow = self
            .call(
                community,
                "SELECT * FROM spendgate_budget_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                vec![
                    hold_ref.user.as_str().into(),
                    hold_ref.key.as_str().into(),
                    actual.get().into(),
                    now.as_millis().into(),
                    marker_expires.as_millis().into(),
                    unheld.map(|u| u.model.as_str().to_owned()).into(),
                    unheld.map(|u| u.period.to_string()).into(),
                ],
            )
            .await?;
        let receipt = |row: SettleRow| -> Result<Receipt, StoreError> {
            let hold = found_hold(
                hold_ref,
                row.h_estimate,
                row.h_model,
                row.h_period,
                row.h_created,
                row.h_expires,
            )?
            .ok_or_else(|| missing("hold"))?;
            let overshoot = read_micros(
                "overshoot",
                row.o_overshoot.ok_or_else(|| missing("overshoot"))?,
            )?;
            Ok(Receipt::for_hold(&hold, actual, overshoot))
        };
        match row.outcome.as_str() {
            "unknown" if unheld.is_some() => Err(StoreError::Corrupt(
                "community row vanished under its lock".into(),
            )),
            "unknown" => Err(unknown(hold_ref)),
            "already_finalized" => Ok(FinalizeOutcome::AlreadyFinalized {
                actual: read_micros(
                    "marker actual",
                    row.o_actual.ok_or_else(|| missing("actual"))?,
                )?,
            }),
            "finalized" => Ok(FinalizeOutcome::Finalized(receipt(row)?)),
            "late_finalized" => Ok(FinalizeOutcome::LateFinalized(receipt(row)?)),
            "committed_without_hold" => Ok(FinalizeOutcome::CommittedWithoutHold(receipt(row)?)),
            other => Err(unexpected("settle", other)),
        }
    }

    pub(super) async fn call_extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let wanted = now.plus(ttl).map_err(|e| domain(community)(e.into()))?;
        let row: ExtendRow = self
            .call(
                community,
                "SELECT * FROM spendgate_budget_extend($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    hold.user.as_str().into(),
                    hold.key.as_str().into(),
                    now.as_millis().into(),
                    wanted.as_millis().into(),
                ],
            )
            .await?;
        match row.outcome.as_str() {
            "extended" => Ok(ExtendOutcome::Extended {
                expires_at: read_time(
                    "hold expires_at",
                    row.o_expires.ok_or_else(|| missing("expiry"))?,
                )?,
            }),
            "not_live" => Ok(ExtendOutcome::NotLive),
            "unknown" => Err(unknown(hold)),
            other => Err(unexpected("extend", other)),
        }
    }

    /// One reap batch of at most [`REAP_BATCH`] holds; with
    /// `clean_markers` also a batch of expired markers.
    pub(super) async fn call_reap_batch(
        &self,
        community: &CommunityId,
        now: Timestamp,
        clean_markers: bool,
    ) -> Result<Reaped, StoreError> {
        let tombstone_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let row: ReapRow = self
            .call(
                community,
                "SELECT * FROM spendgate_budget_reap($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    now.as_millis().into(),
                    tombstone_expires.as_millis().into(),
                    i64::from(REAP_BATCH).into(),
                    clean_markers.into(),
                    i64::from(MARKER_CLEANUP_BATCH).into(),
                ],
            )
            .await?;
        Ok(Reaped {
            count: read_count("reaped count", row.o_count)?,
            reclaimed: read_micros("reclaimed", row.o_reclaimed)?,
        })
    }

    pub(super) async fn call_set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        let _pass = self.pass(community).await?;
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT spendgate_budget_set_limits($1, $2, $3, $4, $5, $6)",
            [
                community.as_str().into(),
                limits.limit.get().into(),
                limits.per_user_cap.map(Micros::get).into(),
                version.get().into(),
            ]
            .into_iter()
            .chain(self.timeout_values()),
        );
        self.db.execute_raw(stmt).await.map_err(call_error)?;
        Ok(())
    }
}
