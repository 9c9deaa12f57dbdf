//! Reaping in bounded batches on SQLite: each batch is one transaction
//! that releases at most [`REAP_BATCH`] expired holds under the write
//! lock (PostgreSQL calls `spendgate_budget_reap` instead).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use sea_orm::{FromQueryResult, Value};
use spendgate_domain::{
    CommunityId, Micros, Period, PeriodSums, Reaped, Timestamp, UserId, UserSpend, apply_settlement,
};
use spendgate_ports::StoreError;

use super::rows::HoldRow;
use super::writes::{Write, counters_write, user_write};
use super::{MARKER_CLEANUP_BATCH, REAP_BATCH, SqlBudgetStore, domain, money};
use crate::error::store_error;

impl SqlBudgetStore {
    /// One reap transaction: releases at most [`REAP_BATCH`] of the
    /// community's holds expired at `now` (oldest first), and with
    /// `clean_markers` deletes a bounded batch of expired markers.
    pub(super) async fn reap_batch(
        &self,
        community: &CommunityId,
        now: Timestamp,
        clean_markers: bool,
    ) -> Result<Reaped, StoreError> {
        let tombstone_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        if txn.lock_community(false).await?.is_none() {
            return Ok(Reaped::default());
        }
        // Every write to the community's holds takes its lock, which this
        // transaction holds: the batch is the same set in every statement.
        let batch_values =
            || -> Vec<Value> { vec![now.as_millis().into(), i64::from(REAP_BATCH).into()] };
        let expired = HoldRow::find_by_statement(txn.stmt(
            "SELECT user_id, idempotency_key, estimate_micros, model_alias, period, created_at, expires_at \
             FROM budget_hold WHERE community_id = $1 AND expires_at <= $2 \
             ORDER BY expires_at, user_id, idempotency_key LIMIT $3",
            batch_values(),
        ))
        .all(&txn.txn)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(HoldRow::into_hold)
        .collect::<Result<Vec<_>, _>>()?;

        // Stage every touched period and user, checked, before any write:
        // a period and its first user in one read, further users alone.
        let mut periods: BTreeMap<Period, PeriodSums> = BTreeMap::new();
        let mut users: BTreeMap<(Period, UserId), UserSpend> = BTreeMap::new();
        let mut reaped = Reaped::default();
        for hold in &expired {
            let user_key = (hold.period, hold.user.clone());
            if let Entry::Vacant(slot) = periods.entry(hold.period) {
                let (counters, spend) = txn.sums(hold.period, &hold.user).await?;
                slot.insert(counters);
                users.insert(user_key.clone(), spend);
            } else if let Entry::Vacant(slot) = users.entry(user_key.clone()) {
                slot.insert(txn.user_spend(hold.period, &hold.user).await?);
            }
            let (Some(c), Some(u)) = (periods.get_mut(&hold.period), users.get_mut(&user_key))
            else {
                return Err(StoreError::Corrupt("staged counters vanished".into()));
            };
            let (sums, user) = apply_settlement(*c, *u, hold, Micros::ZERO, true)
                .map_err(|e| domain(community)(money(e)))?;
            *c = sums;
            *u = user;
            reaped.count += 1;
            reaped.reclaimed = reaped
                .reclaimed
                .checked_add(hold.estimate)
                .map_err(|e| domain(community)(money(e)))?;
        }
        if clean_markers {
            // Markers expired at `now` count as absent already; delete a
            // bounded batch of them before the tombstones may replace some
            // (in a statement of its own: one statement must not both
            // delete a marker row and upsert it).
            txn.exec(
                "DELETE FROM budget_marker WHERE (community_id, user_id, idempotency_key) IN ( \
                   SELECT community_id, user_id, idempotency_key FROM budget_marker \
                   WHERE community_id = $1 AND expires_at <= $2 LIMIT $3)",
                vec![
                    now.as_millis().into(),
                    i64::from(MARKER_CLEANUP_BATCH).into(),
                ],
            )
            .await?;
        }
        if !expired.is_empty() {
            let mut writes = Vec::with_capacity(periods.len() + users.len() + 2);
            for (period, counters) in periods {
                writes.push(counters_write(period, counters)?);
            }
            for ((period, user), spend) in users {
                writes.push(user_write(period, &user, spend));
            }
            // Counters first, then the tombstones and the deletion of the
            // holds, whose count is checked.
            let mut tombstones = batch_values();
            tombstones.push(tombstone_expires.as_millis().into());
            writes.push(Write {
                sql: "INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros, \
                       estimate_micros, model_alias, period, created_at, hold_expires_at, expires_at) \
                     SELECT community_id, user_id, idempotency_key, 'reaped', NULL, estimate_micros, \
                       model_alias, period, created_at, expires_at, $4 \
                     FROM budget_hold WHERE community_id = $1 AND (user_id, idempotency_key) IN ( \
                       SELECT user_id, idempotency_key FROM budget_hold \
                       WHERE community_id = $1 AND expires_at <= $2 \
                       ORDER BY expires_at, user_id, idempotency_key LIMIT $3) \
                     ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind, \
                       actual_micros = NULL, estimate_micros = excluded.estimate_micros, \
                       model_alias = excluded.model_alias, period = excluded.period, \
                       created_at = excluded.created_at, hold_expires_at = excluded.hold_expires_at, \
                       expires_at = excluded.expires_at",
                values: tombstones,
            });
            writes.push(Write {
                sql: "DELETE FROM budget_hold WHERE community_id = $1 \
                     AND (user_id, idempotency_key) IN ( \
                       SELECT user_id, idempotency_key FROM budget_hold \
                       WHERE community_id = $1 AND expires_at <= $2 \
                       ORDER BY expires_at, user_id, idempotency_key LIMIT $3)",
                values: batch_values(),
            });
            let deleted = txn.apply(writes).await?;
            if deleted != reaped.count {
                return Err(StoreError::Corrupt(format!(
                    "reaped {} holds but deleted {deleted}",
                    reaped.count
                )));
            }
        }
        txn.commit().await?;
        Ok(reaped)
    }
}
