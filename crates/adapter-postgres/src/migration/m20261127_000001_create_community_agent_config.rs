//! `community_agent_config`: one row per community.

use sea_orm_migration::prelude::*;

use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum CommunityAgentConfig {
    Table,
    CommunityId,
    AiEnabled,
    MonthlyBudgetMicros,
    PerUserCapMicros,
    TierOverrides,
    PricingOverrides,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use CommunityAgentConfig as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(
                        ColumnDef::new(C::CommunityId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(C::AiEnabled)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(C::MonthlyBudgetMicros)
                            .big_integer()
                            .not_null()
                            .default(1_000_000_i64),
                    )
                    .col(ColumnDef::new(C::PerUserCapMicros).big_integer().null())
                    .col(ColumnDef::new(C::TierOverrides).json_binary().null())
                    .col(ColumnDef::new(C::PricingOverrides).json_binary().null())
                    .col(ColumnDef::new(C::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(C::UpdatedAt).big_integer().not_null())
                    .check(non_negative(
                        "cac_monthly_budget_non_negative",
                        C::MonthlyBudgetMicros,
                    ))
                    .check(non_negative(
                        "cac_per_user_cap_non_negative",
                        C::PerUserCapMicros,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("community_agent_config_active")
                    .table(C::Table)
                    .col(C::AiEnabled)
                    .col(C::CommunityId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CommunityAgentConfig::Table).to_owned())
            .await
    }
}
