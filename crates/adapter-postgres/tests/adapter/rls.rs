//! Row-level security on PostgreSQL: a non-owner, non-superuser session of
//! community A can neither read nor write community B's rows.

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use spendgate_adapter_postgres::{SqlConfigRepo, SqlUsageLog};
use spendgate_domain::{CommunityId, ConfigVersion, Limits, Micros, Period, PricingOverrides};
use spendgate_ports::{CommunityConfig, ConfigProvider, UsageLog};

use crate::support::{Backend, TestDb, pg_admin_url, pg_url_with, unique_name};
use crate::usage_log::record;

async fn exec(db: &DatabaseConnection, sql: &str) -> Result<u64, sea_orm::DbErr> {
    db.execute_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .map(|r| r.rows_affected())
}

async fn ids(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// One connection (so the setting sticks) as `role`, scoped to `community`.
async fn tenant_session(t: &TestDb, role: &str, community: Option<&str>) -> DatabaseConnection {
    let url = pg_url_with(
        &pg_admin_url(),
        Some((role, "tenant-pw")),
        t.database_name().unwrap(),
    );
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect as {role} to {url}: {e}"));
    if let Some(c) = community {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('app.community_id', $1, false)",
            [c.into()],
        ))
        .await
        .unwrap();
    }
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_session_cannot_read_or_write_another_communitys_rows() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let role = unique_name("sg_tenant");
    t.drop_role_later(&role);
    let database = t.database_name().unwrap().to_owned();
    for sql in [
        format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'tenant-pw' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
        ),
        format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON community_agent_config, agent_usage_log TO {role}"
        ),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        t.db.execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    // The owner (the service) writes both communities.
    let owner_config = SqlConfigRepo::new(t.db.clone());
    for c in ["community-a", "community-b"] {
        owner_config
            .upsert(&CommunityConfig {
                community: CommunityId::parse(c).unwrap(),
                ai_enabled: true,
                limits: Limits::new(Micros::new(1_000).unwrap()),
                pricing_overrides: PricingOverrides::new(),
                version: ConfigVersion::ZERO,
            })
            .await
            .unwrap();
    }
    SqlUsageLog::new(t.db.clone())
        .append(&[
            record("community-a", "u", "k1", 10, "2026-11"),
            record("community-b", "u", "k1", 20, "2026-11"),
            record("community-b", "u", "k2", 30, "2026-11"),
        ])
        .await
        .unwrap();

    let a = tenant_session(&t, &role, Some("community-a")).await;
    // Reads: only A.
    assert_eq!(
        ids(&a, "SELECT community_id FROM community_agent_config").await,
        vec!["community-a"]
    );
    assert_eq!(
        ids(&a, "SELECT DISTINCT community_id FROM agent_usage_log").await,
        vec!["community-a"]
    );
    let repo = SqlConfigRepo::new(a.clone());
    let b_id = CommunityId::parse("community-b").unwrap();
    assert_eq!(repo.community(&b_id).await.unwrap(), None);
    assert_eq!(repo.active_communities().await.unwrap().len(), 1);
    let log = SqlUsageLog::new(a.clone());
    let november = Period::parse("2026-11").unwrap();
    assert_eq!(log.total_cost(&b_id, november).await.unwrap(), Micros::ZERO);
    assert_eq!(
        log.total_cost(&CommunityId::parse("community-a").unwrap(), november)
            .await
            .unwrap()
            .get(),
        10
    );

    // Writes to B: updates and deletes find nothing, inserts are refused.
    assert_eq!(
        exec(&a, "UPDATE community_agent_config SET monthly_budget_micros = 0 WHERE community_id = 'community-b'").await.unwrap(),
        0
    );
    assert_eq!(
        exec(
            &a,
            "DELETE FROM agent_usage_log WHERE community_id = 'community-b'"
        )
        .await
        .unwrap(),
        0
    );
    assert!(exec(&a, "INSERT INTO community_agent_config (community_id, created_at, updated_at) VALUES ('community-b2', 0, 0)").await.is_err());
    assert!(
        log.append(&[record("community-b", "u", "k9", 1, "2026-11")])
            .await
            .is_err()
    );
    // Moving an own row to B is refused too.
    assert!(exec(&a, "UPDATE agent_usage_log SET community_id = 'community-b' WHERE community_id = 'community-a'").await.is_err());
    // A's own rows stay writable.
    assert_eq!(
        exec(&a, "UPDATE community_agent_config SET monthly_budget_micros = 5 WHERE community_id = 'community-a'").await.unwrap(),
        1
    );
    assert_eq!(
        log.append(&[record("community-a", "u", "k2", 1, "2026-11")])
            .await
            .unwrap(),
        1
    );

    // Seen by the owner: B untouched.
    assert_eq!(t.count("SELECT monthly_budget_micros FROM community_agent_config WHERE community_id = 'community-b'").await, 1_000);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM agent_usage_log WHERE community_id = 'community-b'")
            .await,
        2
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM community_agent_config").await,
        2
    );

    // Without the setting a tenant session sees nothing at all.
    let anonymous = tenant_session(&t, &role, None).await;
    assert!(
        ids(
            &anonymous,
            "SELECT community_id FROM community_agent_config"
        )
        .await
        .is_empty()
    );
    assert!(
        ids(&anonymous, "SELECT community_id FROM agent_usage_log")
            .await
            .is_empty()
    );

    a.close().await.unwrap();
    anonymous.close().await.unwrap();
}
