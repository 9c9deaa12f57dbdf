//! The [`IdempotencyStore`] port on `idempotency_record`: one row per
//! request, claimed by one upsert, completed by one update, purged in
//! bounded deletes.
//!
//! **claim** is one statement, and a second one only when the request has
//! a live record:
//!
//! ```sql
//! INSERT INTO idempotency_record (tenant, operation, resource, request_key,
//!     fingerprint, response_status, response_body, keep_until)
//! VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)
//! ON CONFLICT (tenant, operation, resource, request_key) DO UPDATE
//!   SET fingerprint = excluded.fingerprint, response_status = NULL,
//!       response_body = NULL, keep_until = excluded.keep_until
//!   WHERE idempotency_record.keep_until <= $7
//! RETURNING keep_until
//! ```
//!
//! It inserts the record of a new request and overwrites an expired one
//! (`keep_until <= now`), and returns a row exactly then: the caller
//! [`Claim::Started`]. It changes nothing when a live record is there; the
//! claim then reads that record (`SELECT fingerprint, response_status,
//! response_body, keep_until … WHERE` the primary key) and judges it by
//! fingerprint. Being one statement, the upsert is atomic on both
//! backends: on PostgreSQL overlapping claims of a new request meet on the
//! primary key (the later ones wait for the first to commit, then see its
//! row and lock it instead of inserting; the `WHERE` is judged on the
//! newest row), and on SQLite writers are serialized. A record that a
//! purge deleted between the two statements, or that another claim
//! replaced with one already expired at this `now`, sends the claim round
//! again, at most [`CLAIM_ATTEMPTS`] times.
//!
//! **complete** is one `UPDATE … WHERE` the key `AND fingerprint = $5`
//! that sets the answer only when none is stored (`COALESCE` / `CASE` on
//! the old row), so it matches a row exactly when the record with this
//! fingerprint exists, and never overwrites a first answer.
//!
//! **purge** is one `DELETE` of the oldest `limit` expired rows, chosen by
//! a sub-select on the `keep_until` index and deleted by their physical
//! row id (`ctid` on PostgreSQL, `rowid` on SQLite), so the delete reads
//! only the index range and the rows it removes, never the four-column
//! primary key. The outer `keep_until <= now` is judged again on the row
//! it deletes, so a record that a claim replaced meanwhile (on PostgreSQL,
//! after the sub-select read it: the replacement is a new row version,
//! which the recheck judges) stays.

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, Value};
use spendgate_domain::Timestamp;
use spendgate_ports::{
    Claim, IdempotencyStore, RepoError, RequestId, StoredResponse, check_fingerprint,
};

use crate::error::repo_error;

/// How many times a claim runs its upsert and read before it gives up as
/// [`RepoError::Unavailable`]: a record only vanishes between the two when
/// a purge or an odd `keep_until` of another claim gets in the way.
pub const CLAIM_ATTEMPTS: usize = 3;

const CLAIM: &str = "INSERT INTO idempotency_record \
     (tenant, operation, resource, request_key, fingerprint, response_status, response_body, keep_until) \
     VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6) \
     ON CONFLICT (tenant, operation, resource, request_key) DO UPDATE \
     SET fingerprint = excluded.fingerprint, response_status = NULL, response_body = NULL, \
     keep_until = excluded.keep_until \
     WHERE idempotency_record.keep_until <= $7 \
     RETURNING keep_until";

const READ: &str = "SELECT fingerprint, response_status, response_body, keep_until \
     FROM idempotency_record \
     WHERE tenant = $1 AND operation = $2 AND resource = $3 AND request_key = $4";

const COMPLETE: &str = "UPDATE idempotency_record \
     SET response_status = COALESCE(response_status, $6), \
     response_body = CASE WHEN response_status IS NULL THEN $7 ELSE response_body END \
     WHERE tenant = $1 AND operation = $2 AND resource = $3 AND request_key = $4 \
     AND fingerprint = $5";

const PURGE_POSTGRES: &str = "DELETE FROM idempotency_record \
     WHERE keep_until <= $1 AND ctid = ANY(ARRAY( \
     SELECT ctid FROM idempotency_record \
     WHERE keep_until <= $1 ORDER BY keep_until LIMIT $2))";

const PURGE_SQLITE: &str = "DELETE FROM idempotency_record \
     WHERE keep_until <= $1 AND rowid IN ( \
     SELECT rowid FROM idempotency_record \
     WHERE keep_until <= $1 ORDER BY keep_until LIMIT $2)";

/// A live record as [`READ`] returns it.
#[derive(Debug, FromQueryResult)]
struct Found {
    fingerprint: Vec<u8>,
    response_status: Option<i16>,
    response_body: Option<Vec<u8>>,
    keep_until: i64,
}

