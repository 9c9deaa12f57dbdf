//! Opening a database for the repositories.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use spendgate_ports::{RepoError, redact_url};

use crate::Migrator;

/// How long a SQLite writer waits for the file lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a pool is opened: its size and how long a caller waits for a
/// connection.
///
/// The defaults keep a call during a database outage short: it fails with
/// [`RepoError::Unavailable`] / [`spendgate_ports::StoreError::Unavailable`]
/// after [`ConnectSettings::acquire_timeout`] instead of hanging (for
/// `reserve`, that means deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Longest a call waits for a pooled connection, including opening a
    /// new one (with the pool's retries) when none is idle; past it the
    /// call fails as unavailable.
    pub acquire_timeout: Duration,
    /// Longest [`connect_with_settings`] (and [`connect`],
    /// [`connect_and_migrate`]) waits for the pool's first connection.
    pub connect_timeout: Duration,
    /// PostgreSQL only: the `statement_timeout` of every pooled session,
    /// `None` for the server's own. PostgreSQL arms the timeout when a
    /// statement starts, so this is what bounds the store's one-statement
    /// calls (a value the store sets inside its functions comes too late
    /// for the statement that sets it); past it the call fails as
    /// unavailable. Migrations run without it.
    pub statement_timeout: Option<Duration>,
}

impl Default for ConnectSettings {
    /// 16 connections; 5 s to acquire one, 5 s to connect; 5 s per
    /// statement.
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// Connects to `url` (`postgres://…` or `sqlite://path?mode=rwc`) with
/// [`ConnectSettings::default`]: see [`connect_with_settings`].
///
/// # Errors
/// [`RepoError::Unavailable`] naming the URL (without its password) when no
/// connection can be made.
pub async fn connect(url: &str) -> Result<DatabaseConnection, RepoError> {
    connect_with_settings(url, ConnectSettings::default()).await
}

/// Connects to `url`: `postgres://…` or `sqlite://path?mode=rwc`, with the
/// pool size and timeouts of `settings`.
///
/// SQLite files are opened in WAL mode with `synchronous = FULL` (a
/// committed transaction survives power loss: the finalize outbox and the
/// usage log rely on it), a busy timeout of [`SQLITE_BUSY_TIMEOUT`],
/// foreign keys on, and created when missing.
/// Migrations are not run: see [`connect_and_migrate`].
///
/// # Errors
/// [`RepoError::Unavailable`] naming the URL (without its password) when no
/// connection can be made within `settings.connect_timeout`.
pub async fn connect_with_settings(
    url: &str,
    settings: ConnectSettings,
) -> Result<DatabaseConnection, RepoError> {
    let mut options = ConnectOptions::new(url.to_owned());
    // SeaORM hands both of its timeouts to the pool's acquire timeout (the
    // later one wins), so only `acquire_timeout` goes there; the first
    // connection is bounded here instead.
    options
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .create_if_missing(true)
        });
    if let Some(timeout) = settings.statement_timeout {
        let setting = format!("{}ms", timeout.as_millis());
        options
            .map_sqlx_postgres_opts(move |o| o.options([("statement_timeout", setting.clone())]));
    }
    // The driver's message may quote the URL too: the whole text is
    // redacted.
    match tokio::time::timeout(settings.connect_timeout, Database::connect(options)).await {
        Ok(connected) => connected.map_err(|e| {
            RepoError::Unavailable(redact_url(&format!("cannot connect to {url}: {e}")))
        }),
        Err(elapsed) => Err(RepoError::Unavailable(redact_url(&format!(
            "cannot connect to {url} within {:?}: {elapsed}",
            settings.connect_timeout
        )))),
    }
}

/// Runs every pending migration on a connection of its own, then
/// [`connect`]s, with [`ConnectSettings::default`]: see
/// [`connect_and_migrate_with_settings`].
///
/// # Errors
/// [`RepoError::Unavailable`] when no connection can be made or a
/// migration fails.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, RepoError> {
    connect_and_migrate_with_settings(url, ConnectSettings::default()).await
}

/// Runs every pending migration on a connection of its own, then connects
/// with `settings` ([`connect_with_settings`]).
///
/// Migrating through a dedicated connection matters on SQLite: a pooled
/// connection opened before a migration may keep the old schema cached and
/// fail to prepare statements that need the new one (for example an
/// `ON CONFLICT` target whose unique index it has not seen yet).
///
/// # Errors
/// [`RepoError::Unavailable`] when no connection can be made or a
/// migration fails.
pub async fn connect_and_migrate_with_settings(
    url: &str,
    settings: ConnectSettings,
) -> Result<DatabaseConnection, RepoError> {
    let migrating = connect_with_settings(
        url,
        ConnectSettings {
            max_connections: 1,
            statement_timeout: None,
            ..settings
        },
    )
    .await?;
    Migrator::up(&migrating, None)
        .await
        .map_err(|e| RepoError::Unavailable(redact_url(&format!("migrating {url} failed: {e}"))))?;
    migrating
        .close()
        .await
        .map_err(|e| RepoError::Unavailable(redact_url(&e.to_string())))?;
    connect_with_settings(url, settings).await
}
