//! Bearer tokens: missing or wrong is 401, a token scoped to other
//! communities is 403, and no token configured means no auth.

use serde_json::json;
use spendgate::domain::CommunityId;
use spendgate::inbound::http::{ApiToken, HttpOptions, Secret};

use crate::support::{Backend, Server, admin, community, options};

const TENANT: &str = "tenant-token-abcdef";

async fn scoped(backend: Backend) -> (Server, String, String) {
    let mine = community("mine");
    let theirs = community("theirs");
    let tenant = ApiToken::tenant(TENANT, [CommunityId::parse(mine.as_str()).unwrap()]);
    let s = Server::start_with(backend, options(vec![admin(), tenant])).await;
    for c in [&mine, &theirs] {
        s.put(format!("/api/v1/communities/{c}/budget"))
            .key("setup")
            .json(json!({"limit_usd": "10"}))
            .send()
            .await;
    }
    (s, mine, theirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_is_401_with_www_authenticate() {
    let s = Server::start(Backend::Memory).await;
    let c = s.community("notoken", 10).await;
    let r = s.reserve_with_token(&c, None).await;
    r.assert_problem(401, "unauthorized");
    assert!(
        r.headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let r = s
        .get(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .header("authorization", "Basic YTpi")
        .send()
        .await;
    r.assert_problem(401, "unauthorized");
    assert_eq!(s.budget(&c).await["holds"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_401() {
    let s = Server::start(Backend::Sqlite).await;
    let c = s.community("wrongtoken", 10).await;
    for wrong in [
        "nope",
        "admin-token-012345678",
        "admin-token-01234567890",
        "",
    ] {
        s.reserve_with_token(&c, Some(wrong))
            .await
            .assert_problem(401, "unauthorized");
    }
    assert_eq!(s.budget(&c).await["holds"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_scoped_token_acts_on_its_community_only() {
    for backend in [Backend::Memory, Backend::Sqlite] {
        let (s, mine, theirs) = scoped(backend).await;
        assert_eq!(s.reserve_with_token(&mine, Some(TENANT)).await.status, 201);
        let r = s.reserve_with_token(&theirs, Some(TENANT)).await;
        r.assert_problem(403, "community-forbidden");
        for path in [
            format!("/api/v1/communities/{theirs}/budget"),
            format!("/api/v1/communities/{theirs}/tiers"),
            format!("/api/v1/communities/{theirs}/reservations/alice/k1"),
        ] {
            s.get(path)
                .token(Some(TENANT))
                .send()
                .await
                .assert_problem(403, "community-forbidden");
        }
        let r = s
            .put(format!("/api/v1/communities/{theirs}/budget"))
            .token(Some(TENANT))
            .key("k")
            .json(json!({"limit_usd": "1000"}))
            .send()
            .await;
        r.assert_problem(403, "community-forbidden");
        assert_eq!(s.budget(&theirs).await["limit_micros"], 10_000_000);
        assert_eq!(s.budget(&theirs).await["holds"], 0);
        assert_eq!(
            s.reserve_with_token(&theirs, Some(crate::support::ADMIN))
                .await
                .status,
            201
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi_need_no_token() {
    let s = Server::start(Backend::Memory).await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(s.get(path).token(None).send().await.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    const SCRAPER: &str = "scrape-secret-0123456";
    let options = HttpOptions {
        metrics_token: Some(Secret::new(SCRAPER)),
        ..options(vec![admin()])
    };
    let s = Server::start_with(Backend::Memory, options).await;
    for presented in [
        None,
        Some(crate::support::ADMIN),
        Some("scrape-secret-012345"),
    ] {
        s.get("/metrics")
            .token(presented)
            .send()
            .await
            .assert_problem(401, "unauthorized");
    }
    let r = s.get("/metrics").token(Some(SCRAPER)).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.content_type().starts_with("text/plain"));
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(s.get(path).token(None).send().await.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_token_configured_there_is_no_auth() {
    let s = Server::start_with(Backend::Memory, options(Vec::new())).await;
    let c = s.community("open", 10).await;
    assert_eq!(s.reserve_with_token(&c, None).await.status, 201);
}

#[test]
fn the_debug_of_a_token_hides_its_secret() {
    let printed = format!("{:?}", admin());
    assert!(!printed.contains(crate::support::ADMIN), "{printed}");
    assert!(printed.contains("redacted"));
}
