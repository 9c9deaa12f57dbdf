//! `finalize_outbox.estimate_micros`: the estimate that was held, so that a
//! replayed settlement reaches the usage log with it (the finalize queue
//! carries [`spendgate_ports::PendingSettlement`], estimate included).
//!
//! One `ALTER TABLE … ADD COLUMN` with a constant default, a NOT NULL and a
//! column CHECK: the one form SQLite accepts for a new NOT NULL column (its
//! `ADD COLUMN` takes one column per statement, needs a non-NULL default
//! and checks the constraint against existing rows); existing rows get 0,
//! "unknown". `down` drops the column (SQLite ≥ 3.35 drops a column whose
//! only CHECK is its own).

use sea_orm_migration::prelude::*;

use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum FinalizeOutbox {
    Table,
    EstimateMicros,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use FinalizeOutbox as O;
        manager
            .alter_table(
                Table::alter()
                    .table(O::Table)
                    .add_column(
                        ColumnDef::new(O::EstimateMicros)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(non_negative("fo_estimate_non_negative", O::EstimateMicros)),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use FinalizeOutbox as O;
        manager
            .alter_table(
                Table::alter()
                    .table(O::Table)
                    .drop_column(O::EstimateMicros)
                    .to_owned(),
            )
            .await
    }
}
