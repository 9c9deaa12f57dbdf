//! Migrations: up / down / up, and the constraints they create.

use sea_orm::ConnectionTrait;
use spendgate_adapter_postgres::{Migrator, MigratorTrait, SqlConfigRepo};
use spendgate_domain::{CommunityId, ConfigVersion, Limits, Micros, PricingOverrides};
use spendgate_ports::{CommunityConfig, ConfigProvider, TierOverrideRepo};

use crate::support::{Backend, ManualClock, TestDb};

const TABLES: [&str; 6] = [
    "community_agent_config",
    "agent_usage_log",
    "finalize_outbox",
    "worker_lease",
    "reconciliation_queue",
    "idempotency_record",
];

/// The outbox estimate column (000006).
const ESTIMATE: &str = "m20261128_000006_finalize_outbox_estimate";
/// The worker lease table (000007).
const LEASE: &str = "m20261128_000007_create_worker_lease";
/// The reconciliation queue table (000008).
const RECONCILIATION: &str = "m20261128_000008_create_reconciliation_queue";
/// The idempotency record table (000011).
const IDEMPOTENCY: &str = "m20261129_000011_create_idempotency_record";
/// The queues' dead-letter column (000013).
const DEAD_LETTERS: &str = "m20261130_000013_queue_dead_letters";
/// The configuration versions (000015).
const VERSIONS: &str = "m20261207_000015_config_versions";

/// How many migrations, from `name` to the last one: `down` by this many
/// undoes `name` and every migration after it.
fn from(name: &str) -> u32 {
    let all = Migrator::migrations();
    let at = all
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no migration {name}"));
    u32::try_from(all.len() - at).unwrap()
}

async fn has_table(t: &TestDb, table: &str) -> bool {
    let sql = match t.backend {
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = '{table}'"
        ),
        Backend::Sqlite => {
            format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
        }
    };
    t.count(&sql).await == 1
}

async fn up_down_up(t: &TestDb) {
    let schema = t.single_connection().await;
    assert!(
        Migrator::get_pending_migrations(&schema)
            .await
            .unwrap()
            .is_empty()
    );
    for table in TABLES {
        assert!(has_table(t, table).await, "{table} after up");
    }
    Migrator::down(&schema, None).await.expect("down");
    for table in TABLES {
        assert!(!has_table(t, table).await, "{table} after down");
    }
    assert_eq!(
        Migrator::get_applied_migrations(&schema)
            .await
            .unwrap()
            .len(),
        0
    );
    Migrator::up(&schema, None).await.expect("up again");
    for table in TABLES {
        assert!(has_table(t, table).await, "{table} after second up");
    }
    // Running up again is a no-op.
    Migrator::up(&schema, None).await.expect("idempotent up");
    assert_eq!(
        Migrator::get_applied_migrations(&schema)
            .await
            .unwrap()
            .len(),
        Migrator::migrations().len()
    );
    schema.close().await.unwrap();
    // And the schema works.
    t.exec(
        "INSERT INTO community_agent_config (community_id, created_at, updated_at) VALUES ($1, 0, 0)",
        vec!["c1".into()],
    )
    .await
    .expect("insert after re-up");
    assert_eq!(
        t.count("SELECT monthly_budget_micros FROM community_agent_config")
            .await,
        1_000_000
    );
    if t.backend == Backend::Postgres {
        let rls = t
            .count("SELECT COUNT(*) FROM pg_class WHERE relrowsecurity AND relname IN ('community_agent_config', 'agent_usage_log')")
            .await;
        assert_eq!(rls, 2, "row-level security enabled after re-up");
    }
}

