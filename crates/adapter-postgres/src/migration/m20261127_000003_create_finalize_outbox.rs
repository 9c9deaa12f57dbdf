//! `finalize_outbox`: finalizes that could not reach the budget store, kept
//! durably until a worker replays them (law 5).

use sea_orm_migration::prelude::*;

use super::{COST_SOURCES, non_negative};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum FinalizeOutbox {
    Table,
    Id,
    CommunityId,
    UserId,
    IdempotencyKey,
    ActualCostMicros,
    Period,
    ModelAlias,
    PromptTokens,
    CompletionTokens,
    TraceId,
    Source,
    Attempts,
    NextAttemptAt,
    ClaimedUntil,
    LastError,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use FinalizeOutbox as O;
        manager
            .create_table(
                Table::create()
                    .table(O::Table)
                    .col(
                        ColumnDef::new(O::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(O::CommunityId).string_len(128).not_null())
                    .col(ColumnDef::new(O::UserId).string_len(128).not_null())
                    .col(ColumnDef::new(O::IdempotencyKey).string_len(128).not_null())
                    .col(ColumnDef::new(O::ActualCostMicros).big_integer().not_null())
                    .col(ColumnDef::new(O::Period).string_len(7).not_null())
                    .col(ColumnDef::new(O::ModelAlias).string_len(64).not_null())
                    .col(ColumnDef::new(O::PromptTokens).big_integer().not_null())
                    .col(ColumnDef::new(O::CompletionTokens).big_integer().not_null())
                    .col(ColumnDef::new(O::TraceId).string_len(256).null())
                    .col(ColumnDef::new(O::Source).string_len(16).not_null())
                    .col(ColumnDef::new(O::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(O::NextAttemptAt).big_integer().not_null())
                    .col(ColumnDef::new(O::ClaimedUntil).big_integer().null())
                    .col(ColumnDef::new(O::LastError).text().null())
                    .col(ColumnDef::new(O::CreatedAt).big_integer().not_null())
                    .check(non_negative("fo_actual_non_negative", O::ActualCostMicros))
                    .check(non_negative(
                        "fo_prompt_tokens_non_negative",
                        O::PromptTokens,
                    ))
                    .check(non_negative(
                        "fo_completion_tokens_non_negative",
                        O::CompletionTokens,
                    ))
                    .check(non_negative("fo_attempts_non_negative", O::Attempts))
                    .check(Check::named(
                        "fo_source_known",
                        Expr::col(O::Source).is_in(COST_SOURCES),
                    ))
                    .check(Check::named(
                        "fo_period_shape",
                        Expr::col(O::Period).like("____-__"),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("finalize_outbox_idempotency")
                    .table(O::Table)
                    .col(O::CommunityId)
                    .col(O::UserId)
                    .col(O::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("finalize_outbox_due")
                    .table(O::Table)
                    .col(O::NextAttemptAt)
                    .col(O::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FinalizeOutbox::Table).to_owned())
            .await
    }
}
