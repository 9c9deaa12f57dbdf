//! `budget_hold_due`: an index on `budget_hold (expires_at, community_id)`,
//! so that [`crate::SqlBudgetStore`]'s `due_communities` reads only the
//! holds expired at `now` (a range scan from the oldest expiry) instead of
//! every live hold of every community.
//!
//! The index of migration `m20261127_000005` leads with `community_id`,
//! which suits a reap of one community but not a question across all of
//! them. The same statement creates the index on both backends; `down`
//! drops it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The index's name.
const INDEX: &str = "budget_hold_due";

#[derive(DeriveIden)]
enum BudgetHold {
    Table,
    CommunityId,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(BudgetHold::Table)
                    .col(BudgetHold::ExpiresAt)
                    .col(BudgetHold::CommunityId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(BudgetHold::Table)
                    .to_owned(),
            )
            .await
    }
}