async fn check_constraints_refuse_bad_rows(t: &TestDb) {
    let refused = [
        "INSERT INTO community_agent_config (community_id, monthly_budget_micros, created_at, updated_at) VALUES ('neg', -1, 0, 0)",
        "INSERT INTO community_agent_config (community_id, per_user_cap_micros, created_at, updated_at) VALUES ('negcap', -5, 0, 0)",
        "INSERT INTO agent_usage_log (community_id, user_id, model_alias, prompt_tokens, completion_tokens, cost_micros, estimated_cost_micros, idempotency_key, source, period, created_at) VALUES ('c', 'u', 'cheap', 1, 1, -1, 0, 'k1', 'finalize', '2026-11', 0)",
        "INSERT INTO agent_usage_log (community_id, user_id, model_alias, prompt_tokens, completion_tokens, cost_micros, estimated_cost_micros, idempotency_key, source, period, created_at) VALUES ('c', 'u', 'cheap', -1, 1, 1, 0, 'k2', 'finalize', '2026-11', 0)",
        "INSERT INTO agent_usage_log (community_id, user_id, model_alias, prompt_tokens, completion_tokens, cost_micros, estimated_cost_micros, idempotency_key, source, period, created_at) VALUES ('c', 'u', 'cheap', 1, 1, 1, 0, 'k3', 'guess', '2026-11', 0)",
        "INSERT INTO agent_usage_log (community_id, user_id, model_alias, prompt_tokens, completion_tokens, cost_micros, estimated_cost_micros, idempotency_key, source, period, created_at) VALUES ('c', 'u', 'cheap', 1, 1, 1, 0, 'k4', 'finalize', 'November', 0)",
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at) VALUES ('c', 'u', 'k', -3, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0)",
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at, estimate_micros) VALUES ('c', 'u', 'k', 3, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0, -1)",
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at, estimate_micros) VALUES ('c', 'u', 'k', 3, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0, NULL)",
    ];
    for sql in refused {
        let result = t.db.execute_unprepared(sql).await;
        assert!(result.is_err(), "CHECK should refuse: {sql}");
    }
    // An update cannot sneak a negative in either.
    t.exec(
        "INSERT INTO community_agent_config (community_id, created_at, updated_at) VALUES ('ok', 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    assert!(t
        .exec("UPDATE community_agent_config SET monthly_budget_micros = -1 WHERE community_id = 'ok'", vec![])
        .await
        .is_err());
    assert!(
        t.exec(
            "UPDATE community_agent_config SET per_user_cap_micros = -1 WHERE community_id = 'ok'",
            vec![]
        )
        .await
        .is_err()
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM agent_usage_log").await, 0);
    assert_eq!(t.count("SELECT COUNT(*) FROM finalize_outbox").await, 0);
}

async fn has_column(t: &TestDb, table: &str, column: &str) -> bool {
    let sql = match t.backend {
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' AND column_name = '{column}'"
        ),
        Backend::Sqlite => {
            format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'")
        }
    };
    t.count(&sql).await == 1
}

/// The estimate column arrives on a table that already holds rows (they
/// read 0, "unknown"), and leaves again with `down`, rows kept.
async fn outbox_estimate_column_up_and_down_over_existing_rows(t: &TestDb) {
    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(ESTIMATE)))
        .await
        .expect("down to before the estimate");
    assert!(!has_column(t, "finalize_outbox", "estimate_micros").await);
    t.exec(
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at) VALUES ('c', 'u', 'old', 3, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    Migrator::up(&schema, None).await.expect("up again");
    assert!(has_column(t, "finalize_outbox", "estimate_micros").await);
    assert_eq!(
        t.count("SELECT estimate_micros FROM finalize_outbox WHERE idempotency_key = 'old'")
            .await,
        0
    );
    assert!(
        t.exec("UPDATE finalize_outbox SET estimate_micros = -1", vec![])
            .await
            .is_err(),
        "CHECK on the added column"
    );
    Migrator::down(&schema, Some(from(ESTIMATE)))
        .await
        .expect("down to before the estimate again");
    assert!(!has_column(t, "finalize_outbox", "estimate_micros").await);
    assert_eq!(t.count("SELECT COUNT(*) FROM finalize_outbox").await, 1);
    Migrator::up(&schema, None).await.expect("and up");
    schema.close().await.unwrap();
}

