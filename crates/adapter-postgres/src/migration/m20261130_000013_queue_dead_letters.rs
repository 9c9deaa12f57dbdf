//! `dead_at` on `finalize_outbox` and `reconciliation_queue`: when an entry
//! became a dead letter (its work can never be done: the store refused it
//! for good), `NULL` while it is live. A dead row is never claimed
//! (`dead_at IS NULL` in the claim, and `next_attempt_at` set past every
//! instant, so it also stays out of the due index's range); it is kept for
//! an operator until it is completed.
//!
//! One nullable `ADD COLUMN` per table, the form both backends accept;
//! existing rows are live. `down` makes the dead rows due again (at the
//! time they died), then drops the columns: the schema before knows no
//! dead letters, and its replay retries them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The queue tables: constants, written into the SQL as they are.
const TABLES: [&str; 2] = ["finalize_outbox", "reconciliation_queue"];

#[derive(DeriveIden)]
enum Queue {
    DeadAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(ColumnDef::new(Queue::DeadAt).big_integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES {
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "UPDATE {table} SET next_attempt_at = dead_at WHERE dead_at IS NOT NULL"
                ))
                .await?;
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Queue::DeadAt)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
