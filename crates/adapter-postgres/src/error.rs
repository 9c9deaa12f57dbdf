//! Turning database errors into the ports' errors, so no `DbErr` crosses a
//! port.

use std::ops::Deref;

use sea_orm::{DbErr, RuntimeErr};
use spendgate_ports::{RepoError, StoreError};

/// What kind of failure a [`DbErr`] is, as far as callers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbFailure {
    /// A constraint refused the write (CHECK, UNIQUE, NOT NULL, FK): the
    /// request, not the database, is at fault.
    Constraint,
    /// Anything else: connection lost, timeout, lock, I/O.
    Unavailable,
}

pub(crate) fn classify(error: &DbErr) -> DbFailure {
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = error
        && let sea_orm::sqlx::Error::Database(db) = e.deref()
    {
        use sea_orm::sqlx::error::ErrorKind;
        return match db.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => DbFailure::Constraint,
            _ => DbFailure::Unavailable,
        };
    }
    DbFailure::Unavailable
}

/// A database error as a [`RepoError`]: constraint violations are
/// [`RepoError::InvalidInput`], everything else [`RepoError::Unavailable`].
pub(crate) fn repo_error(error: DbErr) -> RepoError {
    match classify(&error) {
        DbFailure::Constraint => RepoError::InvalidInput(error.to_string()),
        DbFailure::Unavailable => RepoError::Unavailable(error.to_string()),
    }
}

/// A database error as a [`StoreError`]; for `reserve` any of these means
/// deny.
pub(crate) fn store_error(error: DbErr) -> StoreError {
    match classify(&error) {
        DbFailure::Constraint => StoreError::InvalidInput(error.to_string()),
        DbFailure::Unavailable => StoreError::Unavailable(error.to_string()),
    }
}
