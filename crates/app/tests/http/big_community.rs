//! One community whose period holds 200,000 users, on Redis: its budget
//! answers 200 (a status reads the totals and at most one user, never the
//! user list), its users come in pages of at most 1,000, and reserves of
//! another community are answered while its budget is read over and over.
//! Before, each budget read took 640–690 ms on this many users, answered
//! 503, and stalled every other community on the server.

use redis::AsyncCommands as _;
use spendgate::domain::{CommunityId, Period};
use spendgate_adapter_redis::keys::{records_key, user_sums_key};

use crate::servers::redis_url;
use crate::support::{Backend, Server};

const USERS: usize = 200_000;

/// Gives `community`'s `period` `USERS` users with sums of 1 micro-USD
/// each, in pipelines, as that many finalized calls would (the period's
/// totals are left as the server's own calls made them).
async fn seed(community: &str, period: &str) {
    let c = CommunityId::parse(community).unwrap();
    let p = Period::parse(period).unwrap();
    // No response timeout: a pipeline of thousands of commands on a busy
    // machine may take longer than a client's default.
    let client = redis::Client::open(redis_url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    for start in (0..USERS).step_by(2_000) {
        let mut pipe = redis::pipe();
        for i in start..start + 2_000 {
            let user = format!("u{i}");
            pipe.sadd(user_sums_key(&c, p), &user).ignore();
            pipe.hset(records_key(&c), format!("{p}:{user}"), "1 0")
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let members: usize = conn.scard(user_sums_key(&c, p)).await.unwrap();
    assert!(members >= USERS, "{members} users seeded");
}

#[tokio::test]
async fn a_community_of_200_000_users_answers_its_budget_and_pages_its_users() {
    let s = Server::start(Backend::RedisPostgres).await;
    let big = s.community("big", 1_000).await;
    assert_eq!(s.reserve(&big, "k0").await.status, 201);
    let period = s.budget(&big).await["period"].as_str().unwrap().to_owned();
    seed(&big, &period).await;

    let budget = s.budget(&big).await;
    assert_eq!(budget["reserved_micros"], 660);
    assert!(budget.get("users").is_none() && budget.get("user").is_none());
    let one = s
        .get(format!("/api/v1/communities/{big}/budget?user=u199999"))
        .send()
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["user"]["committed_micros"], 1);

    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let query = cursor.map_or_else(String::new, |c| format!("?cursor={c}"));
        let page = s
            .get(format!("/api/v1/communities/{big}/budget/users{query}"))
            .send()
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let users = page.json["users"].as_array().unwrap();
        assert!(!users.is_empty() && users.len() <= 1_000, "{}", users.len());
        cursor = page.json["next_cursor"].as_str().map(str::to_owned);
        assert!(cursor.is_some(), "200,000 users do not fit three pages");
    }

    // Another community's reserves, while the big one's budget is read by
    // five readers at once: all answered.
    let other = s.community("beside-big", 1_000).await;
    let readers: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (
                s.client.clone(),
                format!("{}/api/v1/communities/{big}/budget", s.base),
            );
            tokio::spawn(async move {
                for _ in 0..20 {
                    let r = client
                        .get(&url)
                        .bearer_auth(crate::support::ADMIN)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for i in 0..20 {
        let r = s.reserve(&other, &format!("k{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

#[tokio::test]
async fn a_users_page_refuses_a_bad_limit_or_cursor() {
    let s = Server::start(Backend::RedisPostgres).await;
    let c = s.community("bad-page", 10).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=not-a-scan", "cursor"),
        ("cursor=", "cursor"),
    ] {
        let r = s
            .get(format!("/api/v1/communities/{c}/budget/users?{query}"))
            .send()
            .await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert!(r.text.contains(field), "{query}: {}", r.text);
    }
    let r = s
        .get(format!("/api/v1/communities/{c}/budget?user=a%20b"))
        .send()
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
}
