//! Every use of an idempotency key is logged: `agent_usage_log` gains
//! `hold_created_at` (which use of the key a cost belongs to: when its hold
//! was made) and is unique per (community, user, key, hold_created_at)
//! instead of per (community, user, key). The store forgets a settled key
//! after its marker retention and then accepts the key again; with the old
//! index the second use's cost was never logged, so drift reported a
//! difference and a rebuild undercounted.
//!
//! `finalize_outbox` gains the nullable `hold_created_at` a queued
//! settlement carries when its caller knew the hold.
//!
//! Existing log rows get 0 (logged before uses were told apart); existing
//! queue rows NULL (not known). `down` restores the old unique index, which
//! fails while a key has more than one logged use: those rows are the
//! record of real spend and are not deleted to make it fit.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum AgentUsageLog {
    Table,
    CommunityId,
    UserId,
    IdempotencyKey,
    HoldCreatedAt,
}

#[derive(DeriveIden)]
enum FinalizeOutbox {
    Table,
    HoldCreatedAt,
}

const OLD_INDEX: &str = "agent_usage_log_idempotency";
const NEW_INDEX: &str = "agent_usage_log_use";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use AgentUsageLog as L;
        manager
            .alter_table(
                Table::alter()
                    .table(L::Table)
                    .add_column(
                        ColumnDef::new(L::HoldCreatedAt)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(NEW_INDEX)
                    .table(L::Table)
                    .col(L::CommunityId)
                    .col(L::UserId)
                    .col(L::IdempotencyKey)
                    .col(L::HoldCreatedAt)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(OLD_INDEX).table(L::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FinalizeOutbox::Table)
                    .add_column(
                        ColumnDef::new(FinalizeOutbox::HoldCreatedAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use AgentUsageLog as L;
        manager
            .alter_table(
                Table::alter()
                    .table(FinalizeOutbox::Table)
                    .drop_column(FinalizeOutbox::HoldCreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(OLD_INDEX)
                    .table(L::Table)
                    .col(L::CommunityId)
                    .col(L::UserId)
                    .col(L::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(NEW_INDEX).table(L::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(L::Table)
                    .drop_column(L::HoldCreatedAt)
                    .to_owned(),
            )
            .await
    }
}
