//! Malformed override JSON in the database: a typed error naming the
//! community and the field, never a panic, never a silent drop.

use spendgate_adapter_postgres::SqlConfigRepo;
use spendgate_adapter_postgres::overrides::MAX_OVERRIDE_BYTES;
use spendgate_domain::CommunityId;
use spendgate_ports::{ConfigProvider, RepoError, TierOverrideRepo};

use crate::support::{Backend, TestDb};

/// (stored JSON, field the error must name)
fn tier_cases() -> Vec<(String, &'static str)> {
    vec![
        (r#"{"0": "pro"}"#.into(), "tier_overrides.0"),
        (r#"{"10": "pro"}"#.into(), "tier_overrides.10"),
        (r#"{"-1": "pro"}"#.into(), "tier_overrides.-1"),
        (r#"{"04": "pro"}"#.into(), "tier_overrides.04"),
        (r#"{"four": "pro"}"#.into(), "tier_overrides.four"),
        (
            r#"{"99999999999999999999": "pro"}"#.into(),
            "tier_overrides.99999999999999999999",
        ),
        (r#"{"4": "platinum"}"#.into(), "tier_overrides.4"),
        (r#"{"4": "Pro"}"#.into(), "tier_overrides.4"),
        (r#"{"4": 4}"#.into(), "tier_overrides.4"),
        (r#"{"4": null}"#.into(), "tier_overrides.4"),
        (r#"{"4": ["pro"]}"#.into(), "tier_overrides.4"),
        (r#"["pro"]"#.into(), "tier_overrides"),
        (r#""pro""#.into(), "tier_overrides"),
        ("42".into(), "tier_overrides"),
        ("true".into(), "tier_overrides"),
        (oversized(), "tier_overrides"),
    ]
}

fn pricing_cases() -> Vec<(String, &'static str)> {
    let ok = r#"{"input_per_million": 1, "output_per_million": 2}"#;
    vec![
        (format!(r#"{{"gpt-9": {ok}}}"#), "pricing_overrides.gpt-9"),
        (
            format!(r#"{{"reasonning": {ok}}}"#),
            "pricing_overrides.reasonning",
        ),
        (
            format!(r#"{{"bad alias": {ok}}}"#),
            "pricing_overrides.bad alias",
        ),
        (format!(r#"{{"": {ok}}}"#), "pricing_overrides."),
        (
            r#"{"cheap": {"input_per_million": -1, "output_per_million": 2}}"#.into(),
            "pricing_overrides.cheap.input_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": 1, "output_per_million": 1.5}}"#.into(),
            "pricing_overrides.cheap.output_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": 2.0, "output_per_million": 2}}"#.into(),
            "pricing_overrides.cheap.input_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": 10000000000000000000, "output_per_million": 2}}"#
                .into(),
            "pricing_overrides.cheap.input_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": "150000", "output_per_million": 2}}"#.into(),
            "pricing_overrides.cheap.input_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": 1}}"#.into(),
            "pricing_overrides.cheap.output_per_million",
        ),
        (
            r#"{"cheap": {"input_per_million": 1, "output_per_million": 2, "currency": "EUR"}}"#
                .into(),
            "pricing_overrides.cheap.currency",
        ),
        (r#"{"cheap": 5}"#.into(), "pricing_overrides.cheap"),
        (r#"{"cheap": [1, 2]}"#.into(), "pricing_overrides.cheap"),
        ("[]".into(), "pricing_overrides"),
        (r#""cheap""#.into(), "pricing_overrides"),
        (oversized(), "pricing_overrides"),
    ]
}

/// Valid JSON, but longer than the limit.
fn oversized() -> String {
    format!(
        r#"{{"4": "pro", "padding": "{}"}}"#,
        "x".repeat(MAX_OVERRIDE_BYTES)
    )
}

async fn store(t: &TestDb, community: &str, column: &str, json: &str) {
    let sql = format!(
        "INSERT INTO community_agent_config (community_id, ai_enabled, {column}, created_at, updated_at) \
         VALUES ($1, $2, {}, 0, 0)",
        t.json_param(3)
    );
    t.exec(&sql, vec![community.into(), true.into(), json.into()])
        .await
        .unwrap_or_else(|e| panic!("storing {json:.80}: {e}"));
}

#[track_caller]
fn assert_bad(
    result: Result<impl std::fmt::Debug, RepoError>,
    community: &str,
    field: &str,
    json: &str,
) {
    match result {
        Err(RepoError::BadData {
            community: c,
            field: f,
            reason,
        }) => {
            assert_eq!(c, community, "community for {json:.80}");
            assert_eq!(f, field, "field for {json:.80} ({reason})");
            assert!(!reason.is_empty());
        }
        other => panic!("{json:.80}: expected BadData naming {field}, got {other:?}"),
    }
}

async fn malformed_tier_overrides_are_bad_data(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    for (i, (json, field)) in tier_cases().into_iter().enumerate() {
        let community = format!("tier-{i}");
        store(t, &community, "tier_overrides", &json).await;
        let id = CommunityId::parse(community.as_str()).unwrap();
        assert_bad(repo.tier_overrides(&id).await, &community, field, &json);
        // The pricing side of the same row is fine.
        assert!(repo.community(&id).await.unwrap().is_some());
    }
}

async fn malformed_pricing_overrides_are_bad_data(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    for (i, (json, field)) in pricing_cases().into_iter().enumerate() {
        let community = format!("price-{i}");
        store(t, &community, "pricing_overrides", &json).await;
        let id = CommunityId::parse(community.as_str()).unwrap();
        assert_bad(repo.community(&id).await, &community, field, &json);
        // One bad row fails the whole listing: never dropped silently.
        assert_bad(repo.active_communities().await, &community, field, &json);
        t.exec(
            "DELETE FROM community_agent_config WHERE community_id = $1",
            vec![community.clone().into()],
        )
        .await
        .unwrap();
    }
}

async fn json_null_and_sql_null_mean_no_overrides(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    store(t, "json-null", "tier_overrides", "null").await;
    t.exec(
        "INSERT INTO community_agent_config (community_id, ai_enabled, created_at, updated_at) VALUES ('sql-null', true, 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    for c in ["json-null", "sql-null"] {
        let id = CommunityId::parse(c).unwrap();
        assert!(repo.tier_overrides(&id).await.unwrap().value.is_empty());
        assert!(
            repo.community(&id)
                .await
                .unwrap()
                .unwrap()
                .pricing_overrides
                .is_empty()
        );
    }
}

async fn invalid_json_text_is_bad_data(t: &TestDb) {
    // PostgreSQL's JSONB refuses malformed JSON on write; SQLite stores any
    // text, so the repository must catch it on read.
    if t.backend == Backend::Postgres {
        let sql = format!(
            "INSERT INTO community_agent_config (community_id, tier_overrides, created_at, updated_at) VALUES ('x', {}, 0, 0)",
            t.json_param(1)
        );
        assert!(t.exec(&sql, vec!["{not json".into()]).await.is_err());
        return;
    }
    let repo = SqlConfigRepo::new(t.db.clone());
    store(t, "garbled", "tier_overrides", "{\"4\": \"pro\"").await;
    store(t, "garbled-price", "pricing_overrides", "{cheap}").await;
    let garbled = CommunityId::parse("garbled").unwrap();
    assert_bad(
        repo.tier_overrides(&garbled).await,
        "garbled",
        "tier_overrides",
        "garbled",
    );
    let price = CommunityId::parse("garbled-price").unwrap();
    assert_bad(
        repo.community(&price).await,
        "garbled-price",
        "pricing_overrides",
        "{cheap}",
    );
}

async fn invalid_community_id_in_a_row_is_bad_data(t: &TestDb) {
    let repo = SqlConfigRepo::new(t.db.clone());
    t.exec(
        "INSERT INTO community_agent_config (community_id, ai_enabled, created_at, updated_at) VALUES ('has space', true, 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    assert_bad(
        repo.active_communities().await,
        "has space",
        "community_id",
        "id",
    );
}

crate::on_both_backends!(
    malformed_tier_overrides_are_bad_data,
    malformed_pricing_overrides_are_bad_data,
    json_null_and_sql_null_mean_no_overrides,
    invalid_json_text_is_bad_data,
    invalid_community_id_in_a_row_is_bad_data,
);
