//! `config`: the effective configuration, secrets redacted.

use crate::support::Sandbox;

#[tokio::test]
async fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let s = Sandbox::new()
        .env(
            "SPENDGATE_DATABASE_URL",
            "postgres://app:pg-secret@db:5432/spend",
        )
        .env(
            "SPENDGATE_API_TOKENS",
            "token-secret-0123456789=guild-1|guild-2",
        );
    let doc = s
        .run(&[
            "--database-url",
            "postgres://app:flag-secret@db:5432/spend",
            "--redis-url",
            "redis://:redis-secret@cache:6379",
            "config",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(doc["database_url"], "postgres://app:***@db:5432/spend");
    assert_eq!(doc["redis_url"], "redis://:***@cache:6379");
    assert_eq!(doc["http"]["tokens"][0], "***=guild-1|guild-2");
    let text = doc.to_string();
    for secret in ["pg-secret", "flag-secret", "redis-secret", "token-secret"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[tokio::test]
async fn config_prints_toml_by_default_with_the_embedded_defaults() {
    let s = Sandbox::new();
    let run = s.run(&["config"]).await;
    let table: toml::Table = toml::from_str(&run.out).unwrap();
    assert!(
        table["database_url"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
    assert_eq!(table["http"]["bind"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(table["http"]["body_limit_bytes"].as_integer(), Some(65_536));
    assert_eq!(table["workers"]["reaper_secs"].as_integer(), Some(60));
}

#[tokio::test]
async fn config_reads_the_file_named_by_the_flag() {
    let s = Sandbox::new();
    let file = s.path("spendgate.toml");
    std::fs::write(&file, "log_level = \"debug\"\n[workers]\ndrift_secs = 42\n").unwrap();
    let doc = s
        .run(&["--config", &file, "config", "--json"])
        .await
        .ok_json();
    assert_eq!(doc["log_level"], "debug");
    assert_eq!(doc["workers"]["drift_secs"], 42);
}
