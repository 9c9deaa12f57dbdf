//! `HttpUsageSource` against a local axum server standing in for the model
//! provider's usage endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::routing::get;
use spendgate_adapter_http::{DEFAULT_TIMEOUT, HttpConfigError, HttpUsageSource, MAX_BODY_BYTES};
use spendgate_domain::{
    CallId, CommunityId, IdempotencyKey, Micros, Timestamp, TokenCounts, UserId,
};
use spendgate_ports::{ProviderError, ProviderUsage, UsageSource};

// ---------------------------------------------------------------- fixture

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Seen {
    /// The path as sent, still percent-encoded.
    raw_path: String,
    /// The decoded `{call_id}` segment, or `None` when the request missed
    /// the usage route.
    call: Option<String>,
    headers: HeaderMap,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    delay: Duration,
    seen: Mutex<Vec<Seen>>,
}

/// A running fake provider.
struct Provider {
    base: String,
    reply: Arc<Reply>,
}

impl Provider {
    fn seen(&self) -> Vec<Seen> {
        self.reply.seen.lock().unwrap().clone()
    }

    fn source(&self) -> HttpUsageSource {
        HttpUsageSource::new(&self.base).unwrap()
    }
}

async fn usage_route(
    State(reply): State<Arc<Reply>>,
    Path(call): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, HeaderMap, String) {
    reply.seen.lock().unwrap().push(Seen {
        raw_path: uri.path().to_owned(),
        call: Some(call),
        headers,
    });
    tokio::time::sleep(reply.delay).await;
    (reply.status, reply.headers.clone(), reply.body.clone())
}

async fn elsewhere(State(reply): State<Arc<Reply>>, uri: Uri, headers: HeaderMap) -> StatusCode {
    reply.seen.lock().unwrap().push(Seen {
        raw_path: uri.path().to_owned(),
        call: None,
        headers,
    });
    StatusCode::IM_A_TEAPOT
}

async fn start(reply: Reply, prefix: &str) -> Provider {
    let reply = Arc::new(reply);
    let route = format!("{prefix}/v1/usage/{{call_id}}");
    let router = Router::new()
        .route(&route, get(usage_route))
        .fallback(elsewhere)
        .with_state(Arc::clone(&reply));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Provider {
        base: format!("http://{addr}"),
        reply,
    }
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: body.into(),
        delay: Duration::ZERO,
        seen: Mutex::new(Vec::new()),
    }
}

/// A provider answering every usage request with `status` and `body`.
async fn provider(status: u16, body: impl Into<String>) -> Provider {
    start(reply(status, body), "").await
}

/// The id of alice's call `msg-1` in `community`, held at 1,000 ms.
fn call_in(community: &str) -> CallId {
    CallId::derive(
        &CommunityId::parse(community).unwrap(),
        &UserId::parse("alice").unwrap(),
        &IdempotencyKey::parse("msg-1").unwrap(),
        Timestamp::from_millis(1_000).unwrap(),
    )
}

fn call() -> CallId {
    call_in("guild-42")
}

