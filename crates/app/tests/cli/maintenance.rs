//! `reap`, `drift` and `rebuild`.

use std::time::Duration;

use crate::support::Sandbox;
use spendgate::inbound::cli::Exit;

#[tokio::test]
async fn reap_of_a_community_releases_its_expired_holds_and_a_late_finalize_still_commits() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.run(&[
        "reserve",
        "guild-1",
        "alice",
        "k1",
        "--model",
        "cheap",
        "--tier",
        "1",
        "--estimate-usd",
        "2",
        "--ttl-ms",
        "1",
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reaped = s.run(&["reap", "guild-1", "--json"]).await.ok_json();
    assert_eq!(reaped["reaped"], 1);
    assert_eq!(reaped["reclaimed_usd"], "2");
    assert_eq!(s.status("guild-1").await["reserved_usd"], "0");

    let late = s
        .run(&[
            "finalize",
            "guild-1",
            "alice",
            "k1",
            "--actual-usd",
            "0.25",
            "--json",
        ])
        .await
        .ok_json();
    assert_eq!(late["result"], "late_finalized");
    assert_eq!(s.status("guild-1").await["committed_usd"], "0.25");
}

#[tokio::test]
async fn reap_without_a_community_runs_one_reaper_pass_over_all() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.budget("guild-2", "10").await;
    for community in ["guild-1", "guild-2"] {
        s.run(&[
            "reserve",
            community,
            "alice",
            "k1",
            "--model",
            "cheap",
            "--tier",
            "1",
            "--estimate-usd",
            "1",
            "--ttl-ms",
            "1",
        ])
        .await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pass = s.run(&["reap", "--json"]).await.ok_json();
    assert_eq!(pass["job"], "reaper");
    assert_eq!(pass["items"], 2);
    assert_eq!(pass["failures"], 0);
}

#[tokio::test]
async fn drift_finds_no_difference_after_a_finalize() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "k1", "1").await.ok_json();
    s.run(&[
        "finalize",
        "guild-1",
        "alice",
        "k1",
        "--actual-usd",
        "0.3",
        "--json",
    ])
    .await
    .ok_json();
    let pass = s.run(&["drift", "--json"]).await.ok_json();
    assert_eq!(pass["job"], "drift");
    assert_eq!(pass["items"], 1);
    assert_eq!(pass["failures"], 0);
}

#[tokio::test]
async fn rebuild_sets_committed_to_the_usage_log_and_refuses_a_bad_period() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.run(&[
        "reserve",
        "guild-1",
        "alice",
        "k1",
        "--model",
        "cheap",
        "--tier",
        "1",
        "--estimate-usd",
        "2",
    ])
    .await;
    s.run(&["finalize", "guild-1", "alice", "k1", "--actual-usd", "1.5"])
        .await;
    let rebuilt = s.run(&["rebuild", "guild-1", "--json"]).await.ok_json();
    assert_eq!(rebuilt["before_usd"], "1.5");
    assert_eq!(rebuilt["after_usd"], "1.5");
    assert_eq!(rebuilt["users"]["alice"], "1.5");
    let bad = s.run(&["rebuild", "guild-1", "--period", "11-2026"]).await;
    assert_eq!(bad.exit, Exit::Usage);
}
