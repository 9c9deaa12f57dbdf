//! Write transactions that behave the same on both backends.

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

/// Begins a transaction that will write: `BEGIN IMMEDIATE` on SQLite (the
/// write lock is taken up front, so two writers queue on the busy timeout
/// instead of failing to upgrade a read lock), a plain `BEGIN` (read
/// committed) on PostgreSQL.
pub(crate) async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}
