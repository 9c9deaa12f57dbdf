//! The rules of a durable [`WorkQueue`](spendgate_ports::WorkQueue) on SQL,
//! written once for every queue table: [`FinalizeOutbox`](crate::FinalizeOutbox)
//! on `finalize_outbox` and
//! [`SqlReconciliationQueue`](crate::SqlReconciliationQueue) on
//! `reconciliation_queue`.
//!
//! A queue table has the columns `id` (`BIGINT` primary key),
//! `community_id`, `user_id`, `idempotency_key` and `hold_created_at`
//! (nullable: which use of the key, when known; the four UNIQUE together,
//! the queue's key), `attempts` (`INTEGER`), `next_attempt_at`, `claimed_until`
//! (nullable: a claimer's lease), `last_error` (nullable), `created_at`
//! and `dead_at` (nullable: when it became a dead letter), plus the
//! columns of its item. [`SqlQueue`] holds the SQL of the port's
//! operations over such a table; a [`QueueCodec`] brings only what differs
//! from queue to queue: the table's name, the item's own columns for the
//! insert, and reading a row back into an item.
//!
//! * **enqueue**: one write transaction (on PostgreSQL under a transaction
//!   lock on the call's key, as the row may not exist yet to lock) reads
//!   the key's rows; a live row of the same call (the same use, or one not
//!   known on either side) answers `false`; a dead letter of it is
//!   replaced; otherwise one `INSERT`, with no attempt, no lease, no
//!   error, due at the caller's `due_at` and `created_at` from the queue's
//!   [`Clock`].
//! * **claim**: the due live rows (`next_attempt_at <= now`, no running
//!   lease, `dead_at IS NULL`), earliest due first, are leased until `now + lease` by one `UPDATE …
//!   RETURNING`: on PostgreSQL they are selected `FOR UPDATE SKIP LOCKED`;
//!   on SQLite the statement runs in a `BEGIN IMMEDIATE` transaction, so
//!   claimers take turns. Two claimers never get the same row while its
//!   lease runs. A row that cannot be read back fails the call with
//!   [`RepoError::BadData`] and stays leased; the readable rows of the same
//!   batch are handed back in the same transaction.
//! * **complete**: `DELETE` by (community, user, key, use); retry and dead
//!   letter match the row the same way.
//! * **retry**: one `UPDATE` of a live row: `attempts + 1` (saturating),
//!   `last_error` cut to [`MAX_ERROR_LEN`] bytes at a character boundary,
//!   lease dropped, due again at the caller's `due_at`.
//! * **dead letter**: one `UPDATE`: `attempts + 1`, `last_error`, lease
//!   dropped, `dead_at` set, and `next_attempt_at` past every instant, so
//!   the row also stays out of the due index's range that claims read.
//!   Listed by `dead_at`, counted with `COUNT(*)`.
//! * **len**: `COUNT(*)` of the live rows, due or not.

use std::marker::PhantomData;
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use spendgate_domain::{CommunityId, HoldRef, Timestamp, Ttl};
use spendgate_ports::{Claimed, Clock, DeadLetter, QueueItem, RepoError, same_use};

use crate::error::repo_error;
use crate::transaction::begin_write;
use crate::usage_log::RowReader;

/// The longest `last_error` a queue keeps, in bytes; longer messages are
/// cut at a character boundary.
pub const MAX_ERROR_LEN: usize = 2_000;

/// Row ids per statement when a claim hands rows back (well under both
/// backends' parameter limits).
const IDS_PER_STATEMENT: usize = 1_000;

/// The condition that a row is of the use named by the parameter `$n`
/// (NULL: a use not known), portable to both backends.
fn use_is(n: usize) -> String {
    format!("(hold_created_at = ${n} OR (hold_created_at IS NULL AND ${n} IS NULL))")
}

/// What one queue table adds to the shared rules: its name and how its
/// item is written to and read from a row.
pub(crate) trait QueueCodec: Send + Sync + 'static {
    /// The queued item.
    type Item: QueueItem;
    /// A whole row, as `SELECT *` / `RETURNING *` gives it.
    type Row: FromQueryResult + Send;
    /// The table. Written into the SQL as is: a constant, never input.
    const TABLE: &'static str;

    /// The item's own columns and values: every column but the key
    /// (`community_id`, `user_id`, `idempotency_key`, taken from
    /// [`QueueItem`]) and the queue's own columns. Column names are
    /// constants, written into the SQL as they are.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for a value the table cannot hold.
    fn encode(item: &Self::Item) -> Result<Vec<(&'static str, Value)>, RepoError>;

    /// The row's item, refusing anything the domain would not accept with
    /// [`RepoError::BadData`].
    fn decode(row: Self::Row) -> Result<Self::Item, RepoError>;
}

