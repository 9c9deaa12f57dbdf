//! `config`: the effective configuration, secrets redacted.

use spendgate::inbound::cli::Exit;

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
    assert_eq!(doc["http"]["tokens"][0], "tenant=***=guild-1|guild-2");
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
    let http = &table["http"];
    assert_eq!(http["header_read_timeout_ms"].as_integer(), Some(10_000));
    assert_eq!(http["idle_timeout_ms"].as_integer(), Some(60_000));
    assert_eq!(http["max_connections"].as_integer(), Some(1024));
    assert!(http.get("metrics_token").is_none());
}

#[tokio::test]
async fn config_prints_each_tokens_role_and_communities_and_hides_secrets() {
    let s = Sandbox::new()
        .env(
            "SPENDGATE_API_TOKENS",
            "legacy-secret-0123456,legacy-scoped-0123456=guild-1,operator=op-secret-0123456=guild-2|guild-3",
        )
        .env("SPENDGATE_HTTP_METRICS_TOKEN", "scrape-secret-0123456");
    let run = s.run(&["config"]).await;
    let table: toml::Table = toml::from_str(&run.out).unwrap();
    let tokens: Vec<&str> = table["http"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tokens,
        [
            "operator=***",
            "tenant=***=guild-1",
            "operator=***=guild-2|guild-3"
        ]
    );
    assert_eq!(table["http"]["metrics_token"].as_str(), Some("***"));
    assert!(!run.out.contains("secret-0123456"), "{}", run.out);
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

/// Secrets in query parameters of every URL setting (issue 23).
const QUERY_SECRETS: [&str; 4] = ["pg-query-secret", "ssl-secret", "node-secret", "api-secret"];

#[tokio::test]
async fn config_hides_secrets_in_url_query_parameters() {
    let s = Sandbox::new();
    let args = [
        "--database-url",
        "postgres://app@db:5432/spend?sslmode=require&password=pg-query-secret&sslpassword=ssl-secret",
        "--redis-cluster-urls",
        "redis://n1:7001?password=node-secret,redis://n2:7002?api_token=api-secret",
        "config",
    ];
    let toml = s.run(&args).await;
    let doc = s.run(&[&args[..], &["--json"]].concat()).await.ok_json();
    assert_eq!(
        doc["database_url"],
        "postgres://app@db:5432/spend?sslmode=require&password=***&sslpassword=***"
    );
    assert_eq!(
        doc["redis_cluster_urls"][1],
        "redis://n2:7002?api_token=***"
    );
    let printed = format!("{} {} {} {doc}", toml.out, toml.err, doc);
    for secret in QUERY_SECRETS {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
    }
}

#[tokio::test]
async fn a_failed_connect_does_not_print_a_password_query_parameter() {
    for url in [
        [
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none?password=connect-secret",
        ],
        [
            "--redis-url",
            "redis://127.0.0.1:1/0?password=connect-secret",
        ],
        [
            "--redis-cluster-urls",
            "redis://127.0.0.1:1?password=connect-secret",
        ],
    ] {
        let s = Sandbox::new().with_progress();
        let run = s.run(&[&url[..], &["status", "g"]].concat()).await;
        assert_eq!(run.exit, Exit::Unavailable, "{url:?}: {}", run.err);
        let printed = format!("{}{}", run.out, run.err);
        assert!(printed.contains("password=***"), "{url:?}: {printed}");
        assert!(!printed.contains("connect-secret"), "{url:?}: {printed}");
    }
}