/// `down` to before `worker_lease` drops it (whatever rows it held) and
/// the migrations after it, and nothing older; `up` brings it back empty;
/// its columns are NOT NULL and `name` is its primary key.
async fn worker_lease_up_and_down(t: &TestDb) {
    for column in ["name", "holder", "expires_at"] {
        assert!(has_column(t, "worker_lease", column).await, "{column}");
    }
    t.exec(
        "INSERT INTO worker_lease (name, holder, expires_at) VALUES ('reaper', 'a', 5)",
        vec![],
    )
    .await
    .unwrap();
    let refused = [
        "INSERT INTO worker_lease (name, holder, expires_at) VALUES ('reaper', 'b', 6)",
        "INSERT INTO worker_lease (name, holder, expires_at) VALUES (NULL, 'b', 6)",
        "INSERT INTO worker_lease (name, holder, expires_at) VALUES ('sync', NULL, 6)",
        "INSERT INTO worker_lease (name, holder, expires_at) VALUES ('sync', 'b', NULL)",
    ];
    for sql in refused {
        assert!(t.db.execute_unprepared(sql).await.is_err(), "{sql}");
    }

    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(LEASE)))
        .await
        .expect("down to before the lease");
    assert!(!has_table(t, "worker_lease").await);
    assert!(!has_table(t, "reconciliation_queue").await);
    assert!(has_column(t, "finalize_outbox", "estimate_micros").await);
    for table in &TABLES[..3] {
        assert!(
            has_table(t, table).await,
            "{table} after dropping the lease table"
        );
    }
    Migrator::up(&schema, None).await.expect("up again");
    schema.close().await.unwrap();
    assert!(has_table(t, "worker_lease").await);
    assert_eq!(t.count("SELECT COUNT(*) FROM worker_lease").await, 0);
}

/// `reconciliation_queue` is the last migration: `down` by one drops it
/// (and only it, whatever rows it held), `up` brings it back empty; its
/// CHECKs and its unique (community, user, key) refuse bad rows.
async fn reconciliation_queue_up_and_down(t: &TestDb) {
    for column in [
        "id",
        "community_id",
        "user_id",
        "idempotency_key",
        "estimate_micros",
        "model_alias",
        "period",
        "hold_created_at",
        "hold_expires_at",
        "trace_id",
        "handed_at",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "last_error",
        "created_at",
    ] {
        assert!(
            has_column(t, "reconciliation_queue", column).await,
            "{column}"
        );
    }
    let insert = |values: &str| {
        format!(
            "INSERT INTO reconciliation_queue (community_id, user_id, idempotency_key, estimate_micros, model_alias, period, hold_created_at, hold_expires_at, handed_at, attempts, next_attempt_at, created_at) VALUES ({values})"
        )
    };
    t.db.execute_unprepared(&insert(
        "'c', 'u', 'k', 5, 'cheap', '2026-11', 1, 2, 3, 0, 0, 0",
    ))
    .await
    .unwrap();
    let refused = [
        // The same (community, user, key).
        "'c', 'u', 'k', 6, 'cheap', '2026-11', 1, 2, 3, 0, 0, 0",
        "'c', 'u', 'k1', -1, 'cheap', '2026-11', 1, 2, 3, 0, 0, 0",
        "'c', 'u', 'k2', 5, 'cheap', 'November', 1, 2, 3, 0, 0, 0",
        "'c', 'u', 'k3', 5, 'cheap', '2026-11', -1, 2, 3, 0, 0, 0",
        "'c', 'u', 'k4', 5, 'cheap', '2026-11', 1, -2, 3, 0, 0, 0",
        "'c', 'u', 'k5', 5, 'cheap', '2026-11', 1, 2, -3, 0, 0, 0",
        "'c', 'u', 'k6', 5, 'cheap', '2026-11', 1, 2, 3, -1, 0, 0",
        "'c', 'u', 'k7', NULL, 'cheap', '2026-11', 1, 2, 3, 0, 0, 0",
        "'c', 'u', 'k8', 5, 'cheap', '2026-11', 1, 2, 3, 0, NULL, 0",
    ];
    for values in refused {
        let sql = insert(values);
        assert!(t.db.execute_unprepared(&sql).await.is_err(), "{sql}");
    }
    assert_eq!(
        t.count("SELECT COUNT(*) FROM reconciliation_queue").await,
        1
    );

    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(RECONCILIATION)))
        .await
        .expect("down to before the reconciliation queue");
    assert!(!has_table(t, "reconciliation_queue").await);
    for table in &TABLES[..4] {
        assert!(
            has_table(t, table).await,
            "{table} after dropping the reconciliation queue"
        );
    }
    Migrator::up(&schema, None).await.expect("up again");
    schema.close().await.unwrap();
    assert!(has_table(t, "reconciliation_queue").await);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM reconciliation_queue").await,
        0
    );
}

