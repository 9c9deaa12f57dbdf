//! The finalize outbox: finalizes that could not reach the budget store,
//! kept durably and replayed (law 5).
//!
//! A worker [`claims`](FinalizeOutbox::claim_due) a batch of due entries
//! under a lease, replays each against the store, then
//! [`marks it done`](FinalizeOutbox::mark_done) (the row is deleted) or
//! [`failed`](FinalizeOutbox::mark_failed) (retried after an exponential
//! backoff). A claimer that dies leaves its rows to be claimed again when
//! the lease ends; replaying a finalize twice is harmless because finalize is
//! idempotent per (community, user, key).
//!
//! Claiming is safe under concurrency: on PostgreSQL the due rows are
//! selected `FOR UPDATE SKIP LOCKED` and leased in the same statement; on
//! SQLite the same `UPDATE … RETURNING` runs in a `BEGIN IMMEDIATE`
//! transaction, so claimers take turns. Two claimers never get the same row
//! while its lease runs.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult, Statement,
};
use spendgate_domain::{
    CommunityId, IdempotencyKey, Micros, ModelAlias, Period, Settlement, Timestamp, TokenCounts,
    Ttl, UserId,
};
use spendgate_ports::{CostSource, RepoError};

use crate::entity::finalize_outbox::{ActiveModel, Column, Entity, Model};
use crate::error::repo_error;
use crate::transaction::begin_write;

/// A finalize waiting to be replayed, with what the usage log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFinalize {
    /// The community charged.
    pub community: CommunityId,
    /// User, key and actual cost.
    pub settlement: Settlement,
    /// The period the caller believes the hold belongs to.
    pub period: Period,
    /// The model alias used.
    pub model: ModelAlias,
    /// Tokens used.
    pub tokens: TokenCounts,
    /// Trace id, if any.
    pub trace_id: Option<String>,
    /// Which path committed the cost.
    pub source: CostSource,
}

/// An entry handed to one claimer until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedFinalize {
    /// The row id, for [`FinalizeOutbox::mark_done`] and
    /// [`FinalizeOutbox::mark_failed`].
    pub id: i64,
    /// The finalize to replay.
    pub pending: PendingFinalize,
    /// Failed replays so far.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Exponential backoff: the n-th failure (1-based) waits `base × 2^(n-1)`,
/// at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base_ms: i64,
    max_ms: i64,
}