/// An [`IdempotencyStore`] on the `idempotency_record` table (PostgreSQL
/// or SQLite, migrated by [`Migrator`](crate::Migrator)).
///
/// Input is checked before anything is sent ([`RequestId::check`],
/// [`check_fingerprint`], [`StoredResponse::check`]):
/// [`RepoError::InvalidInput`]. Expiry is judged by the caller's `now`
/// only, so replicas should read reasonably synchronized clocks. A claim
/// costs one round trip when it starts the request and two otherwise;
/// `complete` and `purge` cost one. Database failures are
/// [`RepoError::Unavailable`]; a stored row the port could not have
/// written (a status that is no HTTP status, an answer without a body) is
/// [`RepoError::BadData`] naming the tenant.
#[derive(Clone)]
pub struct SqlIdempotency {
    db: DatabaseConnection,
}

impl std::fmt::Debug for SqlIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlIdempotency").finish_non_exhaustive()
    }
}

/// The primary key's four values, `$1`–`$4` of every statement but purge.
fn key_values(id: &RequestId) -> Vec<Value> {
    vec![
        id.tenant.as_str().into(),
        id.operation.as_str().into(),
        id.resource.as_str().into(),
        id.key.as_str().into(),
    ]
}

/// What a live record of this request means for a claim with
/// `fingerprint`.
fn judge(id: &RequestId, found: Found, fingerprint: &[u8]) -> Result<Claim, RepoError> {
    if found.fingerprint != fingerprint {
        return Ok(Claim::Mismatch);
    }
    let bad = |field: &str, reason: String| RepoError::BadData {
        community: id.tenant.as_str().to_owned(),
        field: format!("idempotency_record.{field}"),
        reason,
    };
    match (found.response_status, found.response_body) {
        (None, None) => Ok(Claim::Pending),
        (Some(status), Some(body)) => {
            let response = StoredResponse {
                status: u16::try_from(status)
                    .map_err(|_| bad("response_status", format!("{status} is negative")))?,
                body,
            };
            response
                .check()
                .map_err(|e| bad("response_status", e.to_string()))?;
            Ok(Claim::Completed(response))
        }
        (status, _) => Err(bad(
            "response_body",
            format!("status {status:?} without a body, or a body without a status"),
        )),
    }
}

impl SqlIdempotency {
    /// Idempotency records on `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }
}

#[async_trait]
impl IdempotencyStore for SqlIdempotency {
    /// The upsert of the module docs; when it returns no row, the live
    /// record is read and judged by fingerprint.
    #[tracing::instrument(skip_all, err, fields(tenant = %id.tenant, operation = %id.operation))]
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        for _ in 0..CLAIM_ATTEMPTS {
            let mut values = key_values(id);
            values.extend([
                fingerprint.to_vec().into(),
                keep_until.as_millis().into(),
                now.as_millis().into(),
            ]);
            let claimed = self
                .db
                .query_one_raw(self.statement(CLAIM, values))
                .await
                .map_err(repo_error)?;
            if claimed.is_some() {
                return Ok(Claim::Started);
            }
            let found = Found::find_by_statement(self.statement(READ, key_values(id)))
                .one(&self.db)
                .await
                .map_err(repo_error)?;
            if let Some(found) = found
                && found.keep_until > now.as_millis()
            {
                return judge(id, found, fingerprint);
            }
            // Purged, or replaced by an expired record, since the upsert:
            // claim again.
        }
        Err(RepoError::Unavailable(format!(
            "the record of request {} kept vanishing during {CLAIM_ATTEMPTS} claims",
            id.key
        )))
    }

    /// One `UPDATE … WHERE` the key `AND fingerprint = $5`, keeping a
    /// first answer: `true` exactly when it matched a row.
    #[tracing::instrument(skip_all, err, fields(tenant = %id.tenant, operation = %id.operation))]
    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        response.check()?;
        let status = i16::try_from(response.status)
            .map_err(|_| RepoError::InvalidInput(format!("status {}", response.status)))?;
        let mut values = key_values(id);
        values.extend([
            fingerprint.to_vec().into(),
            status.into(),
            response.body.clone().into(),
        ]);
        let result = self
            .db
            .execute_raw(self.statement(COMPLETE, values))
            .await
            .map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }

    /// One `DELETE` of the oldest `limit` rows with `keep_until <= now`.
    #[tracing::instrument(skip_all, err, fields(limit))]
    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, RepoError> {
        let values = vec![now.as_millis().into(), i64::from(limit).into()];
        let sql = match self.db.get_database_backend() {
            DbBackend::Postgres => PURGE_POSTGRES,
            _ => PURGE_SQLITE,
        };
        let result = self
            .db
            .execute_raw(self.statement(sql, values))
            .await
            .map_err(repo_error)?;
        Ok(result.rows_affected())
    }
}
