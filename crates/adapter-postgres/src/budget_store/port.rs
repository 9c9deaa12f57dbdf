//! The [`BudgetStore`] port on [`SqlBudgetStore`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use sea_orm::{FromQueryResult, Statement};
use spendgate_domain::{
    Admission, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, HoldState,
    Limits, Micros, Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
    UnheldCommit, UserId, UserSpend, admit,
};
use spendgate_ports::{
    BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage, user_after,
};

use super::rows::{CountersRow, StatusRow, UserRow, counters_from, limits_from, user_from};
use super::writes::{Write, counters_write, settle_write, user_write};
use super::{REAP_BATCH, SqlBudgetStore, domain, money, unknown};
use crate::error::store_error;

#[async_trait]
impl BudgetStore for SqlBudgetStore {
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        if self.postgres() {
            return self.call_reserve(community, reservation, now).await;
        }
        let txn = self.begin(community).await?;
        let hold_ref = HoldRef {
            user: reservation.user.clone(),
            key: reservation.key.clone(),
        };
        let Some(found) = txn.lookup(&hold_ref, now, false).await? else {
            return Err(StoreError::NotConfigured(community.clone()));
        };
        if let Some(hold) = found.hold {
            return Ok(ReserveOutcome::AlreadyReserved { hold });
        }
        if found.marker.is_some() {
            return Ok(ReserveOutcome::AlreadySettled);
        }
        let limits = found
            .limits
            .ok_or_else(|| StoreError::NotConfigured(community.clone()))?;
        let (period, expires_at) = reservation.timing(now).map_err(domain(community))?;
        let (mut counters, spend) = txn.sums(period, &reservation.user).await?;
        let estimate = reservation.estimate;
        let admission = admit(
            limits,
            counters.committed,
            counters.reserved,
            counters.warned,
            spend,
            estimate,
            self.policy,
        )
        .map_err(|e| domain(community)(money(e)))?;
        let (used_after, spend, warning) = match admission {
            Admission::Denied(outcome) => return Ok(outcome),
            Admission::Accepted {
                used_after,
                reserved,
                user,
                warning,
            } => {
                counters.reserved = reserved;
                (used_after, user, warning)
            }
        };
        counters.holds = counters
            .holds
            .checked_add(1)
            .ok_or_else(|| StoreError::Overflow("hold count".into()))?;
        counters.warned |= warning;
        txn.apply(vec![
            counters_write(period, counters)?,
            user_write(period, &reservation.user, spend),
            Write {
                sql: "INSERT INTO budget_hold (community_id, user_id, idempotency_key, estimate_micros, \
                      model_alias, period, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                values: vec![
                    reservation.user.as_str().into(),
                    reservation.key.as_str().into(),
                    estimate.get().into(),
                    reservation.model.as_str().into(),
                    period.to_string().into(),
                    now.as_millis().into(),
                    expires_at.as_millis().into(),
                ],
            },
        ])
        .await?;
        txn.commit().await?;
        Ok(ReserveOutcome::Reserved {
            remaining: limits.limit.headroom_after(used_after),
            limit: limits.limit,
            warning,
            expires_at,
        })
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        if self.postgres() {
            return self.call_extend(community, hold, ttl, now).await;
        }
        let wanted = now.plus(ttl).map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let Some(found) = txn.lookup(hold, now, false).await? else {
            return Err(unknown(hold));
        };
        match found.hold {
            Some(found) if found.is_live_at(now) => {
                let expires_at = found.expires_at.max(wanted);
                txn.exec(
                    "UPDATE budget_hold SET expires_at = $4 \
                     WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3",
                    vec![
                        hold.user.as_str().into(),
                        hold.key.as_str().into(),
                        expires_at.as_millis().into(),
                    ],
                )
                .await?;
                txn.commit().await?;
                Ok(ExtendOutcome::Extended { expires_at })
            }
            Some(_) => Ok(ExtendOutcome::NotLive),
            None if found.marker.is_some() => Ok(ExtendOutcome::NotLive),
            None => Err(unknown(hold)),
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold_ref = HoldRef {
            user: settlement.user.clone(),
            key: settlement.key.clone(),
        };
        if self.postgres() {
            return self
                .call_settle(community, &hold_ref, settlement.actual, now, None)
                .await;
        }
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let Some(found) = txn.lookup(&hold_ref, now, false).await? else {
            return Err(unknown(&hold_ref));
        };
        txn.settle_found(found, &hold_ref, settlement.actual, marker_expires)
            .await?
            .ok_or_else(|| unknown(&hold_ref))
    }

    /// Locks the community row first (creating it, without limits, when
    /// the community has none), then reads the hold and marker after the
    /// lock: see `Txn::lookup`.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold_ref = HoldRef {
            user: commit.user.clone(),
            key: commit.key.clone(),
        };
        if self.postgres() {
            return self
                .call_settle(community, &hold_ref, commit.actual, now, Some(commit))
                .await;
        }
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let found = txn
            .lookup(&hold_ref, now, true)
            .await?
            .ok_or_else(|| StoreError::Corrupt("community row vanished under its lock".into()))?;
        let limits = found.limits;
        // Where a hold or marker exists it is exactly a finalize (the
        // hold's period wins); `settle_found` consumes the transaction, so
        // the check comes first.
        if found.hold.is_some() || found.marker.is_some() {
            return txn
                .settle_found(found, &hold_ref, commit.actual, marker_expires)
                .await?
                .ok_or_else(|| StoreError::Corrupt("found hold or marker vanished".into()));
        }
        // Nothing held: commit to the given period, releasing nothing.
        let unheld = commit.as_hold(now);
        let mut writes = Vec::new();
        let receipt = txn
            .commit_cost(&unheld, commit.actual, false, limits, &mut writes)
            .await?;
        writes.push(settle_write(&hold_ref, commit.actual, marker_expires));
        txn.apply(writes).await?;
        txn.commit().await?;
        Ok(FinalizeOutcome::CommittedWithoutHold(receipt))
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let settlement = Settlement {
            user: hold.user.clone(),
            key: hold.key.clone(),
            actual: Micros::ZERO,
        };
        self.finalize(community, &settlement, now).await
    }

    /// Runs reap batches (on PostgreSQL one call of `spendgate_budget_reap`
    /// each, on SQLite `SqlBudgetStore::reap_batch`) until one comes back
    /// short; each batch is a transaction of its own, so batches already
    /// committed stay when a later one fails (a later reap finishes the
    /// work).
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        let mut total = Reaped::default();
        let mut first = true;
        loop {
            let batch = if self.postgres() {
                self.call_reap_batch(community, now, first).await?
            } else {
                self.reap_batch(community, now, first).await?
            };
            first = false;
            total.count = total
                .count
                .checked_add(batch.count)
                .ok_or_else(|| StoreError::Overflow("reaped count".into()))?;
            total.reclaimed = total
                .reclaimed
                .checked_add(batch.reclaimed)
                .map_err(|e| domain(community)(money(e)))?;
            if batch.count < u64::from(REAP_BATCH) {
                return Ok(total);
            }
        }
    }

    /// One round trip: the limits, the period's counters and the one user's
    /// sums (when asked for) as rows of one `UNION ALL`, each found by its
    /// primary key.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        const LIMITS_AND_TOTALS: &str = "SELECT 'l' AS kind, CAST(NULL AS TEXT) AS user_id, CAST(limit_micros AS BIGINT) AS a, \
               CAST(per_user_cap_micros AS BIGINT) AS b, CAST(NULL AS BIGINT) AS c, CAST(NULL AS BIGINT) AS d \
               FROM budget_community WHERE community_id = $1 \
             UNION ALL SELECT 'p', CAST(NULL AS TEXT), CAST(committed_micros AS BIGINT), \
               CAST(reserved_micros AS BIGINT), CAST(holds AS BIGINT), \
               CAST(CASE WHEN warned THEN 1 ELSE 0 END AS BIGINT) \
               FROM budget_period WHERE community_id = $1 AND period = $2";
        let mut values: Vec<sea_orm::Value> =
            vec![community.as_str().into(), period.to_string().into()];
        let sql = match user {
            Some(u) => {
                values.push(u.as_str().into());
                format!(
                    "{LIMITS_AND_TOTALS} UNION ALL SELECT 'u', CAST(user_id AS TEXT), \
                       CAST(committed_micros AS BIGINT), CAST(reserved_micros AS BIGINT), \
                       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT) \
                       FROM budget_user_period \
                       WHERE community_id = $1 AND period = $2 AND user_id = $3"
                )
            }
            None => LIMITS_AND_TOTALS.to_owned(),
        };
        let stmt = Statement::from_sql_and_values(self.db.get_database_backend(), sql, values);
        let rows = StatusRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .map_err(store_error)?;
        let mut status = BudgetStatus {
            period,
            limits: None,
            committed: Micros::ZERO,
            reserved: Micros::ZERO,
            holds: 0,
            warned: false,
            user: user.map(|_| UserSpend::default()),
        };
        for row in rows {
            match row.kind.as_str() {
                "l" => status.limits = limits_from(row.a, row.b)?,
                "p" => {
                    let c = counters_from(CountersRow {
                        committed_micros: row.a.unwrap_or_default(),
                        reserved_micros: row.b.unwrap_or_default(),
                        holds: row.c.unwrap_or_default(),
                        warned: row.d.unwrap_or_default() != 0,
                    })?;
                    (
                        status.committed,
                        status.reserved,
                        status.holds,
                        status.warned,
                    ) = (c.committed, c.reserved, c.holds, c.warned);
                }
                _ => {
                    let (_, spend) = user_from(&UserRow {
                        user_id: row.user_id.unwrap_or_default(),
                        committed_micros: row.a.unwrap_or_default(),
                        reserved_micros: row.b.unwrap_or_default(),
                    })?;
                    status.user = Some(spend);
                }
            }
        }
        Ok(status)
    }

    /// A keyset page in `user_id` order over the table's primary key: one
    /// more row than the page is read to tell whether users follow.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        let after = cursor
            .map(user_after)
            .transpose()
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let mut values: Vec<sea_orm::Value> =
            vec![community.as_str().into(), period.to_string().into()];
        let resume = match &after {
            Some(a) => {
                values.push(a.as_str().into());
                "AND user_id > $3"
            }
            None => "",
        };
        let read = i64::from(u16::from(size)) + 1;
        values.push(read.into());
        let sql = format!(
            "SELECT CAST(user_id AS TEXT) AS user_id, CAST(committed_micros AS BIGINT) AS committed_micros, \
               CAST(reserved_micros AS BIGINT) AS reserved_micros \
               FROM budget_user_period WHERE community_id = $1 AND period = $2 {resume} \
               AND (committed_micros > 0 OR reserved_micros > 0) \
               ORDER BY user_id LIMIT ${}",
            values.len()
        );
        let stmt = Statement::from_sql_and_values(self.db.get_database_backend(), sql, values);
        let rows = UserRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .map_err(store_error)?;
        let more = rows.len() > size.get();
        let users = rows
            .iter()
            .take(size.get())
            .map(user_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UsersPage::ordered(users, more))
    }

    /// One range scan of the holds expired at `now` (see
    /// `SqlBudgetStore::due`); exact: it names every community with an
    /// unreaped expired hold and no other.
    #[tracing::instrument(skip_all, err)]
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.due(now, limit).await
    }

    /// One read-only statement, without the community's lock.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        self.lookup_state(community, hold, now).await
    }

    /// One transaction under the community's lock, like every write.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        self.restore(community, period, committed).await
    }

    /// One upsert of the community's row (it waits for the row's lock
    /// like any other write) whose `WHERE` keeps limits of a newer version
    /// (`budget_community.limits_version`): on PostgreSQL one call of
    /// `spendgate_budget_set_limits`, which bounds the wait.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        if self.postgres() {
            return self.call_set_limits(community, limits, version).await;
        }
        let txn = self.begin(community).await?;
        txn.exec(
            "INSERT INTO budget_community (community_id, limit_micros, per_user_cap_micros, limits_version) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (community_id) DO UPDATE SET limit_micros = excluded.limit_micros, \
             per_user_cap_micros = excluded.per_user_cap_micros, limits_version = excluded.limits_version \
             WHERE budget_community.limits_version <= excluded.limits_version",
            vec![
                limits.limit.get().into(),
                limits.per_user_cap.map(Micros::get).into(),
                version.get().into(),
            ],
        )
        .await?;
        txn.commit().await
    }
}
