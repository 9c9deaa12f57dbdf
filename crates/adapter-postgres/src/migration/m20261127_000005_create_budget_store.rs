//! Tables of the SQL budget store ([`crate::SqlBudgetStore`]).
//!
//! * `budget_community`: one row per community, its limits; every write of
//!   a community's budget first locks this row, so writes of one community
//!   are serialized and different communities never wait for each other.
//! * `budget_period`: counters per (community, period).
//! * `budget_user_period`: per-user sums per (community, period, user).
//! * `budget_hold`: live holds; `(community_id, expires_at)` makes reaping
//!   cost O(expired).
//! * `budget_marker`: settled calls (finalized, or reaped tombstones) kept
//!   until `expires_at`; expiry is logical (a marker past it counts as
//!   absent) and the rows are deleted in bounded batches by `reap`.

use sea_orm_migration::prelude::*;

use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum BudgetCommunity {
    Table,
    CommunityId,
    LimitMicros,
    PerUserCapMicros,
}

#[derive(DeriveIden)]
enum BudgetPeriod {
    Table,
    CommunityId,
    Period,
    CommittedMicros,
    ReservedMicros,
    Holds,
    Warned,
}

#[derive(DeriveIden)]
enum BudgetUserPeriod {
    Table,
    CommunityId,
    Period,
    UserId,
    CommittedMicros,
    ReservedMicros,
}

#[derive(DeriveIden)]
enum BudgetHold {
    Table,
    CommunityId,
    UserId,
    IdempotencyKey,
    EstimateMicros,
    ModelAlias,
    Period,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum BudgetMarker {
    Table,
    CommunityId,
    UserId,
    IdempotencyKey,
    Kind,
    ActualMicros,
    EstimateMicros,
    ModelAlias,
    Period,
    CreatedAt,
    HoldExpiresAt,
    ExpiresAt,
}

fn id(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).string_len(128).not_null().to_owned()
}

fn micros(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .default(0_i64)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BudgetCommunity::Table)
                    .col(id(BudgetCommunity::CommunityId).primary_key())
                    .col(
                        ColumnDef::new(BudgetCommunity::LimitMicros)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(BudgetCommunity::PerUserCapMicros)
                            .big_integer()
                            .null(),
                    )
                    .check(non_negative(
                        "bc_limit_non_negative",
                        BudgetCommunity::LimitMicros,
                    ))
                    .check(non_negative(
                        "bc_cap_non_negative",
                        BudgetCommunity::PerUserCapMicros,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetPeriod::Table)
                    .col(id(BudgetPeriod::CommunityId))
                    .col(
                        ColumnDef::new(BudgetPeriod::Period)
                            .string_len(7)
                            .not_null(),
                    )
                    .col(micros(BudgetPeriod::CommittedMicros))
                    .col(micros(BudgetPeriod::ReservedMicros))
                    .col(micros(BudgetPeriod::Holds))
                    .col(
                        ColumnDef::new(BudgetPeriod::Warned)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .primary_key(
                        Index::create()
                            .col(BudgetPeriod::CommunityId)
                            .col(BudgetPeriod::Period),
                    )
                    .check(non_negative(
                        "bp_committed_non_negative",
                        BudgetPeriod::CommittedMicros,
                    ))
                    .check(non_negative(
                        "bp_reserved_non_negative",
                        BudgetPeriod::ReservedMicros,
                    ))
                    .check(non_negative("bp_holds_non_negative", BudgetPeriod::Holds))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetUserPeriod::Table)
                    .col(id(BudgetUserPeriod::CommunityId))
                    .col(
                        ColumnDef::new(BudgetUserPeriod::Period)
                            .string_len(7)
                            .not_null(),
                    )
                    .col(id(BudgetUserPeriod::UserId))
                    .col(micros(BudgetUserPeriod::CommittedMicros))
                    .col(micros(BudgetUserPeriod::ReservedMicros))
                    .primary_key(
                        Index::create()
                            .col(BudgetUserPeriod::CommunityId)
                            .col(BudgetUserPeriod::Period)
                            .col(BudgetUserPeriod::UserId),
                    )
                    .check(non_negative(
                        "bup_committed_non_negative",
                        BudgetUserPeriod::CommittedMicros,
                    ))
                    .check(non_negative(
                        "bup_reserved_non_negative",
                        BudgetUserPeriod::ReservedMicros,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetHold::Table)
                    .col(id(BudgetHold::CommunityId))
                    .col(id(BudgetHold::UserId))
                    .col(id(BudgetHold::IdempotencyKey))
                    .col(micros(BudgetHold::EstimateMicros))
                    .col(
                        ColumnDef::new(BudgetHold::ModelAlias)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(BudgetHold::Period).string_len(7).not_null())
                    .col(
                        ColumnDef::new(BudgetHold::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BudgetHold::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BudgetHold::CommunityId)
                            .col(BudgetHold::UserId)
                            .col(BudgetHold::IdempotencyKey),
                    )
                    .check(non_negative(
                        "bh_estimate_non_negative",
                        BudgetHold::EstimateMicros,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("budget_hold_expiry")
                    .table(BudgetHold::Table)
                    .col(BudgetHold::CommunityId)
                    .col(BudgetHold::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BudgetMarker::Table)
                    .col(id(BudgetMarker::CommunityId))
                    .col(id(BudgetMarker::UserId))
                    .col(id(BudgetMarker::IdempotencyKey))
                    .col(ColumnDef::new(BudgetMarker::Kind).string_len(16).not_null())
                    .col(
                        ColumnDef::new(BudgetMarker::ActualMicros)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(BudgetMarker::EstimateMicros)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(BudgetMarker::ModelAlias)
                            .string_len(64)
                            .null(),
                    )
                    .col(ColumnDef::new(BudgetMarker::Period).string_len(7).null())
                    .col(ColumnDef::new(BudgetMarker::CreatedAt).big_integer().null())
                    .col(
                        ColumnDef::new(BudgetMarker::HoldExpiresAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(BudgetMarker::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BudgetMarker::CommunityId)
                            .col(BudgetMarker::UserId)
                            .col(BudgetMarker::IdempotencyKey),
                    )
                    .check(Check::named(
                        "bm_kind_known",
                        Expr::col(BudgetMarker::Kind).is_in(["finalized", "reaped"]),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("budget_marker_expiry")
                    .table(BudgetMarker::Table)
                    .col(BudgetMarker::CommunityId)
                    .col(BudgetMarker::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BudgetMarker::Table.into_iden(),
            BudgetHold::Table.into_iden(),
            BudgetUserPeriod::Table.into_iden(),
            BudgetPeriod::Table.into_iden(),
            BudgetCommunity::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
