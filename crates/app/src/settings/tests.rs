use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn flags_with_file(file: &tempfile::NamedTempFile) -> FlagValues {
    FlagValues {
        config: Some(file.path().to_path_buf()),
        ..FlagValues::default()
    }
}

fn load_err(flags: &FlagValues, env: &dyn Fn(&str) -> Option<String>) -> String {
    Settings::load(flags, env).unwrap_err().to_string()
}

const TOKEN: &str = "0123456789abcdef";

#[test]
fn defaults_are_the_embedded_sqlite_file_on_loopback() {
    let s = Settings::load(&FlagValues::default(), &no_env).unwrap();
    assert_eq!(s.database_url, "sqlite://./spendgate.db?mode=rwc");
    assert_eq!(s.http.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(s.http.body_limit_bytes, 65_536);
    assert_eq!(s.http.request_timeout, Duration::from_secs(10));
    assert_eq!(s.workers.reaper, Duration::from_secs(60));
    assert_eq!(s.workers.finalize_replay, Duration::from_secs(1));
    assert_eq!(s.log_level, None);
    assert!(s.redis_url.is_none() && s.redis_cluster_urls.is_empty());
    assert!(s.http.tokens.is_empty() && !s.http.allow_unauthenticated_loopback);
    assert_eq!(s.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.http.max_connections, 1024);
    assert!(s.http.metrics_token.is_none());
}

#[test]
fn the_metrics_token_is_read_checked_and_never_printed() {
    let env = env_of(&[("SPENDGATE_HTTP_METRICS_TOKEN", "scrape-secret-0123456")]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert_eq!(
        s.http.metrics_token.as_ref().map(|t| t.expose()),
        Some("scrape-secret-0123456")
    );
    assert_eq!(s.redacted().http.metrics_token.as_deref(), Some("***"));
    assert!(!format!("{s:?}").contains("scrape-secret"));
    assert!(
        !toml::to_string(&s.redacted())
            .unwrap()
            .contains("scrape-secret")
    );
}

#[test]
fn connection_bounds_come_from_every_layer_and_print() {
    let file = file_with("[http]\nheader_read_timeout_ms = 1500\n");
    let env = env_of(&[("SPENDGATE_HTTP_IDLE_TIMEOUT_MS", "2500")]);
    let mut flags = flags_with_file(&file);
    flags.max_connections = Some("64".into());
    let s = Settings::load(&flags, &env).unwrap();
    assert_eq!(s.http.header_read_timeout, Duration::from_millis(1500));
    assert_eq!(s.http.idle_timeout, Duration::from_millis(2500));
    assert_eq!(s.http.max_connections, 64);
    let printed = s.redacted().http;
    assert_eq!(
        (
            printed.header_read_timeout_ms,
            printed.idle_timeout_ms,
            printed.max_connections
        ),
        (1500, 2500, 64)
    );
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let file = file_with(
        "[http]\nbind = \"127.0.0.1:1001\"\nbody_limit_bytes = 10\nrequest_timeout_ms = 7\n",
    );
    let env = env_of(&[
        ("SPENDGATE_HTTP_BIND", "127.0.0.1:1002"),
        ("SPENDGATE_HTTP_BODY_LIMIT_BYTES", "20"),
    ]);
    let mut flags = flags_with_file(&file);
    flags.bind = Some("127.0.0.1:1003".into());
    let s = Settings::load(&flags, &env).unwrap();
    assert_eq!(s.http.bind.port(), 1003, "flag wins");
    assert_eq!(s.http.body_limit_bytes, 20, "environment beats file");
    assert_eq!(
        s.http.request_timeout,
        Duration::from_millis(7),
        "file beats default"
    );
}

#[test]
fn the_config_file_may_be_named_by_the_environment() {
    let file = file_with("log_level = \"debug\"\n");
    let path = file.path().to_string_lossy().into_owned();
    let env = env_of(&[("SPENDGATE_CONFIG", &path)]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert_eq!(s.log_level, Some(LogLevel::Debug));
}

#[test]
fn the_config_flag_beats_the_config_variable() {
    let chosen = file_with("log_level = \"trace\"\n");
    let env = env_of(&[("SPENDGATE_CONFIG", "/nonexistent/spendgate.toml")]);
    let s = Settings::load(&flags_with_file(&chosen), &env).unwrap();
    assert_eq!(s.log_level, Some(LogLevel::Trace));
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let env = env_of(&[("SPENDGATE_REDIS_URL", ""), ("SPENDGATE_HTTP_BIND", "  ")]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert!(s.redis_url.is_none());
    assert_eq!(s.http.bind.port(), 8080);
}

#[test]
fn data_file_sets_the_default_sqlite_url() {
    let flags = FlagValues {
        data_file: Some("/var/lib/spendgate/budget.db".into()),
        ..FlagValues::default()
    };
    let s = Settings::load(&flags, &no_env).unwrap();
    assert_eq!(
        s.database_url,
        "sqlite:///var/lib/spendgate/budget.db?mode=rwc"
    );
}

#[test]
fn data_file_from_a_higher_layer_beats_database_url_from_a_lower_one() {
    let env = env_of(&[("SPENDGATE_DATABASE_URL", "postgres://u@db/x")]);
    let flags = FlagValues {
        data_file: Some("here.db".into()),
        ..FlagValues::default()
    };
    let s = Settings::load(&flags, &env).unwrap();
    assert_eq!(s.database_url, "sqlite://here.db?mode=rwc");
}

#[test]
fn database_url_wins_over_data_file_from_the_same_layer() {
    let env = env_of(&[
        ("SPENDGATE_DATABASE_URL", "postgres://u@db/x"),
        ("SPENDGATE_DATA_FILE", "ignored.db"),
    ]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert_eq!(s.database_url, "postgres://u@db/x");
}

#[test]
fn lists_come_comma_separated_from_the_environment_and_as_arrays_from_the_file() {
    let env = env_of(&[(
        "SPENDGATE_REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7101, redis://127.0.0.1:7102,",
    )]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert_eq!(
        s.redis_cluster_urls,
        ["redis://127.0.0.1:7101", "redis://127.0.0.1:7102"]
    );
    let file = file_with(&format!(
        "[http]\ntokens = [\"{TOKEN}\", \"{TOKEN}x=guild-1|guild-2\"]\n"
    ));
    let s = Settings::load(&flags_with_file(&file), &no_env).unwrap();
    assert_eq!(s.http.tokens.len(), 2);
    assert_eq!(s.http.tokens[0].communities, None);
    let limited = s.http.tokens[1].communities.as_ref().unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[1].as_str(), "guild-2");
}

#[test]
fn api_tokens_come_comma_separated_from_the_environment() {
    let env = env_of(&[("SPENDGATE_API_TOKENS", &format!("{TOKEN}=a|b,{TOKEN}zz"))]);
    let s = Settings::load(&FlagValues::default(), &env).unwrap();
    assert_eq!(s.http.tokens.len(), 2);
    assert_eq!(s.http.tokens[1].secret, format!("{TOKEN}zz"));
}

#[test]
fn worker_intervals_reach_the_worker_settings() {
    let file = file_with("[workers]\nreaper_secs = 5\ndrift_secs = 7\n");
    let s = Settings::load(&flags_with_file(&file), &no_env).unwrap();
    let w = s.worker_settings();
    assert_eq!(w.reaper.every, Duration::from_secs(5));
    assert_eq!(w.drift.every, Duration::from_secs(7));
    assert_eq!(w.config_sync.every, Duration::from_secs(300));
}

#[test]
fn a_bad_bind_address_names_the_flag() {
    let flags = FlagValues {
        bind: Some("localhost:80".into()),
        ..FlagValues::default()
    };
    let message = load_err(&flags, &no_env);
    assert!(
        message.contains("http.bind") && message.contains("flag --bind"),
        "{message}"
    );
}

#[test]
fn a_bad_value_from_the_file_names_the_file_and_key() {
    let file = file_with("[http]\nbind = \"nope\"\n");
    let message = load_err(&flags_with_file(&file), &no_env);
    assert!(
        message.contains("config file") && message.contains("key http.bind"),
        "{message}"
    );
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let env = env_of(&[("SPENDGATE_HTTP_REQUEST_TIMEOUT_MS", "ten")]);
    let message = load_err(&FlagValues::default(), &env);
    assert!(
        message.contains("http.request_timeout_ms")
            && message.contains("environment variable SPENDGATE_HTTP_REQUEST_TIMEOUT_MS"),
        "{message}"
    );
}

#[test]
fn every_bad_value_is_refused_with_its_setting_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("SPENDGATE_DATABASE_URL", "mysql://x", "database_url"),
        ("SPENDGATE_DATABASE_URL", "sqlite:", "database_url"),
        ("SPENDGATE_DATA_FILE", "a.db?mode=ro", "data_file"),
        ("SPENDGATE_REDIS_URL", "http://x", "redis_url"),
        (
            "SPENDGATE_REDIS_CLUSTER_URLS",
            "redis://a,tcp://b",
            "redis_cluster_urls",
        ),
        ("SPENDGATE_REDIS_CLUSTER_URLS", ",,", "redis_cluster_urls"),
        (
            "SPENDGATE_PROVIDER_USAGE_URL",
            "ftp://x",
            "provider_usage_url",
        ),
        (
            "SPENDGATE_PROVIDER_USAGE_URL",
            "https://x/?a=1",
            "provider_usage_url",
        ),
        ("SPENDGATE_LOG_LEVEL", "loud", "log_level"),
        ("SPENDGATE_HTTP_BIND", "127.0.0.1", "http.bind"),
        ("SPENDGATE_API_TOKENS", "short", "http.tokens"),
        ("SPENDGATE_API_TOKENS", "0123456789abcdef|x", "http.tokens"),
        ("SPENDGATE_API_TOKENS", "0123456789abcdef=", "http.tokens"),
        (
            "SPENDGATE_API_TOKENS",
            "0123456789abcdef=a|{b}",
            "http.tokens",
        ),
        (
            "SPENDGATE_API_TOKENS",
            "0123456789abcdef,0123456789abcdef",
            "http.tokens",
        ),
        (
            "SPENDGATE_ALLOW_UNAUTHENTICATED_LOOPBACK",
            "maybe",
            "http.allow_unauthenticated_loopback",
        ),
        (
            "SPENDGATE_HTTP_BODY_LIMIT_BYTES",
            "0",
            "http.body_limit_bytes",
        ),
        (
            "SPENDGATE_HTTP_BODY_LIMIT_BYTES",
            "-1",
            "http.body_limit_bytes",
        ),
        (
            "SPENDGATE_HTTP_REQUEST_TIMEOUT_MS",
            "99999999999999",
            "http.request_timeout_ms",
        ),
        (
            "SPENDGATE_HTTP_HEADER_READ_TIMEOUT_MS",
            "0",
            "http.header_read_timeout_ms",
        ),
        (
            "SPENDGATE_HTTP_IDLE_TIMEOUT_MS",
            "soon",
            "http.idle_timeout_ms",
        ),
        (
            "SPENDGATE_HTTP_MAX_CONNECTIONS",
            "4294967296",
            "http.max_connections",
        ),
        (
            "SPENDGATE_HTTP_MAX_CONNECTIONS",
            "0",
            "http.max_connections",
        ),
        (
            "SPENDGATE_HTTP_METRICS_TOKEN",
            "short",
            "http.metrics_token",
        ),
        (
            "SPENDGATE_HTTP_METRICS_TOKEN",
            "has a space 0123456789",
            "http.metrics_token",
        ),
        ("SPENDGATE_WORKERS_REAPER_SECS", "0", "workers.reaper_secs"),
        (
            "SPENDGATE_WORKERS_CONFIG_SYNC_SECS",
            "1.5",
            "workers.config_sync_secs",
        ),
        (
            "SPENDGATE_WORKERS_FINALIZE_REPLAY_SECS",
            "x",
            "workers.finalize_replay_secs",
        ),
        (
            "SPENDGATE_WORKERS_RECONCILIATION_SECS",
            "",
            "none: empty is unset",
        ),
        ("SPENDGATE_WORKERS_DRIFT_SECS", "0", "workers.drift_secs"),
    ];
    for (var, value, key) in cases {
        let env = env_of(&[(var, value)]);
        match Settings::load(&FlagValues::default(), &env) {
            Ok(_) => assert!(key.starts_with("none"), "{var}={value:?} was accepted"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("invalid {key} from environment variable {var}")),
                    "{var}={value:?}: {message}"
                );
            }
        }
    }
}

#[test]
fn a_password_in_a_bad_url_is_not_echoed() {
    let env = env_of(&[("SPENDGATE_DATABASE_URL", "mysql://u:hunter2@db/x")]);
    let message = load_err(&FlagValues::default(), &env);
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn redis_url_and_cluster_urls_together_are_refused() {
    let env = env_of(&[("SPENDGATE_REDIS_URL", "redis://a")]);
    let flags = FlagValues {
        redis_cluster_urls: vec!["redis://b".into()],
        ..FlagValues::default()
    };
    let message = load_err(&flags, &env);
    assert!(
        message.contains("redis_url") && message.contains("flag --redis-cluster-urls"),
        "{message}"
    );
}

#[test]
fn an_unknown_file_key_is_refused() {
    let file = file_with("[http]\nbnd = \"127.0.0.1:1\"\n");
    let message = load_err(&flags_with_file(&file), &no_env);
    assert!(message.contains("unknown key \"http.bnd\""), "{message}");
    let file = file_with("[htp]\nbind = \"127.0.0.1:1\"\n");
    assert!(load_err(&flags_with_file(&file), &no_env).contains("unknown key \"htp\""));
}

#[test]
fn a_wrongly_typed_file_value_is_refused() {
    let file = file_with("[http]\nallow_unauthenticated_loopback = [1]\n");
    let message = load_err(&flags_with_file(&file), &no_env);
    assert!(
        message.contains("http.allow_unauthenticated_loopback")
            && message.contains("expected a boolean"),
        "{message}"
    );
    let file = file_with("redis_cluster_urls = [1, 2]\n");
    assert!(load_err(&flags_with_file(&file), &no_env).contains("array of strings"));
}

#[test]
fn a_missing_or_malformed_file_is_refused() {
    let flags = FlagValues {
        config: Some("/nonexistent/spendgate.toml".into()),
        ..FlagValues::default()
    };
    assert!(load_err(&flags, &no_env).contains("cannot read config file"));
    let file = file_with("[http\n");
    assert!(load_err(&flags_with_file(&file), &no_env).contains("not valid TOML"));
}

#[test]
fn serve_refuses_no_tokens_unless_allowed_on_loopback() {
    let mut s = Settings::load(&FlagValues::default(), &no_env).unwrap();
    assert!(
        s.check_serve()
            .unwrap_err()
            .to_string()
            .contains("no API tokens")
    );
    s.http.allow_unauthenticated_loopback = true;
    s.check_serve().unwrap();
    s.http.bind = "0.0.0.0:8080".parse().unwrap();
    assert!(
        s.check_serve()
            .unwrap_err()
            .to_string()
            .contains("loopback")
    );
    s.http.bind = "[::1]:8080".parse().unwrap();
    s.check_serve().unwrap();
}

#[test]
fn serve_with_tokens_may_bind_anywhere() {
    let flags = FlagValues {
        bind: Some("0.0.0.0:9000".into()),
        api_tokens: vec![TOKEN.into()],
        ..FlagValues::default()
    };
    Settings::load(&flags, &no_env)
        .unwrap()
        .check_serve()
        .unwrap();
}

#[test]
fn the_loopback_flag_beats_a_false_environment_value() {
    let env = env_of(&[("SPENDGATE_ALLOW_UNAUTHENTICATED_LOOPBACK", "false")]);
    let flags = FlagValues {
        allow_unauthenticated_loopback: true,
        ..FlagValues::default()
    };
    assert!(
        Settings::load(&flags, &env)
            .unwrap()
            .http
            .allow_unauthenticated_loopback
    );
    assert!(
        !Settings::load(&FlagValues::default(), &env)
            .unwrap()
            .http
            .allow_unauthenticated_loopback
    );
}

#[test]
fn printed_configuration_hides_secrets() {
    let env = env_of(&[
        ("SPENDGATE_DATABASE_URL", "postgres://app:s3cret@db:5432/x"),
        ("SPENDGATE_REDIS_URL", "redis://:r3dis@cache:6379"),
        ("SPENDGATE_API_TOKENS", &format!("{TOKEN},{TOKEN}9=guild-1")),
    ]);
    let r = Settings::load(&FlagValues::default(), &env)
        .unwrap()
        .redacted();
    assert_eq!(r.database_url, "postgres://app:***@db:5432/x");
    assert_eq!(r.redis_url.as_deref(), Some("redis://:***@cache:6379"));
    assert_eq!(r.http.tokens, ["operator=***", "tenant=***=guild-1"]);
    let text = toml::to_string(&r).unwrap();
    assert!(!text.contains("s3cret") && !text.contains("r3dis") && !text.contains(TOKEN));
}
