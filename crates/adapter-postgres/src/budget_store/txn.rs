//! [`Txn`]: one write transaction of one community, and the reads and
//! rules every write shares.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, FromQueryResult, Statement, Value};
use spendgate_domain::{
    BudgetError, CommunityId, FinalizeOutcome, Hold, HoldRef, Limits, Micros, MoneyError, Period,
    PeriodSums, Receipt, SettledAs, Timestamp, UserId, UserSpend, apply_settlement,
};
use spendgate_ports::StoreError;
use tokio::sync::OwnedMutexGuard;

use super::StoreTimeouts;
use super::gate::Pass;
use super::rows::{
    CountersRow, LimitsRow, Lookup, LookupRow, SumsRow, UserRow, counters_from, limits_from,
    read_micros, user_from,
};
use super::writes::{Write, counters_write, delete_hold_write, settle_write, user_write};
use crate::error::store_error;

/// A write transaction scoped to one community.
pub(super) struct Txn<'a> {
    pub(super) txn: DatabaseTransaction,
    pub(super) community: &'a CommunityId,
    pub(super) timeouts: StoreTimeouts,
    /// Released after `txn` (fields drop in order).
    pub(super) _turn: Option<OwnedMutexGuard<()>>,
    /// The community's pass on PostgreSQL, released after `txn`.
    pub(super) _pass: Option<Pass>,
}

