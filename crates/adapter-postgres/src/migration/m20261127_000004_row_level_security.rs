//! Row-level security on PostgreSQL: a session sees and writes only the
//! rows of the community named by its `app.community_id` setting.
//!
//! Owners and superusers bypass RLS (it is enabled, not forced), so the
//! service's own role — which owns the tables and runs the workers across
//! every community — is unaffected. Per-community sessions connect as a
//! non-owner role and `SET app.community_id = '<community>'`; without the
//! setting they see nothing. SQLite has no row-level security: this
//! migration does nothing there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The name of the session setting the policies read.
pub const COMMUNITY_SETTING: &str = "app.community_id";

/// Tables carrying a per-community policy.
pub const PROTECTED_TABLES: [&str; 2] = ["community_agent_config", "agent_usage_log"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in PROTECTED_TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
                 CREATE POLICY {table}_per_community ON {table} \
                   USING (community_id = current_setting('{COMMUNITY_SETTING}', true)) \
                   WITH CHECK (community_id = current_setting('{COMMUNITY_SETTING}', true));"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in PROTECTED_TABLES {
            db.execute_unprepared(&format!(
                "DROP POLICY IF EXISTS {table}_per_community ON {table}; \
                 ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
            ))
            .await?;
        }
        Ok(())
    }
}
