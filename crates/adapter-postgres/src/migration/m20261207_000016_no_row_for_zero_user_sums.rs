//! A user whose sums are both zero keeps no `budget_user_period` row
//! (issue 23): `spendgate_budget_write_user` deletes the row instead of
//! writing zeros, as the Rust transactions (SQLite) and the model do. A
//! reserve of estimate 0 used to add a row for free, and users are never
//! removed within a period otherwise, so anyone could grow a period's user
//! list without spending. Existing zero rows stay (listings skip them);
//! `down` restores the function that writes zeros.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use super::m20261129_000012_budget_operation_functions::WRITE_USER as WRITE_USER_ZEROS;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const WRITE_USER: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_write_user(p_community TEXT, p_period TEXT,
    p_user TEXT, p_committed BIGINT, p_reserved BIGINT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF p_committed = 0 AND p_reserved = 0 THEN
        DELETE FROM budget_user_period
            WHERE community_id = p_community AND period = p_period AND user_id = p_user;
        RETURN;
    END IF;
    INSERT INTO budget_user_period (community_id, period, user_id, committed_micros, reserved_micros)
        VALUES (p_community, p_period, p_user, p_committed, p_reserved)
        ON CONFLICT (community_id, period, user_id) DO UPDATE SET
            committed_micros = excluded.committed_micros, reserved_micros = excluded.reserved_micros;
END
$fn$;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(WRITE_USER)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(WRITE_USER_ZEROS)
            .await?;
        Ok(())
    }
}
