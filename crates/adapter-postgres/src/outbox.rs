//! The finalize queue on `finalize_outbox`: settlements kept durably until
//! they reached the budget store and the usage log (law 5), as the
//! [`WorkQueue<PendingSettlement>`] port.
//!
//! A settlement is [enqueued](WorkQueue::enqueue) before the store is
//! called (a write-ahead journal); a worker [claims](WorkQueue::claim_due)
//! a batch of due entries under a lease, replays each, then
//! [completes](WorkQueue::complete) it (the row is deleted) or
//! [retries it at](WorkQueue::retry_at) a time of the caller's choosing (the
//! backoff policy belongs to the caller). A claimer that dies leaves its rows
//! to be claimed again when the lease ends; replaying a settlement twice is
//! harmless because finalize and the usage log are idempotent per
//! (community, user, key), which is also the queue's key.
//!
//! Claiming is safe under concurrency: on PostgreSQL the due rows are
//! selected `FOR UPDATE SKIP LOCKED` and leased in the same statement; on
//! SQLite the same `UPDATE … RETURNING` runs in a `BEGIN IMMEDIATE`
//! transaction, so claimers take turns. Two claimers never get the same row
//! while its lease runs.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, Statement,
};
use spendgate_domain::{CommunityId, HoldRef, Settlement, Timestamp, Ttl};
use spendgate_ports::{Claimed, Clock, PendingSettlement, RepoError, SystemClock, WorkQueue};

use crate::entity::finalize_outbox::{ActiveModel, Column, Entity, Model};
use crate::error::repo_error;
use crate::transaction::begin_write;
use crate::usage_log::{RowReader, check_trace_id, to_i64};

/// The longest `last_error` kept, in bytes; longer messages are cut at a
/// character boundary.
pub const MAX_ERROR_LEN: usize = 2_000;

/// Row ids per statement when a claim hands rows back (well under both
/// backends' parameter limits).
const IDS_PER_STATEMENT: usize = 1_000;

/// The durable finalize queue on `finalize_outbox`.
///
/// `created_at` is stamped from its [`Clock`]; when an entry is due is the
/// caller's `due_at`.
#[derive(Clone)]
pub struct FinalizeOutbox {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FinalizeOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalizeOutbox").finish_non_exhaustive()
    }
}

