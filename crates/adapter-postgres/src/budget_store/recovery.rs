//! The reads and the repair the workers rely on: which communities have
//! holds due ([`SqlBudgetStore::due`]), what is kept for one call
//! ([`SqlBudgetStore::lookup_state`]) and restoring a period's committed
//! sums ([`SqlBudgetStore::restore`]).

use std::collections::BTreeMap;

use sea_orm::{FromQueryResult, Statement, Value};
use spendgate_domain::{CommunityId, HoldRef, HoldState, Micros, Period, Timestamp, UserId};
use spendgate_ports::StoreError;

use super::rows::LookupRow;
use super::writes::counters_write;
use super::{SqlBudgetStore, corrupt, domain, money};
use crate::error::store_error;

/// Most users one restore statement upserts (two parameters each), well
/// under either backend's limit on bound parameters.
pub(super) const RESTORE_USERS_PER_STATEMENT: usize = 500;

#[derive(Debug, FromQueryResult)]
struct DueRow {
    community_id: String,
}

impl SqlBudgetStore {
    /// Communities with a hold expired at `now`, earliest due first (ties
    /// by id), at most `limit`: one range scan of the `budget_hold_due`
    /// index (`expires_at`, `community_id`; migration `m20261128_000010`),
    /// so it reads the expired holds only, not every live one.
    pub(super) async fn due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stmt = Statement::from_sql_and_values(
            self.db.get_database_backend(),
            "SELECT community_id, MIN(expires_at) AS due FROM budget_hold \
             WHERE expires_at <= $1 GROUP BY community_id \
             ORDER BY due, community_id LIMIT $2",
            [now.as_millis().into(), limit.into()],
        );
        DueRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|row| {
                CommunityId::parse(row.community_id).map_err(|e| corrupt("hold community", e))
            })
            .collect()
    }

    /// The hold of (user, key), else its marker unexpired at `now`, else
    /// nothing: one read-only statement (one snapshot), no lock.
    pub(super) async fn lookup_state(
        &self,
        community: &CommunityId,
        hold_ref: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        let stmt = Statement::from_sql_and_values(
            self.db.get_database_backend(),
            "SELECT CAST(NULL AS BIGINT) AS limit_micros, CAST(NULL AS BIGINT) AS per_user_cap_micros, \
               h.estimate_micros AS h_estimate, h.model_alias AS h_model, h.period AS h_period, \
               h.created_at AS h_created, h.expires_at AS h_expires, \
               m.kind AS m_kind, m.actual_micros AS m_actual, m.estimate_micros AS m_estimate, \
               m.model_alias AS m_model, m.period AS m_period, m.created_at AS m_created, \
               m.hold_expires_at AS m_hold_expires \
             FROM (SELECT 1 AS one) x \
             LEFT JOIN budget_hold h ON h.community_id = $1 \
               AND h.user_id = $2 AND h.idempotency_key = $3 \
             LEFT JOIN budget_marker m ON m.community_id = $1 \
               AND m.user_id = $2 AND m.idempotency_key = $3 AND m.expires_at > $4",
            [
                community.as_str().into(),
                hold_ref.user.as_str().into(),
                hold_ref.key.as_str().into(),
                now.as_millis().into(),
            ],
        );
        let Some(row) = LookupRow::find_by_statement(stmt)
            .one(&self.db)
            .await
            .map_err(store_error)?
        else {
            return Ok(HoldState::Unknown);
        };
        Ok(match row.into_found(hold_ref)? {
            (Some(hold), _) => HoldState::Held { hold },
            (None, Some(settled)) => HoldState::Settled { settled },
            (None, None) => HoldState::Unknown,
        })
    }

    /// Sets `period`'s committed sums from `committed` in one transaction
    /// under the community's lock (the row is created, without limits,
    /// when missing, as `commit_unheld` does): the period's committed
    /// becomes the total, every listed user's committed its sum, every
    /// other user's 0; reserved, holds, the warning flag, limits and
    /// markers stay. User rows left with both sums 0 are deleted (absent
    /// and zero read the same). The total is checked before anything is
    /// written.
    pub(super) async fn restore(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        let total = committed
            .values()
            .try_fold(Micros::ZERO, |sum, c| sum.checked_add(*c))
            .map_err(|e| domain(community)(money(e)))?;
        let txn = self.begin(community).await?;
        if txn.lock_community(true).await?.is_none() {
            return Err(StoreError::Corrupt(
                "community row vanished under its lock".into(),
            ));
        }
        let mut counters = txn.counters(period).await?;
        counters.committed = total;
        txn.apply(vec![counters_write(period, counters)?]).await?;
        let period_value = || -> Value { period.to_string().into() };
        txn.exec(
            "DELETE FROM budget_user_period WHERE community_id = $1 AND period = $2 \
             AND reserved_micros = 0",
            vec![period_value()],
        )
        .await?;
        txn.exec(
            "UPDATE budget_user_period SET committed_micros = 0 \
             WHERE community_id = $1 AND period = $2",
            vec![period_value()],
        )
        .await?;
        let listed: Vec<(&UserId, &Micros)> = committed
            .iter()
            .filter(|(_, c)| **c != Micros::ZERO)
            .collect();
        for chunk in listed.chunks(RESTORE_USERS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO budget_user_period \
                 (community_id, period, user_id, committed_micros, reserved_micros) VALUES ",
            );
            let mut values = vec![period_value()];
            for (i, (user, cost)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                // $1 community, $2 period, then (user, committed) pairs.
                let n = 3 + 2 * i;
                sql.push_str(&format!("($1, $2, ${n}, ${}, 0)", n + 1));
                values.push(user.as_str().into());
                values.push(cost.get().into());
            }
            sql.push_str(
                " ON CONFLICT (community_id, period, user_id) DO UPDATE SET \
                 committed_micros = excluded.committed_micros",
            );
            txn.exec(&sql, values).await?;
        }
        txn.commit().await
    }
}
