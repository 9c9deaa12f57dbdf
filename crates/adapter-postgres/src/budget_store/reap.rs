//! Reaping in bounded batches: each batch is one transaction that
//! releases at most [`REAP_BATCH`] expired holds under the community's
//! lock.

use sea_orm::{FromQueryResult, Value};
use spendgate_domain::{
    CommunityId, Micros, Period, PeriodSums, Reaped, Timestamp, UserId, UserSpend, apply_settlement,
};
use spendgate_ports::StoreError;

use super::rows::HoldRow;
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
        txn.bound().await?;
        if txn.lock().await?.is_none() {
            return Ok(Reaped::default());
        }
        // Every write to the community's holds takes its lock, which this
        // transaction holds: the batch is the same set in every statement.
        const BATCH: &str = "SELECT user_id, idempotency_key FROM budget_hold \
             WHERE community_id = $1 AND expires_at <= $2 \
             ORDER BY expires_at, user_id, idempotency_key LIMIT $3";
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

        // Stage every touched period and user, checked, before any write.
        let mut periods: std::collections::BTreeMap<Period, PeriodSums> = Default::default();
        let mut users: std::collections::BTreeMap<(Period, UserId), UserSpend> = Default::default();
        let mut reaped = Reaped::default();
        for hold in &expired {
            if let std::collections::btree_map::Entry::Vacant(slot) = periods.entry(hold.period) {
                slot.insert(txn.counters(hold.period).await?);
            }
            let user_key = (hold.period, hold.user.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) = users.entry(user_key.clone())
            {
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
        for (period, counters) in periods {
            txn.write_counters(period, counters).await?;
        }
        for ((period, user), spend) in users {
            txn.write_user(period, &user, spend).await?;
        }
        if clean_markers {
            // Markers expired at `now` count as absent already; delete a
            // bounded batch of them before the tombstones may replace some.
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
            let mut values = batch_values();
            values.push(tombstone_expires.as_millis().into());
            txn.exec(
                &format!(
                    "INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros, \
                       estimate_micros, model_alias, period, created_at, hold_expires_at, expires_at) \
                     SELECT community_id, user_id, idempotency_key, 'reaped', NULL, estimate_micros, \
                       model_alias, period, created_at, expires_at, $4 \
                     FROM budget_hold WHERE community_id = $1 AND (user_id, idempotency_key) IN ({BATCH}) \
                     ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind, \
                       actual_micros = NULL, estimate_micros = excluded.estimate_micros, \
                       model_alias = excluded.model_alias, period = excluded.period, \
                       created_at = excluded.created_at, hold_expires_at = excluded.hold_expires_at, \
                       expires_at = excluded.expires_at"
                ),
                values,
            )
            .await?;
            let deleted = txn
                .exec(
                    &format!(
                        "DELETE FROM budget_hold WHERE community_id = $1 \
                         AND (user_id, idempotency_key) IN ({BATCH})"
                    ),
                    batch_values(),
                )
                .await?;
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