/// The queue's own columns of a row, read next to the codec's [`QueueCodec::Row`].
#[derive(Debug, FromQueryResult)]
struct QueueColumns {
    id: i64,
    community_id: String,
    next_attempt_at: i64,
    attempts: i32,
    last_error: Option<String>,
    dead_at: Option<i64>,
}

/// A queued row's identity and state, as an enqueue reads it.
#[derive(Debug, FromQueryResult)]
struct UseColumns {
    id: i64,
    hold_created_at: Option<i64>,
    dead_at: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct Count {
    count: i64,
}

/// `error` cut to at most [`MAX_ERROR_LEN`] bytes, at a character boundary.
fn cut_error(error: &str) -> &str {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// `$first, $first+1, …`, `count` of them.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A leased row as a [`Claimed`] item.
fn claimed<C: QueueCodec>(queue: QueueColumns, row: C::Row) -> Result<Claimed<C::Item>, RepoError> {
    let item = C::decode(row)?;
    Ok(Claimed {
        item,
        attempts: attempts::<C>(&queue)?,
        last_error: queue.last_error,
    })
}

fn attempts<C: QueueCodec>(queue: &QueueColumns) -> Result<u32, RepoError> {
    u32::try_from(queue.attempts).map_err(|_| {
        RowReader::new(&queue.community_id, C::TABLE)
            .bad("attempts", format!("{} is negative", queue.attempts))
    })
}

/// A dead row as a [`DeadLetter`].
fn dead_letter<C: QueueCodec>(
    queue: QueueColumns,
    row: C::Row,
) -> Result<DeadLetter<C::Item>, RepoError> {
    let read = RowReader::new(&queue.community_id, C::TABLE);
    let dead_at = queue
        .dead_at
        .ok_or_else(|| read.bad("dead_at", "is NULL on a dead letter"))?;
    let dead_at = read.timestamp("dead_at", dead_at)?;
    let attempts = attempts::<C>(&queue)?;
    Ok(DeadLetter {
        item: C::decode(row)?,
        attempts,
        error: queue.last_error.unwrap_or_default(),
        dead_at,
    })
}

/// The work queue on the table of `C`.
pub(crate) struct SqlQueue<C> {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    codec: PhantomData<fn() -> C>,
}

impl<C> Clone for SqlQueue<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            clock: Arc::clone(&self.clock),
            codec: PhantomData,
        }
    }
}

