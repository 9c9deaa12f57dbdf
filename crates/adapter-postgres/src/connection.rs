//! Opening a database for the repositories.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use spendgate_ports::RepoError;

use crate::Migrator;

/// How long a SQLite writer waits for the file lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url`: `postgres://…` or `sqlite://path?mode=rwc`.
///
/// SQLite files are opened in WAL mode with `synchronous = FULL` (a
/// committed transaction survives power loss: the finalize outbox and the
/// usage log rely on it), a busy timeout of [`SQLITE_BUSY_TIMEOUT`],
/// foreign keys on, and created when missing.
/// Migrations are not run: see [`connect_and_migrate`].
///
/// # Errors
/// [`RepoError::Unavailable`] naming the URL (without its password) when no
/// connection can be made.
pub async fn connect(url: &str) -> Result<DatabaseConnection, RepoError> {
    connect_with(url, 16).await
}

/// Runs every pending migration on a connection of its own, then
/// [`connect`]s.
///
/// Migrating through a dedicated connection matters on SQLite: a pooled
/// connection opened before a migration may keep the old schema cached and
/// fail to prepare statements that need the new one (for example an
/// `ON CONFLICT` target whose unique index it has not seen yet).
///
/// # Errors
/// [`RepoError::Unavailable`] when no connection can be made or a
/// migration fails.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, RepoError> {
    let migrating = connect_with(url, 1).await?;
    Migrator::up(&migrating, None)
        .await
        .map_err(|e| RepoError::Unavailable(format!("migrating {} failed: {e}", redact(url))))?;
    migrating
        .close()
        .await
        .map_err(|e| RepoError::Unavailable(e.to_string()))?;
    connect(url).await
}

async fn connect_with(url: &str, max_connections: u32) -> Result<DatabaseConnection, RepoError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .create_if_missing(true)
        });
    Database::connect(options)
        .await
        .map_err(|e| RepoError::Unavailable(format!("cannot connect to {}: {e}", redact(url))))
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
