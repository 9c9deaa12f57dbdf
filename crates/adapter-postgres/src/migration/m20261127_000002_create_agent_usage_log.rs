//! `agent_usage_log`: one row per committed cost, unique per
//! (community, user, idempotency key).

use sea_orm_migration::prelude::*;

use super::{COST_SOURCES, non_negative};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum AgentUsageLog {
    Table,
    Id,
    CommunityId,
    UserId,
    ModelAlias,
    PromptTokens,
    CompletionTokens,
    CostMicros,
    EstimatedCostMicros,
    IdempotencyKey,
    TraceId,
    Source,
    Period,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use AgentUsageLog as U;
        manager
            .create_table(
                Table::create()
                    .table(U::Table)
                    .col(
                        ColumnDef::new(U::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(U::CommunityId).string_len(128).not_null())
                    .col(ColumnDef::new(U::UserId).string_len(128).not_null())
                    .col(ColumnDef::new(U::ModelAlias).string_len(64).not_null())
                    .col(ColumnDef::new(U::PromptTokens).big_integer().not_null())
                    .col(ColumnDef::new(U::CompletionTokens).big_integer().not_null())
                    .col(ColumnDef::new(U::CostMicros).big_integer().not_null())
                    .col(
                        ColumnDef::new(U::EstimatedCostMicros)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(U::IdempotencyKey).string_len(128).not_null())
                    .col(ColumnDef::new(U::TraceId).string_len(256).null())
                    .col(ColumnDef::new(U::Source).string_len(16).not_null())
                    .col(ColumnDef::new(U::Period).string_len(7).not_null())
                    .col(ColumnDef::new(U::CreatedAt).big_integer().not_null())
                    .check(non_negative(
                        "aul_prompt_tokens_non_negative",
                        U::PromptTokens,
                    ))
                    .check(non_negative(
                        "aul_completion_tokens_non_negative",
                        U::CompletionTokens,
                    ))
                    .check(non_negative("aul_cost_non_negative", U::CostMicros))
                    .check(non_negative(
                        "aul_estimate_non_negative",
                        U::EstimatedCostMicros,
                    ))
                    .check(non_negative("aul_created_at_non_negative", U::CreatedAt))
                    .check(Check::named(
                        "aul_source_known",
                        Expr::col(U::Source).is_in(COST_SOURCES),
                    ))
                    .check(Check::named(
                        "aul_period_shape",
                        Expr::col(U::Period).like("____-__"),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agent_usage_log_idempotency")
                    .table(U::Table)
                    .col(U::CommunityId)
                    .col(U::UserId)
                    .col(U::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Serves `SUM(cost_micros) WHERE community_id = ? AND period = ?`
        // from the index alone (cost is the last key column).
        manager
            .create_index(
                Index::create()
                    .name("agent_usage_log_community_period")
                    .table(U::Table)
                    .col(U::CommunityId)
                    .col(U::Period)
                    .col(U::CostMicros)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agent_usage_log_community_created")
                    .table(U::Table)
                    .col(U::CommunityId)
                    .col(U::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AgentUsageLog::Table).to_owned())
            .await
    }
}