/// A valid usage body with `field` replaced by the raw JSON `value`
/// (or removed when `value` is `None`).
fn body_with(field: &str, value: Option<&str>) -> String {
    let fields = [
        ("costUsd", r#""0.0123""#),
        ("model", r#""gpt-4o-mini-2024-07-18""#),
        ("promptTokens", "1200"),
        ("completionTokens", "345"),
        ("completedAt", r#""2025-01-02T03:04:05.678Z""#),
    ];
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(name, default)| {
            let raw = if *name == field { value? } else { default };
            Some(format!(r#""{name}": {raw}"#))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// 2025-01-02T03:04:05.678Z in ms.
const COMPLETED_AT_MS: i64 = 1_735_787_045_678;

fn expected_usage() -> ProviderUsage {
    ProviderUsage {
        cost: Micros::new(12_300).unwrap(),
        model: "gpt-4o-mini-2024-07-18".to_owned(),
        tokens: TokenCounts {
            prompt: 1200,
            completion: 345,
        },
        completed_at: Timestamp::from_millis(COMPLETED_AT_MS).unwrap(),
    }
}

/// Asks a provider answering 200 with `body`; returns the reason of the
/// expected `InvalidResponse`.
async fn invalid_reason(body: &str) -> String {
    let provider = provider(200, body).await;
    match provider.source().usage(&call()).await {
        Err(ProviderError::InvalidResponse(reason)) => reason,
        other => panic!("body {body} should be an invalid answer, got {other:?}"),
    }
}

// ---------------------------------------------------------------- answers

#[tokio::test]
async fn a_200_with_a_string_cost_is_the_exact_usage() {
    let body = r#"{"costUsd": "0.0123", "model": "gpt-4o-mini-2024-07-18",
        "promptTokens": 1200, "completionTokens": 345,
        "completedAt": "2025-01-02T03:04:05.678Z", "currency": "USD", "extra": {"a": [1]}}"#;
    let provider = provider(200, body).await;

    let usage = provider.source().usage(&call()).await;

    assert_eq!(usage, Ok(Some(expected_usage())));
    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].raw_path, format!("/v1/usage/{}", call()));
}

#[tokio::test]
async fn a_200_with_a_number_cost_is_rounded_to_the_nearest_micro_usd() {
    let body = r#"{"costUsd": 0.0123, "model": "gpt-4o-mini-2024-07-18",
        "promptTokens": 1200, "completionTokens": 345,
        "completedAt": "2025-01-02T05:04:05.678+02:00"}"#;
    let provider = provider(200, body).await;
    assert_eq!(
        provider.source().usage(&call()).await,
        Ok(Some(expected_usage()))
    );

    let provider = self::provider(200, body_with("costUsd", Some("0.0000004999"))).await;
    let usage = provider.source().usage(&call()).await.unwrap().unwrap();
    assert_eq!(usage.cost, Micros::ZERO);

    let provider = self::provider(200, body_with("costUsd", Some("2"))).await;
    let usage = provider.source().usage(&call()).await.unwrap().unwrap();
    assert_eq!(usage.cost, Micros::from_usd(2));
}

#[tokio::test]
async fn a_404_means_the_provider_does_not_know_the_call_yet() {
    let provider = provider(404, r#"{"error": "not found"}"#).await;
    assert_eq!(provider.source().usage(&call()).await, Ok(None));
    assert_eq!(provider.seen().len(), 1);
}

#[tokio::test]
async fn a_5xx_means_the_provider_is_unavailable() {
    for status in [500, 502, 503, 504] {
        let provider = provider(status, "oops").await;
        let result = provider.source().usage(&call()).await;
        assert!(
            matches!(&result, Err(ProviderError::Unavailable(reason)) if reason.contains(&status.to_string())),
            "{status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn rate_limiting_and_request_timeouts_are_unavailable_because_a_retry_can_succeed() {
    for status in [429, 408] {
        let provider = provider(status, "slow down").await;
        let result = provider.source().usage(&call()).await;
        assert!(
            matches!(result, Err(ProviderError::Unavailable(_))),
            "{status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn other_4xx_and_unexpected_statuses_are_invalid_answers() {
    for status in [400, 401, 403, 405, 410, 422, 201, 204] {
        let provider = provider(status, body_with("", None)).await;
        let result = provider.source().usage(&call()).await;
        assert!(
            matches!(&result, Err(ProviderError::InvalidResponse(reason)) if reason.contains(&status.to_string())),
            "{status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let mut answer = reply(302, "");
    answer
        .headers
        .insert(LOCATION, HeaderValue::from_static("/v1/usage/call-2"));
    let provider = start(answer, "").await;
    let source = HttpUsageSource::builder(&provider.base)
        .auth_header("x-api-key", "s3cret")
        .build()
        .unwrap();

    let result = source.usage(&call()).await;

    assert!(
        matches!(result, Err(ProviderError::InvalidResponse(_))),
        "{result:?}"
    );
    assert_eq!(provider.seen().len(), 1, "the redirect was followed");
}

// ---------------------------------------------------------------- transport

#[tokio::test]
async fn a_provider_slower_than_the_timeout_is_unavailable() {
    let mut answer = reply(200, body_with("", None));
    answer.delay = Duration::from_secs(3);
    let provider = start(answer, "").await;
    let source = HttpUsageSource::builder(&provider.base)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(source.timeout(), Duration::from_millis(200));

    let started = Instant::now();
    let result = source.usage(&call()).await;

    assert!(
        matches!(&result, Err(ProviderError::Unavailable(reason)) if reason.contains("timed out")),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout was not applied: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let source = HttpUsageSource::new(format!("http://{addr}")).unwrap();

    let result = source.usage(&call()).await;

    assert!(
        matches!(result, Err(ProviderError::Unavailable(_))),
        "{result:?}"
    );
}

#[test]
fn the_default_timeout_is_five_seconds() {
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(5));
    let source = HttpUsageSource::new("https://provider.example").unwrap();
    assert_eq!(source.timeout(), DEFAULT_TIMEOUT);
}

// ---------------------------------------------------------------- bodies

#[tokio::test]
async fn malformed_json_is_an_invalid_answer() {
    for body in [
        "",
        "not json",
        r#"{"costUsd": "0.01","#,
        "[]",
        "null",
        r#""0.01""#,
    ] {
        invalid_reason(body).await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_one_json_object_is_an_invalid_answer() {
    let array = r#"["0.0123", "gpt-4o-mini", 1200, 345, "2025-01-02T03:04:05.678Z"]"#;
    let reason = invalid_reason(array).await;
    assert!(reason.contains("object"), "{reason}");
    invalid_reason(&format!("{} {{}}", body_with("", None))).await;
}

#[tokio::test]
async fn a_duplicated_field_is_an_invalid_answer() {
    let body = body_with("", None).replacen('{', r#"{"costUsd": "0.0001", "#, 1);
    let reason = invalid_reason(&body).await;
    assert!(reason.contains("duplicate field `costUsd`"), "{reason}");
}

#[tokio::test]
async fn a_missing_field_is_an_invalid_answer_naming_it() {
    for field in [
        "costUsd",
        "model",
        "promptTokens",
        "completionTokens",
        "completedAt",
    ] {
        let reason = invalid_reason(&body_with(field, None)).await;
        assert!(reason.contains(field), "{field}: {reason}");
    }
}

#[tokio::test]
async fn a_null_field_is_an_invalid_answer() {
    for field in [
        "costUsd",
        "model",
        "promptTokens",
        "completionTokens",
        "completedAt",
    ] {
        invalid_reason(&body_with(field, Some("null"))).await;
    }
}

#[tokio::test]
async fn a_negative_cost_is_an_invalid_answer() {
    for cost in [r#""-0.01""#, "-0.01", "-1", r#""-0""#] {
        let reason = invalid_reason(&body_with("costUsd", Some(cost))).await;
        assert!(reason.contains("costUsd"), "{cost}: {reason}");
    }
}

#[tokio::test]
async fn a_non_finite_cost_is_an_invalid_answer() {
    for cost in [
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        r#""NaN""#,
        r#""Infinity""#,
        r#""inf""#,
        r#""1e400""#,
    ] {
        invalid_reason(&body_with("costUsd", Some(cost))).await;
    }
}

#[tokio::test]
async fn a_cost_above_micros_max_is_an_invalid_answer_not_clamped() {
    assert_eq!(Micros::MAX.to_string(), "9007199254.740991");
    for cost in [
        r#""9007199254.740992""#,
        "9007199254.740992",
        r#""99999999999999999999999""#,
        "99999999999999999999999",
        "1e20",
    ] {
        let reason = invalid_reason(&body_with("costUsd", Some(cost))).await;
        assert!(reason.contains("overflow"), "{cost}: {reason}");
    }

    let provider = provider(200, body_with("costUsd", Some(r#""9007199254.740991""#))).await;
    let usage = provider.source().usage(&call()).await.unwrap().unwrap();
    assert_eq!(usage.cost, Micros::MAX);
}

#[tokio::test]
async fn a_string_cost_finer_than_a_micro_usd_is_an_invalid_answer() {
    for cost in [r#""0.0000001""#, r#""0.0123000""#] {
        let reason = invalid_reason(&body_with("costUsd", Some(cost))).await;
        assert!(reason.contains("costUsd"), "{cost}: {reason}");
    }
}

#[tokio::test]
async fn a_cost_that_is_not_a_plain_decimal_is_an_invalid_answer() {
    for cost in [
        r#""""#,
        r#"" 0.01""#,
        r#""0,01""#,
        r#""$0.01""#,
        r#""1e-2""#,
        "true",
        "[0.01]",
        r#"{"usd": "0.01"}"#,
    ] {
        invalid_reason(&body_with("costUsd", Some(cost))).await;
    }
}

#[tokio::test]
async fn negative_or_non_integer_token_counts_are_invalid_answers() {
    for field in ["promptTokens", "completionTokens"] {
        for count in ["-1", "1.5", "1e3", r#""12""#, "18446744073709551616"] {
            let reason = invalid_reason(&body_with(field, Some(count))).await;
            assert!(!reason.is_empty(), "{field} {count}");
        }
    }
}

#[tokio::test]
async fn a_bad_timestamp_is_an_invalid_answer() {
    for at in [
        r#""yesterday""#,
        r#""""#,
        r#""2025-13-01T00:00:00Z""#,
        r#""2025-02-30T00:00:00Z""#,
        r#""2025-01-02T03:04:05""#,
        r#""2025-01-02""#,
        r#""2025-01-02T03:04:05.678Z trailing""#,
        r#""1969-12-31T23:59:59Z""#,
        "1735787045678",
    ] {
        let reason = invalid_reason(&body_with("completedAt", Some(at))).await;
        assert!(reason.contains("completedAt"), "{at}: {reason}");
    }
}

#[tokio::test]
async fn an_empty_model_is_an_invalid_answer() {
    for model in [r#""""#, r#""  ""#, "42"] {
        let reason = invalid_reason(&body_with("model", Some(model))).await;
        assert!(reason.contains("model"), "{model}: {reason}");
    }
}

#[tokio::test]
async fn a_body_larger_than_the_limit_is_an_invalid_answer() {
    let padding = "x".repeat(MAX_BODY_BYTES);
    let body = format!(
        r#"{{"costUsd": "0.0123", "model": "m", "promptTokens": 1, "completionTokens": 1,
            "completedAt": "2025-01-02T03:04:05.678Z", "padding": "{padding}"}}"#
    );
    let reason = invalid_reason(&body).await;
    assert!(reason.contains("exceeds"), "{reason}");
}

// ---------------------------------------------------------------- request

#[tokio::test]
async fn the_auth_header_reaches_the_provider() {
    let provider = provider(200, body_with("", None)).await;
    let source = HttpUsageSource::builder(&provider.base)
        .auth_header("Authorization", "Bearer s3cret-token")
        .build()
        .unwrap();

    source.usage(&call()).await.unwrap();

    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("authorization").unwrap(),
        "Bearer s3cret-token"
    );
}

#[tokio::test]
async fn no_auth_header_is_sent_unless_configured() {
    let provider = provider(200, body_with("", None)).await;
    provider.source().usage(&call()).await.unwrap();
    let seen = provider.seen();
    assert!(seen[0].headers.get("authorization").is_none());
    assert!(seen[0].headers.get("x-api-key").is_none());
}

#[tokio::test]
async fn the_auth_header_value_never_appears_in_debug_output_or_errors() {
    let secret = "s3cret-value-42";
    let builder = HttpUsageSource::builder("http://127.0.0.1:9")
        .auth_header("x-api-key", secret)
        .timeout(Duration::from_millis(500));
    let debug = format!("{builder:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("x-api-key"), "{debug}");

    let source = builder.build().unwrap();
    let debug = format!("{source:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("x-api-key"), "{debug}");

    let error = source.usage(&call()).await.unwrap_err();
    assert!(!format!("{error} {error:?}").contains(secret), "{error:?}");

    let bad_value = format!("{secret}\r\nx-injected: 1");
    let error = HttpUsageSource::builder("http://127.0.0.1:9")
        .auth_header("x-api-key", &bad_value)
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        HttpConfigError::InvalidAuthHeaderValue {
            name: "x-api-key".to_owned()
        }
    );
    assert!(!format!("{error} {error:?}").contains(secret));
}

#[test]
fn secrets_of_a_refused_base_url_never_appear_in_debug_output_or_errors() {
    for (url, secret) in [
        (
            "https://provider.test/v1?token=s3cret-token",
            "s3cret-token",
        ),
        (
            "https://provider.test/v1?api_key=s3cret-key&x=1",
            "s3cret-key",
        ),
        ("https://u:p@ss:w0rd@provider.test/v1", "w0rd"),
        (
            "https://provider.test/v1#password=s3cret-frag",
            "s3cret-frag",
        ),
    ] {
        let builder = HttpUsageSource::builder(url);
        let debug = format!("{builder:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("provider.test"), "{debug}");
        let error = builder.build().unwrap_err();
        assert!(!format!("{error} {error:?}").contains(secret), "{error:?}");
    }
}

#[tokio::test]
async fn the_same_key_in_two_communities_is_asked_by_two_call_ids_never_by_the_key() {
    let provider = provider(200, body_with("", None)).await;
    let source = provider.source();
    let (a, b) = (call_in("guild-a"), call_in("guild-b"));
    assert_ne!(a, b);
    source.usage(&a).await.unwrap();
    source.usage(&b).await.unwrap();

    let seen = provider.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.raw_path.as_str()).collect();
    assert_eq!(
        paths,
        [format!("/v1/usage/{a}"), format!("/v1/usage/{b}")],
        "one segment each, as it is"
    );
    assert!(paths.iter().all(|p| !p.contains("msg-1")), "{paths:?}");
    assert_eq!(seen[0].call.as_deref(), Some(a.as_str()));
}

#[tokio::test]
async fn a_path_prefix_in_the_base_url_is_kept() {
    let provider = start(reply(200, body_with("", None)), "/gateway/openai").await;
    for base in [
        format!("{}/gateway/openai", provider.base),
        format!("{}/gateway/openai/", provider.base),
    ] {
        let source = HttpUsageSource::new(&base).unwrap();
        assert_eq!(
            source.usage(&call()).await,
            Ok(Some(expected_usage())),
            "{base}"
        );
    }
    let seen = provider.seen();
    assert!(
        seen.iter()
            .all(|s| s.raw_path == format!("/gateway/openai/v1/usage/{}", call())),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------- config

#[test]
fn only_plain_http_and_https_base_urls_are_accepted() {
    for ok in [
        "http://127.0.0.1:8080",
        "https://provider.example",
        "https://provider.example/",
        "https://provider.example/gateway",
    ] {
        let source = HttpUsageSource::new(ok).unwrap();
        assert!(source.base_url().starts_with("http"), "{ok}");
    }

    type Check = fn(&HttpConfigError) -> bool;
    let cases: [(&str, Check); 8] = [
        ("not a url", |e| {
            matches!(e, HttpConfigError::InvalidBaseUrl { .. })
        }),
        ("/v1/usage", |e| {
            matches!(e, HttpConfigError::InvalidBaseUrl { .. })
        }),
        ("ftp://provider.example", |e| {
            *e == HttpConfigError::UnsupportedScheme("ftp".to_owned())
        }),
        ("file:///etc/passwd", |e| {
            matches!(e, HttpConfigError::UnsupportedScheme(_))
        }),
        ("https://provider.example/?version=2", |e| {
            *e == HttpConfigError::BaseUrlHasQuery
        }),
        ("https://provider.example/?", |e| {
            *e == HttpConfigError::BaseUrlHasQuery
        }),
        ("https://provider.example/#top", |e| {
            *e == HttpConfigError::BaseUrlHasFragment
        }),
        ("https://user:pa55word@provider.example/", |e| {
            *e == HttpConfigError::BaseUrlHasCredentials
        }),
    ];
    for (url, expected) in cases {
        let error = HttpUsageSource::new(url).unwrap_err();
        assert!(expected(&error), "{url}: {error:?}");
        assert!(!error.to_string().contains("pa55word"), "{error}");
    }
}

#[test]
fn a_bad_auth_header_name_or_a_zero_timeout_is_refused() {
    let error = HttpUsageSource::builder("https://provider.example")
        .auth_header("x api key", "v")
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        HttpConfigError::InvalidAuthHeaderName("x api key".to_owned())
    );

    let error = HttpUsageSource::builder("https://provider.example")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error, HttpConfigError::ZeroTimeout);
}
