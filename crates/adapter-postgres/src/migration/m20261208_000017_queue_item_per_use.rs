//! A queue item per use of a key: `finalize_outbox` and
//! `reconciliation_queue` become unique per (community, user, key,
//! hold_created_at) instead of per (community, user, key).
//!
//! The store forgets a settled key after its marker retention and then
//! accepts the key again. With one row per key, the new use's settlement
//! was taken for its earlier use's when that one still waited in the
//! queue (the database was down for longer than the retention, or the
//! earlier settlement was parked): it was dropped as a duplicate, and the
//! earlier use's completion removed the new one's row. Each use now has
//! its own row; an enqueue still queues one call once (it reads the key's
//! rows under a lock, see `work_queue`).
//!
//! `down` restores the old indexes, which fails while a key has rows for
//! more than one use: those rows are settlements not yet done and are not
//! deleted to make it fit.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Queue {
    CommunityId,
    UserId,
    IdempotencyKey,
    HoldCreatedAt,
}

/// (table, index per key, index per use).
const TABLES: [(&str, &str, &str); 2] = [
    (
        "finalize_outbox",
        "finalize_outbox_idempotency",
        "finalize_outbox_use",
    ),
    (
        "reconciliation_queue",
        "reconciliation_queue_idempotency",
        "reconciliation_queue_use",
    ),
];

fn unique(table: &str, name: &str, per_use: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name(name)
        .table(Alias::new(table))
        .col(Queue::CommunityId)
        .col(Queue::UserId)
        .col(Queue::IdempotencyKey);
    if per_use {
        index.col(Queue::HoldCreatedAt);
    }
    index.unique().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, per_key, per_use) in TABLES {
            manager.create_index(unique(table, per_use, true)).await?;
            manager
                .drop_index(
                    Index::drop()
                        .name(per_key)
                        .table(Alias::new(table))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, per_key, per_use) in TABLES {
            manager.create_index(unique(table, per_key, false)).await?;
            manager
                .drop_index(
                    Index::drop()
                        .name(per_use)
                        .table(Alias::new(table))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
