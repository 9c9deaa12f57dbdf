//! Random requests at every route: never a 500, never a panic, and a
//! refused request writes nothing.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Map, Value, json};
use spendgate::domain::CommunityId;

use crate::support::{ADMIN, Backend, Server};

/// The community the requests aim at, new in every run: the Redis +
/// PostgreSQL run shares its Redis with earlier runs.
static COMMUNITY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::support::community("prop"));

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/communities/{c}/reservations"),
    ("GET", "/api/v1/communities/{c}/reservations/{u}/{k}"),
    (
        "POST",
        "/api/v1/communities/{c}/reservations/{u}/{k}/finalize",
    ),
    (
        "POST",
        "/api/v1/communities/{c}/reservations/{u}/{k}/cancel",
    ),
    (
        "POST",
        "/api/v1/communities/{c}/reservations/{u}/{k}/extend",
    ),
    (
        "POST",
        "/api/v1/communities/{c}/reservations/{u}/{k}/hand-over",
    ),
    ("GET", "/api/v1/communities/{c}/budget"),
    ("PUT", "/api/v1/communities/{c}/budget"),
    ("GET", "/api/v1/communities/{c}/tiers"),
    ("PUT", "/api/v1/communities/{c}/tiers"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

const FIELDS: &[&str] = &[
    "user",
    "model",
    "tier",
    "prompt_tokens",
    "max_completion_tokens",
    "completion_tokens",
    "tool_use",
    "estimate_usd",
    "estimate_micros",
    "actual_usd",
    "actual_micros",
    "ttl_ms",
    "trace_id",
    "limit_usd",
    "limit_micros",
    "per_user_cap_usd",
    "per_user_cap_micros",
    "overrides",
    "extra",
];

/// A path segment: the real ones, ids at and past the limits, encoded
/// junk.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(COMMUNITY.clone()),
        Just("alice".to_owned()),
        Just("k1".to_owned()),
        "[a-z0-9-]{1,12}",
        "(%[0-9A-F]{2}){1,6}",
        Just("x".repeat(129)),
        Just("%7B%7D".to_owned()),
        Just("%FF%FE".to_owned()),
        Just("..".to_owned()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-10i64..10).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[0-9]{0,4}(\\.[0-9]{0,8})?".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!("cheap")),
        Just(json!("reasoning")),
        Just(json!("0.000001")),
        Just(json!({"1": "enterprise"})),
        Just(json!({"0": "pro", "x": "free"})),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop::collection::vec(inner, 0..3).prop_map(Value::from)
    })
}

fn body() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        ".{0,40}".prop_map(Some),
        prop::collection::btree_map(prop::sample::select(FIELDS), value(), 0..8).prop_map(|m| {
            let object: Map<String, Value> =
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            Some(Value::Object(object).to_string())
        }),
    ]
}

#[derive(Debug, Clone)]
struct Junk {
    method: Method,
    path: String,
    token: Option<String>,
    key: Option<String>,
    body: Option<String>,
}

fn junk() -> impl Strategy<Value = Junk> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
    ];
    (
        prop::sample::select(ROUTES),
        any::<bool>(),
        method,
        segment(),
        segment(),
        segment(),
        prop_oneof![
            Just(Some(ADMIN.to_owned())),
            Just(None),
            "[ -~]{0,30}".prop_map(Some)
        ],
        prop_oneof![
            Just(None),
            Just(Some("k1".to_owned())),
            "[ -~]{0,20}".prop_map(Some)
        ],
        body(),
    )
        .prop_map(
            |((method, template), same_method, other, c, u, k, token, key, body)| Junk {
                method: if same_method {
                    method.parse().unwrap()
                } else {
                    other
                },
                path: template
                    .replace("{c}", &c)
                    .replace("{u}", &u)
                    .replace("{k}", &k),
                token,
                key,
                body,
            },
        )
}

/// What a refused request must leave alone: the community's counters and
/// tier overrides.
async fn snapshot(s: &Server) -> String {
    let c = CommunityId::parse(COMMUNITY.as_str()).unwrap();
    let status = s.sg.budget().status(&c, None, None).await.unwrap();
    let (tiers, _) = s.sg.tiers().overrides(&c).await;
    format!("{status:?} {tiers:?}")
}

/// Throws `cases` random requests at a server on `backend`.
fn random_requests_on(backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s = runtime.block_on(async {
        let s = Server::start(backend).await;
        s.sg.budget()
            .set_budget(
                &CommunityId::parse(COMMUNITY.as_str()).unwrap(),
                spendgate::domain::Limits::new(spendgate::domain::Micros::from_usd(10)),
            )
            .await
            .unwrap();
        let mut ok = s.reserve(COMMUNITY.as_str(), "k1").await;
        assert_eq!(ok.status, 201, "{}", std::mem::take(&mut ok.text));
        s
    });
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(request in junk())| {
        runtime.block_on(async {
            let before = snapshot(&s).await;
            let mut call = s.call(request.method.clone(), request.path.clone()).token(request.token.as_deref());
            if let Some(key) = &request.key {
                call = call.header("Idempotency-Key", key);
            }
            if let Some(body) = &request.body {
                call = call.raw(body.clone());
            }
            let reply = call.send().await;
            assert!(reply.status < 500, "{request:?} -> {} {}", reply.status, reply.text);
            if reply.status >= 400 {
                assert_eq!(reply.content_type(), "application/problem+json", "{request:?} -> {}", reply.text);
                assert_eq!(snapshot(&s).await, before, "{request:?} -> {} {}", reply.status, reply.text);
            }
        });
    });
}

#[test]
fn random_requests_never_get_a_500_and_refused_ones_write_nothing() {
    random_requests_on(Backend::Memory, 400);
}

#[test]
fn random_requests_on_sqlite_never_get_a_500_and_refused_ones_write_nothing() {
    random_requests_on(Backend::Sqlite, 150);
}

#[test]
fn random_requests_on_redis_postgres_never_get_a_500_and_refused_ones_write_nothing() {
    random_requests_on(Backend::RedisPostgres, 150);
}