impl Default for Backoff {
    /// One second, doubling, at most one hour.
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 3_600_000,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`.
    pub fn new(base: Ttl, max: Ttl) -> Self {
        Self {
            base_ms: base.as_millis(),
            max_ms: max.as_millis().max(base.as_millis()),
        }
    }

    /// The wait after the `failures`-th failure, in milliseconds.
    pub fn delay_ms(self, failures: u32) -> i64 {
        let exponent = failures.saturating_sub(1).min(62);
        let factor = 1_i64 << exponent;
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }
}

/// The longest `last_error` kept, in bytes; longer messages are cut at a
/// character boundary.
pub const MAX_ERROR_LEN: usize = 2_000;

/// The durable outbox on `finalize_outbox`.
#[derive(Debug, Clone)]
pub struct FinalizeOutbox {
    db: DatabaseConnection,
    backoff: Backoff,
}

fn to_i64(field: &str, value: u64) -> Result<i64, RepoError> {
    i64::try_from(value)
        .map_err(|_| RepoError::InvalidInput(format!("{field} {value} exceeds the BIGINT range")))
}

fn source_from(community: &str, text: &str) -> Result<CostSource, RepoError> {
    match text {
        "finalize" => Ok(CostSource::Finalize),
        "late_finalize" => Ok(CostSource::LateFinalize),
        "reconciliation" => Ok(CostSource::Reconciliation),
        other => Err(RepoError::BadData {
            community: community.to_owned(),
            field: "finalize_outbox.source".into(),
            reason: format!("unknown source {other:?}"),
        }),
    }
}

fn claimed(model: Model) -> Result<ClaimedFinalize, RepoError> {
    let community_text = model.community_id.clone();
    let bad = |field: &str, reason: String| RepoError::BadData {
        community: community_text.clone(),
        field: format!("finalize_outbox.{field}"),
        reason,
    };
    let tokens =
        |field: &str, v: i64| u64::try_from(v).map_err(|_| bad(field, format!("{v} is negative")));
    let pending = PendingFinalize {
        community: CommunityId::parse(model.community_id.as_str())
            .map_err(|e| bad("community_id", e.to_string()))?,
        settlement: Settlement {
            user: UserId::parse(model.user_id).map_err(|e| bad("user_id", e.to_string()))?,
            key: IdempotencyKey::parse(model.idempotency_key)
                .map_err(|e| bad("idempotency_key", e.to_string()))?,
            actual: Micros::new(model.actual_cost_micros)
                .map_err(|e| bad("actual_cost_micros", e.to_string()))?,
        },
        period: Period::parse(&model.period).map_err(|e| bad("period", e.to_string()))?,
        model: ModelAlias::parse(model.model_alias)
            .map_err(|e| bad("model_alias", e.to_string()))?,
        tokens: TokenCounts {
            prompt: tokens("prompt_tokens", model.prompt_tokens)?,
            completion: tokens("completion_tokens", model.completion_tokens)?,
        },
        trace_id: model.trace_id,
        source: source_from(&community_text, &model.source)?,
    };
    Ok(ClaimedFinalize {
        id: model.id,
        pending,
        attempts: u32::try_from(model.attempts)
            .map_err(|_| bad("attempts", format!("{} is negative", model.attempts)))?,
        last_error: model.last_error,
    })
}

#[derive(Debug, FromQueryResult)]
struct Attempts {
    attempts: i32,
}

#[derive(Debug, FromQueryResult)]
struct Count {
    count: i64,
}

impl FinalizeOutbox {
    /// An outbox on `db` (migrated) with the default [`Backoff`].
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_backoff(db, Backoff::default())
    }

    /// An outbox retrying failures after `backoff`.
    pub fn with_backoff(db: DatabaseConnection, backoff: Backoff) -> Self {
        Self { db, backoff }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Keeps `pending` durably, due at `now`. Returns `false` (and changes
    /// nothing) when an entry for the same (community, user, key) is already
    /// queued.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for token counts or a trace id that do
    /// not fit; [`RepoError::Unavailable`].
    #[tracing::instrument(skip_all, err, fields(community = %pending.community))]
    pub async fn enqueue(
        &self,
        pending: &PendingFinalize,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        if pending
            .trace_id
            .as_ref()
            .is_some_and(|t| t.len() > crate::usage_log::MAX_TRACE_ID_LEN)
        {
            return Err(RepoError::InvalidInput("trace id too long".into()));
        }
        let row = ActiveModel {
            id: NotSet,
            community_id: Set(pending.community.to_string()),
            user_id: Set(pending.settlement.user.to_string()),
            idempotency_key: Set(pending.settlement.key.to_string()),
            actual_cost_micros: Set(pending.settlement.actual.get()),
            period: Set(pending.period.to_string()),
            model_alias: Set(pending.model.to_string()),
            prompt_tokens: Set(to_i64("prompt tokens", pending.tokens.prompt)?),
            completion_tokens: Set(to_i64("completion tokens", pending.tokens.completion)?),
            trace_id: Set(pending.trace_id.clone()),
            source: Set(pending.source.as_str().to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(now.as_millis()),
            claimed_until: Set(None),
            last_error: Set(None),
            created_at: Set(now.as_millis()),
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

    /// Claims up to `limit` entries due at `now` (oldest first) and leases
    /// them until `now + lease`; no other claimer gets them before then.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for a row that
    /// cannot be read back (it stays leased, and is reported again after
    /// the lease).
    #[tracing::instrument(skip_all, err, fields(limit))]
    pub async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<ClaimedFinalize>, RepoError> {
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
        let stmt = Statement::from_sql_and_values(
            self.backend(),
            sql,
            [
                until.as_millis().into(),
                now.as_millis().into(),
                i64::from(limit).into(),
            ],
        );
        let txn = begin_write(&self.db).await.map_err(repo_error)?;
        let rows = Model::find_by_statement(stmt)
            .all(&txn)
            .await
            .map_err(repo_error)?;
        txn.commit().await.map_err(repo_error)?;
        let mut claimed = rows
            .into_iter()
            .map(claimed)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Deletes an entry whose replay succeeded. Returns whether it was
    /// still there.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    #[tracing::instrument(skip_all, err, fields(id))]
    pub async fn mark_done(&self, id: i64) -> Result<bool, RepoError> {
        let result = Entity::delete_by_id(id)
            .exec(&self.db)
            .await
            .map_err(repo_error)?;
        Ok(result.rows_affected > 0)
    }

    /// Records a failed replay: one more attempt, `last_error` kept, the
    /// lease dropped and the entry due again after the backoff. Returns when
    /// it is next due, or `None` if the entry is gone.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    #[tracing::instrument(skip_all, err, fields(id))]
    pub async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, RepoError> {
        let mut message = error.to_owned();
        if message.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let backend = self.backend();
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let txn = begin_write(&self.db).await.map_err(repo_error)?;
        let select = Statement::from_sql_and_values(
            backend,
            format!("SELECT attempts FROM finalize_outbox WHERE id = $1{lock}"),
            [id.into()],
        );
        let Some(row) = Attempts::find_by_statement(select)
            .one(&txn)
            .await
            .map_err(repo_error)?
        else {
            txn.rollback().await.map_err(repo_error)?;
            return Ok(None);
        };
        let failures = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        let attempts = i32::try_from(failures).unwrap_or(i32::MAX);
        let due = now
            .plus_millis(self.backoff.delay_ms(failures))
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let update = Statement::from_sql_and_values(
            backend,
            "UPDATE finalize_outbox SET attempts = $1, next_attempt_at = $2, \
             claimed_until = NULL, last_error = $3 WHERE id = $4",
            [
                attempts.into(),
                due.as_millis().into(),
                message.into(),
                id.into(),
            ],
        );
        txn.execute_raw(update).await.map_err(repo_error)?;
        txn.commit().await.map_err(repo_error)?;
        Ok(Some(due))
    }

    /// How many entries are queued (due or not).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    #[tracing::instrument(skip_all, err)]
    pub async fn queued(&self) -> Result<u64, RepoError> {
        let stmt = Statement::from_string(
            self.backend(),
            "SELECT COUNT(*) AS count FROM finalize_outbox",
        );
        let count = Count::find_by_statement(stmt)
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map_or(0, |c| c.count);
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
