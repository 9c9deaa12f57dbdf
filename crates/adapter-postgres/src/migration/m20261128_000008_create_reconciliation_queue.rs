//! `reconciliation_queue`: holds whose guard was dropped before the call was
//! settled, kept durably until reconciliation has the provider's word on
//! their cost (the [`spendgate_ports::Handover`] queue, see
//! [`SqlReconciliationQueue`](crate::SqlReconciliationQueue)).
//!
//! One row per (community, user, key), holding the whole hold as the
//! reserve made it (estimate, model, period, created_at, expires_at), the
//! trace id and when it was handed over, plus the queue's own columns, the
//! same as `finalize_outbox`'s: `attempts`, `next_attempt_at`,
//! `claimed_until` (a claimer's lease), `last_error`, `created_at`.
//! Timestamps are milliseconds since the epoch. `down` drops the table,
//! whatever rows it held.

use sea_orm_migration::prelude::*;

use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ReconciliationQueue {
    Table,
    Id,
    CommunityId,
    UserId,
    IdempotencyKey,
    EstimateMicros,
    ModelAlias,
    Period,
    HoldCreatedAt,
    HoldExpiresAt,
    TraceId,
    HandedAt,
    Attempts,
    NextAttemptAt,
    ClaimedUntil,
    LastError,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ReconciliationQueue as Q;
        manager
            .create_table(
                Table::create()
                    .table(Q::Table)
                    .col(
                        ColumnDef::new(Q::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Q::CommunityId).string_len(128).not_null())
                    .col(ColumnDef::new(Q::UserId).string_len(128).not_null())
                    .col(ColumnDef::new(Q::IdempotencyKey).string_len(128).not_null())
                    .col(ColumnDef::new(Q::EstimateMicros).big_integer().not_null())
                    .col(ColumnDef::new(Q::ModelAlias).string_len(64).not_null())
                    .col(ColumnDef::new(Q::Period).string_len(7).not_null())
                    .col(ColumnDef::new(Q::HoldCreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Q::HoldExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(Q::TraceId).string_len(256).null())
                    .col(ColumnDef::new(Q::HandedAt).big_integer().not_null())
                    .col(ColumnDef::new(Q::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(Q::NextAttemptAt).big_integer().not_null())
                    .col(ColumnDef::new(Q::ClaimedUntil).big_integer().null())
                    .col(ColumnDef::new(Q::LastError).text().null())
                    .col(ColumnDef::new(Q::CreatedAt).big_integer().not_null())
                    .check(non_negative("rq_estimate_non_negative", Q::EstimateMicros))
                    .check(non_negative(
                        "rq_hold_created_at_non_negative",
                        Q::HoldCreatedAt,
                    ))
                    .check(non_negative(
                        "rq_hold_expires_at_non_negative",
                        Q::HoldExpiresAt,
                    ))
                    .check(non_negative("rq_handed_at_non_negative", Q::HandedAt))
                    .check(non_negative("rq_attempts_non_negative", Q::Attempts))
                    .check(Check::named(
                        "rq_period_shape",
                        Expr::col(Q::Period).like("____-__"),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reconciliation_queue_idempotency")
                    .table(Q::Table)
                    .col(Q::CommunityId)
                    .col(Q::UserId)
                    .col(Q::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reconciliation_queue_due")
                    .table(Q::Table)
                    .col(Q::NextAttemptAt)
                    .col(Q::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ReconciliationQueue::Table).to_owned())
            .await
    }
}
