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
//!
//! The queue's rules (claim, complete, retry, len, the insert's conflict
//! handling) are the ones of every SQL queue, in [`crate::work_queue`];
//! this module brings only the table and its row ↔ settlement codec.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, Value};
use spendgate_domain::{CommunityId, HoldRef, Settlement, Timestamp, Ttl};
use spendgate_ports::{
    Claimed, Clock, DeadLetter, PendingSettlement, RepoError, SystemClock, WorkQueue,
};

use crate::entity::finalize_outbox::Model;
use crate::usage_log::{RowReader, check_trace_id, to_i64};
use crate::work_queue::{QueueCodec, SqlQueue};

/// The durable finalize queue on `finalize_outbox`.
///
/// `created_at` is stamped from its [`Clock`]; when an entry is due is the
/// caller's `due_at`.
#[derive(Clone)]
pub struct FinalizeOutbox {
    queue: SqlQueue<Outbox>,
}

impl std::fmt::Debug for FinalizeOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalizeOutbox").finish_non_exhaustive()
    }
}

/// `finalize_outbox` rows ↔ [`PendingSettlement`]s.
struct Outbox;

impl QueueCodec for Outbox {
    type Item = PendingSettlement;
    type Row = Model;
    const TABLE: &'static str = "finalize_outbox";

    fn encode(item: &PendingSettlement) -> Result<Vec<(&'static str, Value)>, RepoError> {
        check_trace_id(item.trace_id.as_deref())?;
        Ok(vec![
            ("actual_cost_micros", item.settlement.actual.get().into()),
            ("period", item.period.to_string().into()),
            ("model_alias", item.model.as_str().into()),
            (
                "prompt_tokens",
                to_i64("prompt tokens", item.tokens.prompt)?.into(),
            ),
            (
                "completion_tokens",
                to_i64("completion tokens", item.tokens.completion)?.into(),
            ),
            ("trace_id", item.trace_id.clone().into()),
            ("source", item.source.as_str().into()),
            ("estimate_micros", item.estimate.get().into()),
            (
                "hold_created_at",
                item.hold_created_at.map(Timestamp::as_millis).into(),
            ),
        ])
    }

    /// Refuses anything the domain would not accept.
    fn decode(model: Model) -> Result<PendingSettlement, RepoError> {
        let read = RowReader::new(&model.community_id, Self::TABLE);
        Ok(PendingSettlement {
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
            hold_created_at: model
                .hold_created_at
                .map(|ms| read.timestamp("hold_created_at", ms))
                .transpose()?,
        })
    }
}

impl FinalizeOutbox {
    /// A queue on `db` (migrated), stamping `created_at` with the system
    /// clock.
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_clock(db, Arc::new(SystemClock))
    }

    /// A queue stamping `created_at` from `clock`.
    pub fn with_clock(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self {
            queue: SqlQueue::new(db, clock),
        }
    }
}

#[async_trait]
impl WorkQueue<PendingSettlement> for FinalizeOutbox {
    /// `INSERT … ON CONFLICT (community_id, user_id, idempotency_key) DO
    /// NOTHING`. Token counts past the `BIGINT` range and trace ids longer
    /// than [`MAX_TRACE_ID_LEN`](crate::MAX_TRACE_ID_LEN) bytes are
    /// [`RepoError::InvalidInput`], with nothing written.
    async fn enqueue(
        &self,
        item: &PendingSettlement,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.queue.enqueue(item, due_at).await
    }

    /// Leases the due rows (`next_attempt_at <= now`, no running lease)
    /// with one `UPDATE … RETURNING`, earliest `next_attempt_at` first.
    ///
    /// A row that cannot be read back makes the call fail with
    /// [`RepoError::BadData`] (the first such row); the unreadable rows stay
    /// leased, and the readable rows of the same batch are handed back in
    /// the same transaction, so the next claim gets them instead of waiting
    /// for the lease to end behind a bad row.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<PendingSettlement>>, RepoError> {
        self.queue.claim_due(now, limit, lease).await
    }

    /// `DELETE` of the (community, user, key) row.
    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        self.queue.complete(community, hold, instance).await
    }

    /// One `UPDATE`: `attempts + 1` (saturating), `last_error` cut to
    /// [`MAX_ERROR_LEN`](crate::MAX_ERROR_LEN) bytes at a character
    /// boundary, lease dropped, `next_attempt_at = due_at`.
    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.queue
            .retry_at(community, hold, instance, error, due_at)
            .await
    }

    /// One `UPDATE`: `attempts + 1`, `last_error` cut as for a retry,
    /// lease dropped, `dead_at = at` and `next_attempt_at` past every
    /// instant.
    async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        self.queue
            .dead_letter(community, hold, instance, error, at)
            .await
    }

    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<Vec<DeadLetter<PendingSettlement>>, RepoError> {
        self.queue.dead_letters(limit).await
    }

    async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        self.queue.dead_letter_count().await
    }

    async fn len(&self) -> Result<u64, RepoError> {
        self.queue.len().await
    }

    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        self.queue.pending(community).await
    }
}