async fn updated_at_is_maintained_by_every_write(t: &TestDb) {
    let clock = ManualClock::at(1_000);
    let repo = SqlConfigRepo::with_clock(t.db.clone(), clock.clone());
    let community = CommunityId::parse("stamp").unwrap();
    let mut config = CommunityConfig {
        community: community.clone(),
        ai_enabled: true,
        limits: Limits::new(Micros::new(5).unwrap()),
        pricing_overrides: PricingOverrides::new(),
        version: ConfigVersion::ZERO,
    };
    repo.upsert(&config).await.unwrap();
    clock.set(2_000);
    config.limits = Limits::new(Micros::new(6).unwrap());
    repo.upsert(&config).await.unwrap();
    assert_eq!(
        t.count("SELECT created_at FROM community_agent_config")
            .await,
        1_000
    );
    assert_eq!(
        t.count("SELECT updated_at FROM community_agent_config")
            .await,
        2_000
    );
    clock.set(3_000);
    repo.set_tier_overrides(&community, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        t.count("SELECT created_at FROM community_agent_config")
            .await,
        1_000
    );
    assert_eq!(
        t.count("SELECT updated_at FROM community_agent_config")
            .await,
        3_000
    );
}

/// `down` to before `idempotency_record` drops it (whatever rows it held)
/// and nothing older; `up` brings it back empty, with its columns and its
/// `keep_until` index.
async fn idempotency_record_up_and_down(t: &TestDb) {
    for column in [
        "tenant",
        "operation",
        "resource",
        "request_key",
        "fingerprint",
        "response_status",
        "response_body",
        "keep_until",
    ] {
        assert!(
            has_column(t, "idempotency_record", column).await,
            "{column}"
        );
    }
    let index = match t.backend {
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'idempotency_record_keep_until'"
        }
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'idempotency_record_keep_until'"
        }
    };
    assert_eq!(t.count(index).await, 1);
    let insert = match t.backend {
        Backend::Postgres => {
            "INSERT INTO idempotency_record (tenant, operation, resource, request_key, fingerprint, keep_until) VALUES ('c', 'create', '', 'k', '\\x01'::bytea, 5)"
        }
        Backend::Sqlite => {
            "INSERT INTO idempotency_record (tenant, operation, resource, request_key, fingerprint, keep_until) VALUES ('c', 'create', '', 'k', X'01', 5)"
        }
    };
    t.db.execute_unprepared(insert).await.unwrap();

    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(IDEMPOTENCY)))
        .await
        .expect("down to before the idempotency records");
    assert!(!has_table(t, "idempotency_record").await);
    for table in &TABLES[..5] {
        assert!(
            has_table(t, table).await,
            "{table} after dropping the records"
        );
    }
    Migrator::up(&schema, None).await.expect("up again");
    schema.close().await.unwrap();
    assert_eq!(t.count("SELECT COUNT(*) FROM idempotency_record").await, 0);
    assert_eq!(t.count(index).await, 1);
}

