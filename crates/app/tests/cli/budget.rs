//! `set-budget` and `status`.

use crate::support::Sandbox;

#[tokio::test]
async fn set_budget_then_status_shows_the_limit_and_full_headroom() {
    let s = Sandbox::new();
    let set = s
        .run(&[
            "set-budget",
            "guild-1",
            "10.50",
            "--per-user-cap",
            "2",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(set["limit_usd"], "10.5");
    assert_eq!(set["per_user_cap_usd"], "2");

    let status = s.status("guild-1").await;
    assert_eq!(status["community"], "guild-1");
    assert_eq!(status["configured"], true);
    assert_eq!(status["limit_usd"], "10.5");
    assert_eq!(status["per_user_cap_usd"], "2");
    assert_eq!(status["committed_usd"], "0");
    assert_eq!(status["reserved_usd"], "0");
    assert_eq!(status["remaining_usd"], "10.5");
    assert_eq!(status["holds"], 0);
}

#[tokio::test]
async fn status_of_a_community_without_budget_says_it_is_not_configured() {
    let s = Sandbox::new();
    let status = s.status("nobody").await;
    assert_eq!(status["configured"], false);
    assert_eq!(status["limit_usd"], serde_json::Value::Null);
}

#[tokio::test]
async fn status_of_an_earlier_period_is_empty() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    let old = s
        .run(&["status", "guild-1", "--period", "2020-01", "--json"])
        .await
        .ok_json();
    assert_eq!(old["period"], "2020-01");
    assert_eq!(old["reserved_usd"], "0");
}

#[tokio::test]
async fn status_without_json_prints_dollars_for_people() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let run = s.run(&["status", "guild-1"]).await;
    assert!(run.out.contains("limit         $10"), "{}", run.out);
}
