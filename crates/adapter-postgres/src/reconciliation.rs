//! The reconciliation queue on `reconciliation_queue`: holds whose guard
//! was dropped before the call was settled, kept durably until
//! reconciliation has the provider's word on their cost, as the
//! [`WorkQueue<Handover>`] port.
//!
//! A dropped guard [enqueues](WorkQueue::enqueue) its hold (once per
//! (community, user, key)); the reconciliation worker
//! [claims](WorkQueue::claim_due) a batch of due holds under a lease, asks
//! the provider what each call cost, then [completes](WorkQueue::complete)
//! it (the row is deleted) or [retries it at](WorkQueue::retry_at) a time of
//! its choosing. The queue is in the database, so a handed-over hold
//! survives a restart of the process that handed it over; a claimer that
//! dies leaves its rows to be claimed again when the lease ends.
//!
//! The rules (claim with `FOR UPDATE SKIP LOCKED` on PostgreSQL and under
//! `BEGIN IMMEDIATE` on SQLite, complete, retry, len, the insert's conflict
//! handling) are the ones of every SQL queue, in [`crate::work_queue`]; this
//! module brings only the table and its row ↔ [`Handover`] codec.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, Value};
use spendgate_domain::{CommunityId, Hold, HoldRef, Timestamp, Ttl};
use spendgate_ports::{Claimed, Clock, DeadLetter, Handover, RepoError, SystemClock, WorkQueue};

use crate::entity::reconciliation_queue::Model;
use crate::usage_log::{RowReader, check_trace_id};
use crate::work_queue::{QueueCodec, SqlQueue};

/// The durable reconciliation queue on `reconciliation_queue`.
///
/// Each row keeps the whole [`Handover`]: the hold as the reserve made it
/// (user, key, estimate, model alias, period, created_at, expires_at), the
/// trace id and when it was handed over. `created_at` is stamped from its
/// [`Clock`]; when an item is due is the caller's `due_at`.
#[derive(Clone)]
pub struct SqlReconciliationQueue {
    queue: SqlQueue<Reconciliation>,
}

impl std::fmt::Debug for SqlReconciliationQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlReconciliationQueue")
            .finish_non_exhaustive()
    }
}

/// `reconciliation_queue` rows ↔ [`Handover`]s.
struct Reconciliation;

impl QueueCodec for Reconciliation {
    type Item = Handover;
    type Row = Model;
    const TABLE: &'static str = "reconciliation_queue";

    fn encode(item: &Handover) -> Result<Vec<(&'static str, Value)>, RepoError> {
        check_trace_id(item.trace_id.as_deref())?;
        let hold = &item.hold;
        Ok(vec![
            ("estimate_micros", hold.estimate.get().into()),
            ("model_alias", hold.model.as_str().into()),
            ("period", hold.period.to_string().into()),
            ("hold_created_at", hold.created_at.as_millis().into()),
            ("hold_expires_at", hold.expires_at.as_millis().into()),
            ("trace_id", item.trace_id.clone().into()),
            ("handed_at", item.handed_at.as_millis().into()),
        ])
    }

    /// Refuses anything the domain would not accept.
    fn decode(model: Model) -> Result<Handover, RepoError> {
        let read = RowReader::new(&model.community_id, Self::TABLE);
        Ok(Handover {
            community: read.community()?,
            hold: Hold {
                user: read.user(model.user_id)?,
                key: read.key(model.idempotency_key)?,
                estimate: read.micros("estimate_micros", model.estimate_micros)?,
                model: read.model(model.model_alias)?,
                period: read.period(&model.period)?,
                created_at: read.timestamp("hold_created_at", model.hold_created_at)?,
                expires_at: read.timestamp("hold_expires_at", model.hold_expires_at)?,
            },
            trace_id: read.trace_id(model.trace_id)?,
            handed_at: read.timestamp("handed_at", model.handed_at)?,
        })
    }
}

impl SqlReconciliationQueue {
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
impl WorkQueue<Handover> for SqlReconciliationQueue {
    /// `INSERT … ON CONFLICT (community_id, user_id, idempotency_key) DO
    /// NOTHING`. A trace id longer than
    /// [`MAX_TRACE_ID_LEN`](crate::MAX_TRACE_ID_LEN) bytes is
    /// [`RepoError::InvalidInput`], with nothing written.
    async fn enqueue(&self, item: &Handover, due_at: Timestamp) -> Result<bool, RepoError> {
        self.queue.enqueue(item, due_at).await
    }

    /// Leases the due rows (`next_attempt_at <= now`, no running lease)
    /// with one `UPDATE … RETURNING`, earliest `next_attempt_at` first.
    ///
    /// A row that cannot be read back makes the call fail with
    /// [`RepoError::BadData`] (the first such row); the unreadable rows stay
    /// leased, and the readable rows of the same batch are handed back in
    /// the same transaction.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<Handover>>, RepoError> {
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

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter<Handover>>, RepoError> {
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
