//! Token roles: an operator configures, a tenant spends. A tenant's token
//! never changes a limit or a tier, even of its own community.

use serde_json::json;
use spendgate::domain::CommunityId;
use spendgate::inbound::http::{ApiToken, Role};

use crate::support::{Backend, Server, admin, community, options, tokens_body};

const TENANT: &str = "tenant-token-abcdef";
const OPERATOR_OF_MINE: &str = "operator-of-mine-0123";

/// A server with the admin, a tenant of `mine` and an operator limited to
/// `mine`; both communities have a 10 USD budget.
async fn with_roles(backend: Backend) -> (Server, String, String) {
    let mine = community("mine");
    let theirs = community("theirs");
    let id = CommunityId::parse(mine.as_str()).unwrap();
    let operator_of_mine = ApiToken {
        secret: OPERATOR_OF_MINE.to_owned(),
        role: Role::Operator,
        communities: Some([id.clone()].into()),
    };
    let tokens = vec![admin(), ApiToken::tenant(TENANT, [id]), operator_of_mine];
    let s = Server::start_with(backend, options(tokens)).await;
    for c in [&mine, &theirs] {
        let r = s
            .put(format!("/api/v1/communities/{c}/budget"))
            .key("setup")
            .json(json!({"limit_usd": "10"}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    (s, mine, theirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_cannot_raise_its_own_budget() {
    for backend in [Backend::Memory, Backend::Sqlite] {
        let (s, mine, _) = with_roles(backend).await;
        let r = s
            .put(format!("/api/v1/communities/{mine}/budget"))
            .token(Some(TENANT))
            .key("raise")
            .json(json!({"limit_micros": 9_007_199_254_740_991_i64}))
            .send()
            .await;
        r.assert_problem(403, "insufficient-role");
        assert_eq!(s.budget(&mine).await["limit_micros"], 10_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_cannot_change_its_own_tiers() {
    let (s, mine, _) = with_roles(Backend::Sqlite).await;
    let r = s
        .put(format!("/api/v1/communities/{mine}/tiers"))
        .token(Some(TENANT))
        .key("tiers")
        .json(json!({"overrides": {"1": "enterprise"}}))
        .send()
        .await;
    r.assert_problem(403, "insufficient-role");
    let tiers = s
        .get(format!("/api/v1/communities/{mine}/tiers"))
        .token(Some(TENANT))
        .send()
        .await;
    assert_eq!(tiers.status, 200, "{}", tiers.text);
    assert_eq!(tiers.json["overrides"], json!({}));
    let mut body = tokens_body();
    body["model"] = json!("reasoning");
    s.post(format!("/api/v1/communities/{mine}/reservations"))
        .token(Some(TENANT))
        .key("r1")
        .json(body)
        .send()
        .await
        .assert_problem(403, "model-not-allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_still_reserves_extends_finalizes_and_reads() {
    let (s, mine, _) = with_roles(Backend::Memory).await;
    let hold = format!("/api/v1/communities/{mine}/reservations/alice/k1");
    assert_eq!(s.reserve_with_token(&mine, Some(TENANT)).await.status, 201);
    let extended = s
        .post(format!("{hold}/extend"))
        .token(Some(TENANT))
        .key("k1")
        .json(json!({"ttl_ms": 600_000}))
        .send()
        .await;
    assert_eq!(extended.status, 200, "{}", extended.text);
    let read = s.get(&hold).token(Some(TENANT)).send().await;
    assert_eq!(read.status, 200, "{}", read.text);
    let finalized = s
        .post(format!("{hold}/finalize"))
        .token(Some(TENANT))
        .key("k1")
        .json(json!({"actual_usd": "0.0005"}))
        .send()
        .await;
    assert_eq!(finalized.status, 200, "{}", finalized.text);
    let budget = s
        .get(format!("/api/v1/communities/{mine}/budget"))
        .token(Some(TENANT))
        .send()
        .await;
    assert_eq!(budget.status, 200, "{}", budget.text);
    assert_eq!(budget.json["committed_micros"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_token_limited_to_a_list_configures_only_inside_it() {
    let (s, mine, theirs) = with_roles(Backend::Memory).await;
    let put = |c: &str, limit: &str| {
        s.put(format!("/api/v1/communities/{c}/budget"))
            .token(Some(OPERATOR_OF_MINE))
            .key("op")
            .json(json!({"limit_usd": limit}))
            .send()
    };
    assert_eq!(put(&mine, "20").await.status, 200);
    assert_eq!(s.budget(&mine).await["limit_micros"], 20_000_000);
    put(&theirs, "30")
        .await
        .assert_problem(403, "community-forbidden");
    assert_eq!(s.budget(&theirs).await["limit_micros"], 10_000_000);
    s.reserve_with_token(&theirs, Some(OPERATOR_OF_MINE))
        .await
        .assert_problem(403, "community-forbidden");
    assert_eq!(
        s.reserve_with_token(&mine, Some(OPERATOR_OF_MINE))
            .await
            .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_every_request_may_configure() {
    let s = Server::start_with(Backend::Memory, options(Vec::new())).await;
    let c = community("open-config");
    let r = s
        .put(format!("/api/v1/communities/{c}/budget"))
        .token(None)
        .key("b1")
        .json(json!({"limit_usd": "3"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