impl Txn<'_> {
    pub(super) fn backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    pub(super) fn stmt(&self, sql: &str, mut values: Vec<Value>) -> Statement {
        values.insert(0, self.community.as_str().into());
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    pub(super) async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, StoreError> {
        self.txn
            .execute_raw(self.stmt(sql, values))
            .await
            .map(|r| r.rows_affected())
            .map_err(store_error)
    }

    pub(super) async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await.map_err(store_error)
    }

    /// Reads the community's limits under SQLite's write lock; `None`
    /// when it has no row (no limits were ever set, so it has no holds or
    /// markers either).
    pub(super) async fn lock(&self) -> Result<Option<Option<Limits>>, StoreError> {
        let row = LimitsRow::find_by_statement(self.stmt(
            "SELECT limit_micros, per_user_cap_micros FROM budget_community WHERE community_id = $1",
            vec![],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map(|r| limits_from(r.limit_micros, r.per_user_cap_micros))
            .transpose()
    }

    /// Locks the community's row and bounds the transaction's waits on
    /// PostgreSQL, for writes that concern no single (user, key); with
    /// `create`, a missing row is created first (no limits). `None` when
    /// the community has no row. On PostgreSQL one call of
    /// `spendgate_budget_lookup` with an empty user and key (ids are never
    /// empty, so it finds no hold or marker): the same lock, in the same
    /// way, as every other write. On SQLite an insert when creating, then
    /// a read under `BEGIN IMMEDIATE`'s write lock.
    pub(super) async fn lock_community(
        &self,
        create: bool,
    ) -> Result<Option<Option<Limits>>, StoreError> {
        if self.backend() != DbBackend::Postgres {
            if create {
                self.exec(
                    "INSERT INTO budget_community (community_id) VALUES ($1) \
                     ON CONFLICT (community_id) DO NOTHING",
                    vec![],
                )
                .await?;
            }
            return self.lock().await;
        }
        let row = LimitsRow::find_by_statement(self.stmt(
            "SELECT limit_micros, per_user_cap_micros \
             FROM spendgate_budget_lookup($1, '', '', 0, $2, $3, $4)",
            vec![
                create.into(),
                StoreTimeouts::setting(self.timeouts.lock).into(),
                StoreTimeouts::setting(self.timeouts.statement).into(),
            ],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map(|r| limits_from(r.limit_micros, r.per_user_cap_micros))
            .transpose()
    }

    /// SQLite only (PostgreSQL writes call the functions of migration
    /// `m20261129_000012` instead): reads the community's row, the hold of
    /// (user, key) and its marker if unexpired at `now`, under the write
    /// lock `BEGIN IMMEDIATE` already holds. `None` when the community has
    /// no row (no limits were ever set, so no holds or markers either);
    /// with `create`, a community without a row gets one with no limits
    /// first (rolled back with the transaction on any error).
    pub(super) async fn lookup(
        &self,
        hold_ref: &HoldRef,
        now: Timestamp,
        create: bool,
    ) -> Result<Option<Lookup>, StoreError> {
        if create {
            self.exec(
                "INSERT INTO budget_community (community_id) VALUES ($1) \
                 ON CONFLICT (community_id) DO NOTHING",
                vec![],
            )
            .await?;
        }
        let sql = "SELECT c.limit_micros, c.per_user_cap_micros, \
               h.estimate_micros AS h_estimate, h.model_alias AS h_model, h.period AS h_period, \
               h.created_at AS h_created, h.expires_at AS h_expires, \
               m.kind AS m_kind, m.actual_micros AS m_actual, m.estimate_micros AS m_estimate, \
               m.model_alias AS m_model, m.period AS m_period, m.created_at AS m_created, \
               m.hold_expires_at AS m_hold_expires \
             FROM budget_community c \
             LEFT JOIN budget_hold h ON h.community_id = c.community_id \
               AND h.user_id = $2 AND h.idempotency_key = $3 \
             LEFT JOIN budget_marker m ON m.community_id = c.community_id \
               AND m.user_id = $2 AND m.idempotency_key = $3 AND m.expires_at > $4 \
             WHERE c.community_id = $1";
        let values: Vec<Value> = vec![
            hold_ref.user.as_str().into(),
            hold_ref.key.as_str().into(),
            now.as_millis().into(),
        ];
        let Some(row) = LookupRow::find_by_statement(self.stmt(sql, values))
            .one(&self.txn)
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let limits = limits_from(row.limit_micros, row.per_user_cap_micros)?;
        let (hold, marker) = row.into_found(hold_ref)?;
        Ok(Some(Lookup {
            limits,
            hold,
            marker,
        }))
    }

    /// A period's counters and one user's sums in it, in one round trip.
    pub(super) async fn sums(
        &self,
        period: Period,
        user: &UserId,
    ) -> Result<(PeriodSums, UserSpend), StoreError> {
        let row = SumsRow::find_by_statement(self.stmt(
            "SELECT p.committed_micros, p.reserved_micros, p.holds, p.warned, \
               u.committed_micros AS u_committed, u.reserved_micros AS u_reserved \
             FROM (SELECT 1 AS one) x \
             LEFT JOIN budget_period p ON p.community_id = $1 AND p.period = $2 \
             LEFT JOIN budget_user_period u ON u.community_id = $1 AND u.period = $2 AND u.user_id = $3",
            vec![period.to_string().into(), user.as_str().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok((PeriodSums::default(), UserSpend::default()));
        };
        let counters = match (
            row.committed_micros,
            row.reserved_micros,
            row.holds,
            row.warned,
        ) {
            (Some(committed_micros), Some(reserved_micros), Some(holds), Some(warned)) => {
                counters_from(CountersRow {
                    committed_micros,
                    reserved_micros,
                    holds,
                    warned,
                })?
            }
            _ => PeriodSums::default(),
        };
        let spend = UserSpend {
            committed: read_micros("user committed", row.u_committed.unwrap_or_default())?,
            reserved: read_micros("user reserved", row.u_reserved.unwrap_or_default())?,
        };
        Ok((counters, spend))
    }

    pub(super) async fn counters(&self, period: Period) -> Result<PeriodSums, StoreError> {
        let row = CountersRow::find_by_statement(self.stmt(
            "SELECT committed_micros, reserved_micros, holds, warned FROM budget_period \
             WHERE community_id = $1 AND period = $2",
            vec![period.to_string().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map_or(Ok(PeriodSums::default()), counters_from)
    }

    pub(super) async fn user_spend(
        &self,
        period: Period,
        user: &UserId,
    ) -> Result<UserSpend, StoreError> {
        let row = UserRow::find_by_statement(self.stmt(
            "SELECT user_id, committed_micros, reserved_micros FROM budget_user_period \
             WHERE community_id = $1 AND period = $2 AND user_id = $3",
            vec![period.to_string().into(), user.as_str().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map_or(Ok(UserSpend::default()), |r| user_from(&r).map(|(_, s)| s))
    }

    /// Applies `writes` in order, one statement each. Returns how many
    /// rows the last write affected (0 when there are none).
    pub(super) async fn apply(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        let mut affected = 0;
        for write in writes {
            affected = self.exec(write.sql, write.values).await?;
        }
        Ok(affected)
    }

    /// Commits `actual` to the hold's period, releasing its estimate when
    /// `releases_hold`; every sum is checked before anything is written.
    pub(super) async fn commit_cost(
        &self,
        hold: &Hold,
        actual: Micros,
        releases_hold: bool,
        limits: Option<Limits>,
        writes: &mut Vec<Write>,
    ) -> Result<Receipt, StoreError> {
        let (mut counters, user) = self.sums(hold.period, &hold.user).await?;
        let limit = limits.map_or(Micros::ZERO, |l| l.limit);
        let checked = || -> Result<(PeriodSums, UserSpend, Micros), MoneyError> {
            let (sums, user) = apply_settlement(counters, user, hold, actual, releases_hold)?;
            Ok((sums, user, sums.overshoot(limit)?))
        };
        let (sums, next_user, overshoot) = checked()
            .map_err(|e| StoreError::from_domain(self.community, BudgetError::Money(e)))?;
        counters = sums;
        writes.push(counters_write(hold.period, counters)?);
        writes.push(user_write(hold.period, &hold.user, next_user));
        Ok(Receipt::for_hold(hold, actual, overshoot))
    }

    /// The finalize rule on what was found under the lock: releases a hold,
    /// commits late on a tombstone, answers a replay from a finalized
    /// marker, and commits the transaction when it wrote. `None` when
    /// neither a hold nor a live marker exists (nothing was written).
    pub(super) async fn settle_found(
        self,
        found: Lookup,
        hold_ref: &HoldRef,
        actual: Micros,
        marker_expires: Timestamp,
    ) -> Result<Option<FinalizeOutcome>, StoreError> {
        let limits = found.limits;
        let mut writes = Vec::new();
        if let Some(hold) = found.hold {
            let receipt = self
                .commit_cost(&hold, actual, true, limits, &mut writes)
                .await?;
            writes.push(delete_hold_write(hold_ref));
            writes.push(settle_write(hold_ref, actual, marker_expires));
            self.apply(writes).await?;
            self.commit().await?;
            return Ok(Some(FinalizeOutcome::Finalized(receipt)));
        }
        match found.marker {
            Some(SettledAs::Finalized { actual }) => {
                Ok(Some(FinalizeOutcome::AlreadyFinalized { actual }))
            }
            Some(SettledAs::Reaped { hold }) => {
                let receipt = self
                    .commit_cost(&hold, actual, false, limits, &mut writes)
                    .await?;
                writes.push(settle_write(hold_ref, actual, marker_expires));
                self.apply(writes).await?;
                self.commit().await?;
                Ok(Some(FinalizeOutcome::LateFinalized(receipt)))
            }
            None => Ok(None),
        }
    }
}
