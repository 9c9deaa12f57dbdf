//! `worker_lease`: named leases held by one replica at a time, for the
//! singleton background jobs (reaper, config sync, …); see
//! [`SqlLease`](crate::SqlLease).
//!
//! One row per lease: the holder token and when the lease ends
//! (`expires_at`, milliseconds since the epoch, compared with the caller's
//! `now`). A row whose lease ended stays until the next taker overwrites it
//! or its holder releases it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WorkerLease {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WorkerLease as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .col(ColumnDef::new(L::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(L::Holder).text().not_null())
                    .col(ColumnDef::new(L::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkerLease::Table).to_owned())
            .await
    }
}