/// `error` cut to at most [`MAX_ERROR_LEN`] bytes, at a character boundary.
fn cut_error(error: &str) -> &str {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// A leased row as a [`Claimed`] settlement, refusing anything the domain
/// would not accept.
fn claimed(model: Model) -> Result<Claimed<PendingSettlement>, RepoError> {
    let read = RowReader::new(&model.community_id, "finalize_outbox");
    let item = PendingSettlement {
        community: read.community()?,
        settlement: Settlement {
            user: read.user(model.user_id)?,
            key: read.key(model.idempotency_key)?,
            actual: read.micros("actual_cost_micros", model.actual_cost_micros)?,
        },
        period: read.period(&model.period)?,
        model: read.model(model.model_alias)?,
        estimate: read.micros("estimate_micros", model.estimate_micros)?,
        tokens: read.tokens(model.prompt_tokens, model.completion_tokens)?,
        trace_id: read.trace_id(model.trace_id)?,
        source: read.source(&model.source)?,
    };
    Ok(Claimed {
        item,
        attempts: u32::try_from(model.attempts)
            .map_err(|_| read.bad("attempts", format!("{} is negative", model.attempts)))?,
        last_error: model.last_error,
    })
}

#[derive(Debug, FromQueryResult)]
struct Count {
    count: i64,
}

impl FinalizeOutbox {
    /// A queue on `db` (migrated), stamping `created_at` with the system
    /// clock.
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_clock(db, Arc::new(SystemClock))
    }

    /// A queue stamping `created_at` from `clock`.
    pub fn with_clock(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    fn statement(&self, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(self.backend(), sql, values)
    }
}

#[async_trait]
impl WorkQueue<PendingSettlement> for FinalizeOutbox {
    /// `INSERT … ON CONFLICT (community_id, user_id, idempotency_key) DO
    /// NOTHING`. Token counts past the `BIGINT` range and trace ids longer
    /// than [`MAX_TRACE_ID_LEN`](crate::MAX_TRACE_ID_LEN) bytes are
    /// [`RepoError::InvalidInput`], with nothing written.
    #[tracing::instrument(skip_all, err, fields(community = %item.community))]
    async fn enqueue(
        &self,
        item: &PendingSettlement,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        check_trace_id(item.trace_id.as_deref())?;
        let row = ActiveModel {
            id: NotSet,
            community_id: Set(item.community.to_string()),
            user_id: Set(item.settlement.user.to_string()),
            idempotency_key: Set(item.settlement.key.to_string()),
            actual_cost_micros: Set(item.settlement.actual.get()),
            period: Set(item.period.to_string()),
            model_alias: Set(item.model.to_string()),
            prompt_tokens: Set(to_i64("prompt tokens", item.tokens.prompt)?),
            completion_tokens: Set(to_i64("completion tokens", item.tokens.completion)?),
            trace_id: Set(item.trace_id.clone()),
            source: Set(item.source.as_str().to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(due_at.as_millis()),
            claimed_until: Set(None),
            last_error: Set(None),
            created_at: Set(self.clock.now().as_millis()),
            estimate_micros: Set(item.estimate.get()),
        };
        let inserted = Entity::insert(row)
            .on_conflict(
                OnConflict::columns([Column::CommunityId, Column::UserId, Column::IdempotencyKey])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(repo_error)?;
        Ok(inserted > 0)
    }

    /// Leases the due rows (`next_attempt_at <= now`, no running lease)
    /// with one `UPDATE … RETURNING`, earliest `next_attempt_at` first.
    ///
    /// A row that cannot be read back makes the call fail with
    /// [`RepoError::BadData`] (the first such row); the unreadable rows stay
    /// leased, and the readable rows of the same batch are handed back in
    /// the same transaction, so the next claim gets them instead of waiting
    /// for the lease to end behind a bad row.
    #[tracing::instrument(skip_all, err, fields(limit))]
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<PendingSettlement>>, RepoError> {
        let until = now
            .plus(lease)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let lock = match self.backend() {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = format!(
            "UPDATE finalize_outbox SET claimed_until = $1 WHERE id IN ( \
               SELECT id FROM finalize_outbox \
               WHERE next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
               ORDER BY next_attempt_at, id LIMIT $3 {lock}) \
             RETURNING *"
        );
        let stmt = self.statement(
            &sql,
            vec![
                until.as_millis().into(),
                now.as_millis().into(),
                i64::from(limit).into(),
            ],
        );
        let txn = begin_write(&self.db).await.map_err(repo_error)?;
        let mut rows = Model::find_by_statement(stmt)
            .all(&txn)
            .await
            .map_err(repo_error)?;
        // RETURNING has no order of its own.
        rows.sort_by_key(|row| (row.next_attempt_at, row.id));
        let mut items = Vec::with_capacity(rows.len());
        let mut readable = Vec::with_capacity(rows.len());
        let mut first_bad = None;
        for row in rows {
            let id = row.id;
            match claimed(row) {
                Ok(item) => {
                    items.push(item);
                    readable.push(id);
                }
                Err(error) => {
                    first_bad.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_bad {
            for ids in readable.chunks(IDS_PER_STATEMENT) {
                let placeholders = (1..=ids.len())
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let release = self.statement(
                    &format!(
                        "UPDATE finalize_outbox SET claimed_until = NULL WHERE id IN ({placeholders})"
                    ),
                    ids.iter().map(|&id| id.into()).collect(),
                );
                txn.execute_raw(release).await.map_err(repo_error)?;
            }
            txn.commit().await.map_err(repo_error)?;
            return Err(error);
        }
        txn.commit().await.map_err(repo_error)?;
        Ok(items)
    }

    /// `DELETE` of the (community, user, key) row.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn complete(&self, community: &CommunityId, hold: &HoldRef) -> Result<bool, RepoError> {
        let result = Entity::delete_many()
            .filter(Column::CommunityId.eq(community.as_str()))
            .filter(Column::UserId.eq(hold.user.as_str()))
            .filter(Column::IdempotencyKey.eq(hold.key.as_str()))
            .exec(&self.db)
            .await
            .map_err(repo_error)?;
        Ok(result.rows_affected > 0)
    }

    /// One `UPDATE`: `attempts + 1` (saturating), `last_error` cut to
    /// [`MAX_ERROR_LEN`] bytes at a character boundary, lease dropped,
    /// `next_attempt_at = due_at`.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        let update = self.statement(
            "UPDATE finalize_outbox SET \
               attempts = CASE WHEN attempts < $1 THEN attempts + 1 ELSE attempts END, \
               last_error = $2, claimed_until = NULL, next_attempt_at = $3 \
             WHERE community_id = $4 AND user_id = $5 AND idempotency_key = $6",
            vec![
                i32::MAX.into(),
                cut_error(error).into(),
                due_at.as_millis().into(),
                community.as_str().into(),
                hold.user.as_str().into(),
                hold.key.as_str().into(),
            ],
        );
        let result = self.db.execute_raw(update).await.map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }

    #[tracing::instrument(skip_all, err)]
    async fn len(&self) -> Result<u64, RepoError> {
        let stmt = self.statement("SELECT COUNT(*) AS count FROM finalize_outbox", vec![]);
        let count = Count::find_by_statement(stmt)
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map_or(0, |c| c.count);
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
