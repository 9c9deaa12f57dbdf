//! `reserve`, `finalize`, `cancel` and `extend`, each a separate
//! invocation, as a shell script would run them.

use crate::support::Sandbox;
use spendgate::inbound::cli::Exit;

#[tokio::test]
async fn reserve_then_finalize_commits_the_actual_cost_and_releases_the_estimate() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let reserved = s
        .run(&[
            "reserve",
            "guild-1",
            "alice",
            "msg-1",
            "--model",
            "cheap",
            "--tier",
            "1",
            "--prompt-tokens",
            "1200",
            "--max-completion-tokens",
            "800",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(reserved["result"], "reserved");
    let estimate = reserved["estimate_usd"].as_str().unwrap().to_owned();
    let during = s.status("guild-1").await;
    assert_eq!(during["reserved_usd"], estimate.as_str());
    assert_eq!(during["holds"], 1);

    let finalized = s
        .run(&[
            "finalize",
            "guild-1",
            "alice",
            "msg-1",
            "--actual-usd",
            "0.0042",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(finalized["result"], "finalized");
    assert_eq!(finalized["actual_usd"], "0.0042");
    assert_eq!(finalized["estimate_usd"], estimate.as_str());

    let after = s.status("guild-1").await;
    assert_eq!(after["committed_usd"], "0.0042");
    assert_eq!(after["reserved_usd"], "0");
    assert_eq!(after["remaining_usd"], "9.9958");
    assert_eq!(after["holds"], 0);
    let alice = s
        .run(&["status", "guild-1", "--user", "alice", "--json"])
        .await
        .ok_json();
    assert_eq!(alice["user"]["committed_usd"], "0.0042");
    let users = s.run(&["users", "guild-1", "--json"]).await.ok_json();
    assert_eq!(users["users"][0]["user"], "alice");
    assert_eq!(users["users"][0]["committed_usd"], "0.0042");
    assert!(users["next"].is_null());
}

#[tokio::test]
async fn finalize_by_token_counts_prices_them_with_the_model() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    let done = s
        .run(&[
            "finalize",
            "guild-1",
            "alice",
            "k1",
            "--prompt-tokens",
            "1000",
            "--completion-tokens",
            "500",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(done["result"], "finalized");
    assert_ne!(done["actual_usd"], "0");
}

#[tokio::test]
async fn finalize_again_with_another_cost_exits_2_and_changes_nothing() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    let s = &s;
    let finalize = |usd: &'static str| async move {
        s.run(&[
            "finalize",
            "guild-1",
            "alice",
            "k1",
            "--actual-usd",
            usd,
            "--json",
        ])
        .await
    };
    finalize("0.5").await.ok_json();
    let same = finalize("0.5").await.ok_json();
    assert_eq!(same["result"], "already_finalized");
    assert_eq!(same["actual_usd"], "0.5");
    let other = finalize("0.9").await;
    assert_eq!(other.exit, Exit::Usage, "{}", other.err);
    assert!(
        other.err.contains("already settled with 0.5"),
        "{}",
        other.err
    );
    assert_eq!(s.status("guild-1").await["committed_usd"], "0.5");
}

#[tokio::test]
async fn cancel_releases_the_estimate_without_cost() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "3").await.ok_json();
    assert_eq!(s.status("guild-1").await["reserved_usd"], "3");
    let cancelled = s
        .run(&["cancel", "guild-1", "alice", "k1", "--json"])
        .await
        .ok_json();
    assert_eq!(cancelled["result"], "cancelled");
    assert_eq!(cancelled["actual_usd"], "0");
    let after = s.status("guild-1").await;
    assert_eq!(after["reserved_usd"], "0");
    assert_eq!(after["committed_usd"], "0");
    assert_eq!(after["remaining_usd"], "10");
}

#[tokio::test]
async fn extend_pushes_the_expiry_of_a_live_hold() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let reserved = s
        .run(&[
            "reserve",
            "guild-1",
            "alice",
            "k1",
            "--model",
            "cheap",
            "--tier",
            "1",
            "--estimate-usd",
            "1",
            "--ttl-ms",
            "60000",
            "--json",
        ])
        .await
        .ok_json();
    let before = reserved["expires_at_ms"].as_i64().unwrap();
    let extended = s
        .run(&[
            "extend", "guild-1", "alice", "k1", "--ttl-ms", "3600000", "--json",
        ])
        .await
        .ok_json();
    assert_eq!(extended["result"], "extended");
    assert!(extended["expires_at_ms"].as_i64().unwrap() > before + 3_000_000);
}

#[tokio::test]
async fn extend_of_a_settled_hold_exits_5() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    s.run(&["cancel", "guild-1", "alice", "k1"]).await;
    let run = s
        .run(&["extend", "guild-1", "alice", "k1", "--ttl-ms", "1000"])
        .await;
    assert_eq!(run.exit, Exit::NotFound, "{}", run.err);
}

#[tokio::test]
async fn reserve_over_budget_exits_3_and_holds_nothing() {
    let s = Sandbox::new();
    s.budget("guild-1", "1").await;
    let run = s.reserve_usd("guild-1", "alice", "k1", "1.01").await;
    assert_eq!(run.exit, Exit::BudgetExceeded);
    assert_eq!(run.exit.code(), 3);
    let doc = run.json();
    assert_eq!(doc["result"], "budget_exceeded");
    assert_eq!(doc["scope"], "community");
    assert_eq!(doc["remaining_usd"], "1");
    assert_eq!(s.status("guild-1").await["reserved_usd"], "0");
}

#[tokio::test]
async fn reserve_over_the_per_user_cap_exits_3_naming_the_user_scope() {
    let s = Sandbox::new();
    s.run(&["set-budget", "guild-1", "10", "--per-user-cap", "1"])
        .await;
    let run = s.reserve_usd("guild-1", "alice", "k1", "2").await;
    assert_eq!(run.exit, Exit::BudgetExceeded);
    assert_eq!(run.json()["scope"], "user");
}

#[tokio::test]
async fn reserve_again_with_the_same_key_returns_the_first_hold() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    let again = s.reserve_usd("guild-1", "alice", "k1", "5").await.ok_json();
    assert_eq!(again["result"], "already_reserved");
    assert_eq!(again["estimate_usd"], "1");
    assert_eq!(s.status("guild-1").await["reserved_usd"], "1");
}

#[tokio::test]
async fn reserve_in_a_community_without_budget_exits_5() {
    let s = Sandbox::new();
    let run = s.reserve_usd("nobody", "alice", "k1", "1").await;
    assert_eq!(run.exit, Exit::NotFound, "{}", run.err);
    assert!(run.err.contains("no budget configured"), "{}", run.err);
}

#[tokio::test]
async fn reserve_of_a_model_the_tier_may_not_use_exits_2() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let run = s
        .run(&[
            "reserve",
            "guild-1",
            "alice",
            "k1",
            "--model",
            "reasoning",
            "--tier",
            "1",
            "--estimate-usd",
            "1",
        ])
        .await;
    assert_eq!(run.exit, Exit::Usage, "{}", run.err);
}