/// `dead_at` arrives on both queue tables over existing rows (they are
/// live), and `down` drops it again with the rows kept, a dead row due
/// again at the time it died.
async fn queue_dead_letter_column_up_and_down_over_existing_rows(t: &TestDb) {
    for table in ["finalize_outbox", "reconciliation_queue"] {
        assert!(has_column(t, table, "dead_at").await, "{table}");
    }
    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(DEAD_LETTERS)))
        .await
        .expect("down to before the dead letters");
    for table in ["finalize_outbox", "reconciliation_queue"] {
        assert!(!has_column(t, table, "dead_at").await, "{table}");
    }
    t.exec(
        "INSERT INTO finalize_outbox (community_id, user_id, idempotency_key, actual_cost_micros, period, model_alias, prompt_tokens, completion_tokens, source, next_attempt_at, created_at) VALUES ('c', 'u', 'old', 3, '2026-11', 'cheap', 0, 0, 'finalize', 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    Migrator::up(&schema, None).await.expect("up again");
    assert_eq!(
        t.count("SELECT COUNT(*) FROM finalize_outbox WHERE dead_at IS NULL")
            .await,
        1
    );
    t.exec(
        "UPDATE finalize_outbox SET dead_at = 7, next_attempt_at = 9223372036854775807",
        vec![],
    )
    .await
    .unwrap();
    Migrator::down(&schema, Some(from(DEAD_LETTERS)))
        .await
        .expect("down again, over a dead row");
    assert!(!has_column(t, "finalize_outbox", "dead_at").await);
    assert_eq!(
        t.count("SELECT next_attempt_at FROM finalize_outbox").await,
        7
    );
    Migrator::up(&schema, None).await.expect("and up");
    schema.close().await.unwrap();
}

/// The version columns arrive over existing rows (a configuration starts
/// at its `updated_at`, stored limits at 0, so the next sync writes them)
/// and leave again with `down`, rows kept; on PostgreSQL the set-limits
/// function takes a version after `up` and none after `down`.
async fn config_versions_up_and_down_over_existing_rows(t: &TestDb) {
    let schema = t.single_connection().await;
    Migrator::down(&schema, Some(from(VERSIONS)))
        .await
        .expect("down to before the versions");
    assert!(!has_column(t, "community_agent_config", "version").await);
    assert!(!has_column(t, "budget_community", "limits_version").await);
    t.exec(
        "INSERT INTO community_agent_config (community_id, ai_enabled, monthly_budget_micros, created_at, updated_at) VALUES ('old', true, 5, 1000, 1765400000000)",
        vec![],
    )
    .await
    .unwrap();
    t.exec(
        "INSERT INTO budget_community (community_id, limit_micros) VALUES ('old', 5)",
        vec![],
    )
    .await
    .unwrap();
    let function = "SELECT COUNT(*) FROM pg_proc WHERE proname = 'spendgate_budget_set_limits' AND pronargs = ";
    if t.backend == Backend::Postgres {
        assert_eq!(t.count(&format!("{function}5")).await, 1);
    }

    Migrator::up(&schema, None).await.expect("up again");
    assert_eq!(
        t.count("SELECT version FROM community_agent_config WHERE community_id = 'old'")
            .await,
        1_765_400_000_000
    );
    assert_eq!(
        t.count("SELECT limits_version FROM budget_community WHERE community_id = 'old'")
            .await,
        0
    );
    for (sql, what) in [
        (
            "UPDATE community_agent_config SET version = -1",
            "config version",
        ),
        (
            "UPDATE budget_community SET limits_version = -1",
            "limits version",
        ),
    ] {
        assert!(t.exec(sql, vec![]).await.is_err(), "CHECK on the {what}");
    }
    if t.backend == Backend::Postgres {
        assert_eq!(t.count(&format!("{function}5")).await, 0);
        assert_eq!(t.count(&format!("{function}6")).await, 1);
    }

    Migrator::down(&schema, Some(from(VERSIONS)))
        .await
        .expect("down again");
    assert!(!has_column(t, "community_agent_config", "version").await);
    assert!(!has_column(t, "budget_community", "limits_version").await);
    assert_eq!(t.count("SELECT COUNT(*) FROM budget_community").await, 1);
    if t.backend == Backend::Postgres {
        assert_eq!(t.count(&format!("{function}5")).await, 1);
        assert_eq!(t.count(&format!("{function}6")).await, 0);
    }
    Migrator::up(&schema, None).await.expect("and up");
    schema.close().await.unwrap();
}

crate::on_both_backends!(
    up_down_up,
    queue_dead_letter_column_up_and_down_over_existing_rows,
    idempotency_record_up_and_down,
    check_constraints_refuse_bad_rows,
    outbox_estimate_column_up_and_down_over_existing_rows,
    worker_lease_up_and_down,
    reconciliation_queue_up_and_down,
    updated_at_is_maintained_by_every_write,
    config_versions_up_and_down_over_existing_rows,
);
