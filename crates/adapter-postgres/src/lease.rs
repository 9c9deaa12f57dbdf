//! The [`Lease`] port on `worker_lease`: one row per lease, taken and
//! renewed by one atomic upsert, given up by a compare-and-delete.
//!
//! ```sql
//! INSERT INTO worker_lease (name, holder, expires_at) VALUES ($1, $2, $3)
//! ON CONFLICT (name) DO UPDATE
//!   SET holder = excluded.holder, expires_at = excluded.expires_at
//!   WHERE worker_lease.holder = excluded.holder OR worker_lease.expires_at <= $4
//! RETURNING holder
//! ```
//!
//! It inserts the row of a lease nobody held, overwrites the row of a lease
//! whose holder let it expire (`expires_at <= now`), renews the caller's
//! own lease, and changes nothing otherwise; it returns a row exactly when
//! the caller holds the lease afterwards. Being one statement, it is atomic
//! on both backends: on PostgreSQL two takers of an absent lease meet on
//! the primary key and the second one sees the first one's row in its
//! `WHERE`; on SQLite (≥ 3.35, for `RETURNING`) writers are serialized.

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Lease, RepoError};

use crate::error::repo_error;

const ACQUIRE: &str = "INSERT INTO worker_lease (name, holder, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE worker_lease.holder = excluded.holder OR worker_lease.expires_at <= $4 \
     RETURNING holder";

const RELEASE: &str = "DELETE FROM worker_lease WHERE name = $1 AND holder = $2";

/// A [`Lease`] on the `worker_lease` table (PostgreSQL or SQLite, migrated
/// by [`Migrator`](crate::Migrator)).
///
/// Expiry is judged by the `now` each `acquire` is given: a lease granted
/// at `now` for `ttl` is held while a later caller's `now` is before
/// `now + ttl`, so replicas should read reasonably synchronized clocks.
/// `release` has no `now`: a holder whose lease ended, but that nobody took
/// over yet, can still give it up. Names and holders must be non-empty, at
/// most 128 bytes, printable ASCII without whitespace, `{` or `}` (the same
/// rule as the other adapters); anything else is
/// [`RepoError::InvalidInput`], with nothing sent. Database failures are
/// [`RepoError::Unavailable`].
#[derive(Clone)]
pub struct SqlLease {
    db: DatabaseConnection,
}

impl std::fmt::Debug for SqlLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlLease").finish_non_exhaustive()
    }
}

impl SqlLease {
    /// Leases on `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn statement(&self, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }
}

#[async_trait]
impl Lease for SqlLease {
    /// One `INSERT … ON CONFLICT (name) DO UPDATE … WHERE holder = $2 OR
    /// expires_at <= now RETURNING holder`: granted exactly when it returns
    /// a row. An expiry past [`Timestamp::MAX`] is
    /// [`RepoError::InvalidInput`].
    #[tracing::instrument(skip_all, err, fields(name = %name, holder = %holder))]
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let expires = now
            .plus(ttl)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let stmt = self.statement(
            ACQUIRE,
            vec![
                name.into(),
                holder.into(),
                expires.as_millis().into(),
                now.as_millis().into(),
            ],
        );
        let row = self.db.query_one_raw(stmt).await.map_err(repo_error)?;
        Ok(row.is_some())
    }

    /// `DELETE … WHERE name = $1 AND holder = $2`.
    #[tracing::instrument(skip_all, err, fields(name = %name, holder = %holder))]
    async fn release(&self, name: &str, holder: &str) -> Result<bool, RepoError> {
        spendgate_ports::check_lease_args(name, holder)?;
        let stmt = self.statement(RELEASE, vec![name.into(), holder.into()]);
        let result = self.db.execute_raw(stmt).await.map_err(repo_error)?;
        Ok(result.rows_affected() > 0)
    }
}
