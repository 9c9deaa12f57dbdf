//! `spendgate_budget_lookup`, a PL/pgSQL function that locks a community's
//! `budget_community` row and only then reads the hold and the live marker
//! of one (user, key), in one round trip.
//!
//! Under READ COMMITTED a single `SELECT … FOR UPDATE OF c` with the hold
//! and marker joined re-checks only the locked row after waiting for the
//! lock: the joined rows come from the snapshot taken before the wait, so
//! two same-key writers could both see a hold that the first of them
//! already deleted (issue 8). Inside a volatile function each statement
//! takes a new snapshot, so the read that follows the lock sees everything
//! the previous holder of the lock committed.
//!
//! The function first sets the transaction's `lock_timeout` and
//! `statement_timeout` (`SET LOCAL` semantics) from its arguments, so the
//! wait for the lock is bounded without another round trip. With
//! `p_create` it first inserts the community's row (no limits) when
//! missing. It returns no row when the community has none.
//!
//! PostgreSQL only; on SQLite the migration does nothing (`BEGIN
//! IMMEDIATE` takes the write lock before the transaction's first read).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The function's name.
pub(crate) const LOOKUP_FUNCTION: &str = "spendgate_budget_lookup";

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_lookup(
    p_community TEXT, p_user TEXT, p_key TEXT, p_now BIGINT, p_create BOOLEAN,
    p_lock_timeout TEXT, p_statement_timeout TEXT)
RETURNS TABLE (
    limit_micros BIGINT, per_user_cap_micros BIGINT,
    h_estimate BIGINT, h_model TEXT, h_period TEXT, h_created BIGINT, h_expires BIGINT,
    m_kind TEXT, m_actual BIGINT, m_estimate BIGINT, m_model TEXT, m_period TEXT,
    m_created BIGINT, m_hold_expires BIGINT)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_limit BIGINT;
    v_cap BIGINT;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true),
            set_config('statement_timeout', p_statement_timeout, true);
    IF p_create THEN
        INSERT INTO budget_community (community_id) VALUES (p_community)
            ON CONFLICT (community_id) DO NOTHING;
    END IF;
    SELECT c.limit_micros, c.per_user_cap_micros INTO v_limit, v_cap
        FROM budget_community c WHERE c.community_id = p_community FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A new statement: a new snapshot, taken with the lock held.
    RETURN QUERY
    SELECT v_limit, v_cap,
           h.estimate_micros, h.model_alias::TEXT, h.period::TEXT, h.created_at, h.expires_at,
           m.kind::TEXT, m.actual_micros, m.estimate_micros, m.model_alias::TEXT,
           m.period::TEXT, m.created_at, m.hold_expires_at
      FROM (SELECT 1 AS one) x
      LEFT JOIN budget_hold h ON h.community_id = p_community
           AND h.user_id = p_user AND h.idempotency_key = p_key
      LEFT JOIN budget_marker m ON m.community_id = p_community
           AND m.user_id = p_user AND m.idempotency_key = p_key AND m.expires_at > p_now;
END
$fn$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "DROP FUNCTION IF EXISTS {LOOKUP_FUNCTION}(TEXT, TEXT, TEXT, BIGINT, BOOLEAN, TEXT, TEXT)"
            ))
            .await?;
        Ok(())
    }
}
