//! `idempotency_record`: the first answer to a request, kept so that a
//! replay gets it again and a key reused for another request is refused
//! (see [`SqlIdempotency`](crate::SqlIdempotency)).
//!
//! One row per (tenant, operation, resource, request_key), the primary
//! key: the request's `fingerprint` (bytes, compared byte for byte), the
//! answer once the request completed (`response_status` and
//! `response_body`, both NULL while it is pending, both set after: a CHECK
//! holds them together) and `keep_until` (milliseconds since the epoch,
//! like every other time column), after which the row may be replaced or
//! purged. The index `idempotency_record_keep_until` lets a purge read only
//! the rows it deletes, oldest first. `down` drops the table, whatever rows
//! it held.

use sea_orm_migration::prelude::*;

use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum IdempotencyRecord {
    Table,
    Tenant,
    Operation,
    Resource,
    RequestKey,
    Fingerprint,
    ResponseStatus,
    ResponseBody,
    KeepUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use IdempotencyRecord as R;
        let pending = Expr::col(R::ResponseStatus)
            .is_null()
            .and(Expr::col(R::ResponseBody).is_null());
        let completed = Expr::col(R::ResponseStatus)
            .is_not_null()
            .and(Expr::col(R::ResponseBody).is_not_null());
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::Tenant).string_len(128).not_null())
                    .col(ColumnDef::new(R::Operation).string_len(32).not_null())
                    .col(ColumnDef::new(R::Resource).string_len(256).not_null())
                    .col(ColumnDef::new(R::RequestKey).string_len(256).not_null())
                    .col(ColumnDef::new(R::Fingerprint).blob().not_null())
                    .col(ColumnDef::new(R::ResponseStatus).small_integer().null())
                    .col(ColumnDef::new(R::ResponseBody).blob().null())
                    .col(ColumnDef::new(R::KeepUntil).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(R::Tenant)
                            .col(R::Operation)
                            .col(R::Resource)
                            .col(R::RequestKey),
                    )
                    .check(non_negative("ir_keep_until_non_negative", R::KeepUntil))
                    .check(Check::named("ir_response_whole", pending.or(completed)))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_record_keep_until")
                    .table(R::Table)
                    .col(R::KeepUntil)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyRecord::Table).to_owned())
            .await
    }
}