impl<C: QueueCodec> SqlQueue<C> {
    /// A queue on `db` (migrated), stamping `created_at` from `clock`.
    pub(crate) fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            clock,
            codec: PhantomData,
        }
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }

    /// Queues `item` unless the same call (its (community, user, key) and
    /// a use that may be the same) is queued live; returns whether it was
    /// new.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, community = %item.community()))]
    pub(crate) async fn enqueue(
        &self,
        item: &C::Item,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        let hold = item.hold_ref();
        let mut columns: Vec<(&'static str, Value)> = vec![
            ("community_id", item.community().as_str().into()),
            ("user_id", hold.user.as_str().into()),
            ("idempotency_key", hold.key.as_str().into()),
        ];
        columns.extend(C::encode(item)?);
        columns.extend([
            ("attempts", 0_i32.into()),
            ("next_attempt_at", due_at.as_millis().into()),
            ("claimed_until", Value::BigInt(None)),
            ("last_error", Value::String(None)),
            ("created_at", self.clock.now().as_millis().into()),
        ]);
        let values: Vec<Value> = columns.iter().map(|(_, value)| value.clone()).collect();
        let community = item.community();
        let instance = item.instance();
        // One enqueue of a call at a time: SQLite's write transaction is
        // exclusive; PostgreSQL takes a lock on the call's key (rows that
        // do not exist yet cannot be locked). Two keys whose lock names
        // collide only wait for each other.
        let txn = begin_write(&self.db).await.map_err(repo_error)?;
        if self.db.get_database_backend() == DbBackend::Postgres {
            let lock = self.statement(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                vec![format!("{}/{community}/{}/{}", C::TABLE, hold.user, hold.key).into()],
            );
            txn.execute_raw(lock).await.map_err(repo_error)?;
        }
        let select = self.statement(
            &format!(
                "SELECT id, hold_created_at, dead_at FROM {} \
                 WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3 \
                 ORDER BY CASE WHEN dead_at IS NULL THEN 0 ELSE 1 END, id",
                C::TABLE
            ),
            vec![
                community.as_str().into(),
                hold.user.as_str().into(),
                hold.key.as_str().into(),
            ],
        );
        let read = RowReader::new(community.as_str(), C::TABLE);
        // A live item of the call first: it carries the call, and a dead
        // letter of it stays as it is.
        let mut same_call = None;
        for row in txn.query_all_raw(select).await.map_err(repo_error)? {
            let row = UseColumns::from_query_result(&row, "").map_err(repo_error)?;
            let queued = row
                .hold_created_at
                .map(|ms| read.timestamp("hold_created_at", ms))
                .transpose()?;
            if same_use(queued, instance) {
                same_call = Some(row);
                break;
            }
        }
        let write = match same_call {
            Some(row) if row.dead_at.is_none() => {
                txn.commit().await.map_err(repo_error)?;
                return Ok(false);
            }
            // A dead letter of the same call is replaced (and revived): it
            // never ran and never will.
            Some(row) => {
                let set = columns
                    .iter()
                    .enumerate()
                    .map(|(n, (name, _))| format!("{name} = ${}", n + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut values = values;
                values.push(row.id.into());
                self.statement(
                    &format!(
                        "UPDATE {} SET {set}, dead_at = NULL WHERE id = ${}",
                        C::TABLE,
                        columns.len() + 1
                    ),
                    values,
                )
            }
            None => {
                let names = columns
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.statement(
                    &format!(
                        "INSERT INTO {} ({names}) VALUES ({})",
                        C::TABLE,
                        placeholders(1, columns.len())
                    ),
                    values,
                )
            }
        };
        txn.execute_raw(write).await.map_err(repo_error)?;
        txn.commit().await.map_err(repo_error)?;
        Ok(true)
    }

    /// Leases up to `limit` due rows until `now + lease`, earliest due
    /// first.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, limit))]
    pub(crate) async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<C::Item>>, RepoError> {
        let until = now
            .plus(lease)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let lock = match self.db.get_database_backend() {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let table = C::TABLE;
        let sql = format!(
            "UPDATE {table} SET claimed_until = $1 WHERE id IN ( \
               SELECT id FROM {table} \
               WHERE next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
                 AND dead_at IS NULL \
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
        let results = txn.query_all_raw(stmt).await.map_err(repo_error)?;
        let mut rows = Vec::with_capacity(results.len());
        for result in &results {
            let queue = QueueColumns::from_query_result(result, "").map_err(repo_error)?;
            let row = C::Row::from_query_result(result, "").map_err(repo_error)?;
            rows.push((queue, row));
        }
        // RETURNING has no order of its own.
        rows.sort_by_key(|(queue, _)| (queue.next_attempt_at, queue.id));
        let mut items = Vec::with_capacity(rows.len());
        let mut readable = Vec::with_capacity(rows.len());
        let mut first_bad = None;
        for (queue, row) in rows {
            let id = queue.id;
            match claimed::<C>(queue, row) {
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
                let release = self.statement(
                    &format!(
                        "UPDATE {table} SET claimed_until = NULL WHERE id IN ({})",
                        placeholders(1, ids.len())
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

    /// Deletes the (community, user, key) row; returns whether it was there.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, community = %community))]
    pub(crate) async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        let delete = self.statement(
            &format!(
                "DELETE FROM {} WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3 \
                 AND {}",
                C::TABLE,
                use_is(4)
            ),
            vec![
                community.as_str().into(),
                hold.user.as_str().into(),
                hold.key.as_str().into(),
                instance.map(Timestamp::as_millis).into(),
            ],
        );
        let result = self.db.execute_raw(delete).await.map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }

    /// Records a failed attempt on the live (community, user, key) row;
    /// returns whether it was there.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, community = %community))]
    pub(crate) async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        let update = self.statement(
            &format!(
                "UPDATE {} SET \
                   attempts = CASE WHEN attempts < $1 THEN attempts + 1 ELSE attempts END, \
                   last_error = $2, claimed_until = NULL, next_attempt_at = $3 \
                 WHERE community_id = $4 AND user_id = $5 AND idempotency_key = $6 \
                   AND dead_at IS NULL AND {}",
                C::TABLE,
                use_is(7)
            ),
            vec![
                i32::MAX.into(),
                cut_error(error).into(),
                due_at.as_millis().into(),
                community.as_str().into(),
                hold.user.as_str().into(),
                hold.key.as_str().into(),
                instance.map(Timestamp::as_millis).into(),
            ],
        );
        let result = self.db.execute_raw(update).await.map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }

    /// Parks the (community, user, key) row as a dead letter; returns
    /// whether it was there.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, community = %community))]
    pub(crate) async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        let update = self.statement(
            &format!(
                "UPDATE {} SET \
                   attempts = CASE WHEN attempts < $1 THEN attempts + 1 ELSE attempts END, \
                   last_error = $2, claimed_until = NULL, next_attempt_at = $3, dead_at = $4 \
                 WHERE community_id = $5 AND user_id = $6 AND idempotency_key = $7 AND {}",
                C::TABLE,
                use_is(8)
            ),
            vec![
                i32::MAX.into(),
                cut_error(error).into(),
                i64::MAX.into(),
                at.as_millis().into(),
                community.as_str().into(),
                hold.user.as_str().into(),
                hold.key.as_str().into(),
                instance.map(Timestamp::as_millis).into(),
            ],
        );
        let result = self.db.execute_raw(update).await.map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }

    /// Up to `limit` dead rows, the earliest parked first.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, limit))]
    pub(crate) async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<Vec<DeadLetter<C::Item>>, RepoError> {
        let stmt = self.statement(
            &format!(
                "SELECT * FROM {} WHERE dead_at IS NOT NULL ORDER BY dead_at, id LIMIT $1",
                C::TABLE
            ),
            vec![i64::from(limit).into()],
        );
        let results = self.db.query_all_raw(stmt).await.map_err(repo_error)?;
        results
            .iter()
            .map(|result| {
                let queue = QueueColumns::from_query_result(result, "").map_err(repo_error)?;
                let row = C::Row::from_query_result(result, "").map_err(repo_error)?;
                dead_letter::<C>(queue, row)
            })
            .collect()
    }

    /// How many dead rows there are.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE))]
    pub(crate) async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        self.count("dead_at IS NOT NULL").await
    }

    /// How many live rows are queued, due or not.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE))]
    pub(crate) async fn len(&self) -> Result<u64, RepoError> {
        self.count("dead_at IS NULL").await
    }

    /// How many live rows of `community` are queued, due or not.
    #[tracing::instrument(skip_all, err, fields(table = C::TABLE, community = %community))]
    pub(crate) async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        self.count_where(
            "dead_at IS NULL AND community_id = $1",
            vec![community.as_str().into()],
        )
        .await
    }

    /// `COUNT(*)` of the rows matching `filter`, a constant condition.
    async fn count(&self, filter: &'static str) -> Result<u64, RepoError> {
        self.count_where(filter, vec![]).await
    }

    /// `COUNT(*)` of the rows matching `filter` with its `values`.
    async fn count_where(
        &self,
        filter: &'static str,
        values: Vec<Value>,
    ) -> Result<u64, RepoError> {
        let stmt = self.statement(
            &format!("SELECT COUNT(*) AS count FROM {} WHERE {filter}", C::TABLE),
            values,
        );
        let count = Count::find_by_statement(stmt)
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map_or(0, |c| c.count);
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_ERROR_LEN, cut_error, placeholders};

    #[test]
    fn errors_are_cut_at_a_char_boundary() {
        assert_eq!(cut_error("short"), "short");
        let even = "é".repeat(MAX_ERROR_LEN);
        assert_eq!(cut_error(&even).len(), MAX_ERROR_LEN);
        let odd = format!("a{even}");
        let cut = cut_error(&odd);
        assert_eq!(cut.len(), MAX_ERROR_LEN - 1);
        assert!(cut.chars().skip(1).all(|c| c == 'é'));
    }

    #[test]
    fn placeholders_count_from_first() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(4, 1), "$4");
    }
}
