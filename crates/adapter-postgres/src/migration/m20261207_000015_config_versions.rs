//! Configuration versions (issue 23), so that no copy of a community's
//! configuration is ever replaced by an older one:
//!
//! * `community_agent_config.version`: the row's
//!   [`ConfigVersion`](spendgate_domain::ConfigVersion), issued by every
//!   write of the row (`max(version + 1, now in ms)`, see
//!   [`SqlConfigRepo`](crate::SqlConfigRepo)). Existing rows start at their
//!   `updated_at`, the value the rule gives a row written then.
//! * `budget_community.limits_version`: the version of the limits the SQL
//!   budget store holds; `set_limits` writes limits only when its version
//!   is at least this one. Existing rows get 0, so the next config sync
//!   writes them again with their version.
//! * On PostgreSQL `spendgate_budget_set_limits` takes the version
//!   (`p_version`) and applies it in the upsert's `WHERE`, under the row's
//!   lock; the old five-argument function is dropped (`down` restores it).
//!
//! Both columns are added the way SQLite accepts a NOT NULL column (one
//! `ADD COLUMN` each, a constant default, a column CHECK); `down` drops
//! them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use super::m20261129_000012_budget_operation_functions::SET_LIMITS as SET_LIMITS_UNVERSIONED;
use super::non_negative;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum CommunityAgentConfig {
    Table,
    Version,
}

#[derive(DeriveIden, Clone, Copy)]
enum BudgetCommunity {
    Table,
    LimitsVersion,
}

/// `set_limits` of a version: one upsert of the community's row, waiting
/// for its lock under the same bounds as every other write, whose `WHERE`
/// keeps limits of a newer version.
const SET_LIMITS: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_set_limits(
    p_community TEXT, p_limit BIGINT, p_cap BIGINT, p_version BIGINT,
    p_lock_timeout TEXT, p_statement_timeout TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true),
            set_config('statement_timeout', p_statement_timeout, true);
    INSERT INTO budget_community (community_id, limit_micros, per_user_cap_micros, limits_version)
        VALUES (p_community, p_limit, p_cap, p_version)
        ON CONFLICT (community_id) DO UPDATE SET limit_micros = excluded.limit_micros,
            per_user_cap_micros = excluded.per_user_cap_micros,
            limits_version = excluded.limits_version
        WHERE budget_community.limits_version <= excluded.limits_version;
END
$fn$;
"#;

const DROP_UNVERSIONED: &str =
    "DROP FUNCTION IF EXISTS spendgate_budget_set_limits(TEXT, BIGINT, BIGINT, TEXT, TEXT)";
const DROP_VERSIONED: &str =
    "DROP FUNCTION IF EXISTS spendgate_budget_set_limits(TEXT, BIGINT, BIGINT, BIGINT, TEXT, TEXT)";

fn version_column(column: impl IntoIden + Copy + 'static, check: &'static str) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .default(0_i64)
        .check(non_negative(check, column))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CommunityAgentConfig::Table)
                    .add_column(version_column(
                        CommunityAgentConfig::Version,
                        "cac_version_non_negative",
                    ))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE community_agent_config SET version = updated_at")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(BudgetCommunity::Table)
                    .add_column(version_column(
                        BudgetCommunity::LimitsVersion,
                        "bc_limits_version_non_negative",
                    ))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(DROP_UNVERSIONED).await?;
            db.execute_unprepared(SET_LIMITS).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared(DROP_VERSIONED).await?;
            db.execute_unprepared(SET_LIMITS_UNVERSIONED).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(BudgetCommunity::Table)
                    .drop_column(BudgetCommunity::LimitsVersion)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CommunityAgentConfig::Table)
                    .drop_column(CommunityAgentConfig::Version)
                    .to_owned(),
            )
            .await
    }
}
