//! Bad input and unknown holds: the exit code a script branches on, and a
//! message naming what was wrong.

use crate::support::Sandbox;
use spendgate::inbound::cli::Exit;

#[tokio::test]
async fn cancel_of_an_unknown_hold_exits_5() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let run = s.run(&["cancel", "guild-1", "alice", "never"]).await;
    assert_eq!(run.exit, Exit::NotFound);
    assert_eq!(run.exit.code(), 5);
    assert!(
        run.err
            .contains("no hold for community guild-1, user alice, key never"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn finalize_of_an_unknown_hold_commits_the_cost_without_it_once() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let s = &s;
    let finalize = || {
        s.run(&[
            "finalize",
            "guild-1",
            "alice",
            "lost",
            "--actual-usd",
            "0.75",
            "--json",
        ])
    };
    let first = finalize().await.ok_json();
    assert_eq!(first["result"], "committed_without_hold");
    let again = finalize().await.ok_json();
    assert_eq!(again["result"], "already_finalized");
    assert_eq!(s.status("guild-1").await["committed_usd"], "0.75");
}

#[tokio::test]
async fn finalize_of_an_unknown_hold_by_tokens_without_the_model_exits_2() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let run = s
        .run(&[
            "finalize",
            "guild-1",
            "alice",
            "lost",
            "--prompt-tokens",
            "10",
            "--completion-tokens",
            "10",
        ])
        .await;
    assert_eq!(run.exit, Exit::Usage, "{}", run.err);
    assert!(
        run.err.contains("give the model or the cost"),
        "{}",
        run.err
    );
    assert_eq!(s.status("guild-1").await["committed_usd"], "0");
}

#[tokio::test]
async fn an_error_with_json_also_prints_a_json_error_document() {
    let s = Sandbox::new();
    let run = s
        .run(&[
            "extend", "guild-1", "alice", "never", "--ttl-ms", "1000", "--json",
        ])
        .await;
    assert_eq!(run.exit, Exit::NotFound);
    let doc = run.json();
    assert_eq!(doc["error"]["code"], 5);
    assert_eq!(doc["error"]["kind"], "not_found");
}

#[tokio::test]
async fn a_malformed_amount_exits_2_naming_the_argument() {
    let s = Sandbox::new();
    let run = s.run(&["set-budget", "guild-1", "ten"]).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(
        run.err.contains("<USD>") && run.err.contains("malformed USD amount"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn a_negative_amount_exits_2_naming_the_flag() {
    let s = Sandbox::new();
    let run = s
        .run(&["finalize", "guild-1", "alice", "k1", "--actual-usd=-1"])
        .await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(run.err.contains("--actual-usd"), "{}", run.err);
}

#[tokio::test]
async fn an_amount_with_too_many_decimals_exits_2() {
    let s = Sandbox::new();
    let run = s.reserve_usd("guild-1", "alice", "k1", "0.0000001").await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(run.err.contains("--estimate-usd"), "{}", run.err);
}

#[tokio::test]
async fn a_malformed_community_id_exits_2_naming_the_argument() {
    let s = Sandbox::new();
    let run = s.run(&["status", "{guild}"]).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(
        run.err.contains("<COMMUNITY>") && run.err.contains("community_id"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn an_empty_idempotency_key_exits_2_naming_the_argument() {
    let s = Sandbox::new();
    let run = s.run(&["cancel", "guild-1", "alice", ""]).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(
        run.err.contains("<KEY>") && run.err.contains("is empty"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn a_malformed_period_exits_2_naming_the_flag() {
    let s = Sandbox::new();
    let run = s.run(&["status", "guild-1", "--period", "2026-13"]).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(
        run.err.contains("--period") && run.err.contains("YYYY-MM"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn an_invalid_tier_exits_2() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    let run = s
        .run(&[
            "reserve",
            "guild-1",
            "alice",
            "k1",
            "--model",
            "cheap",
            "--tier",
            "12",
            "--estimate-usd",
            "1",
        ])
        .await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(run.err.contains("tier"), "{}", run.err);
}

#[tokio::test]
async fn reserve_needs_either_token_counts_or_an_estimate() {
    let s = Sandbox::new();
    let neither = s
        .run(&["reserve", "g", "u", "k", "--model", "cheap", "--tier", "1"])
        .await;
    assert_eq!(neither.exit, Exit::Usage);
    let both = s
        .run(&[
            "reserve",
            "g",
            "u",
            "k",
            "--model",
            "cheap",
            "--tier",
            "1",
            "--estimate-usd",
            "1",
            "--prompt-tokens",
            "1",
            "--max-completion-tokens",
            "1",
        ])
        .await;
    assert_eq!(both.exit, Exit::Usage);
}

#[tokio::test]
async fn a_bad_setting_from_the_environment_exits_2_naming_the_variable() {
    let s = Sandbox::new().env("SPENDGATE_LOG_LEVEL", "loud");
    let run = s.run(&["status", "guild-1"]).await;
    assert_eq!(run.exit, Exit::Usage);
    assert!(
        run.err.contains("environment variable SPENDGATE_LOG_LEVEL"),
        "{}",
        run.err
    );
}

#[tokio::test]
async fn an_unreachable_database_exits_4() {
    let s = Sandbox::new();
    let run = s
        .run(&[
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "status",
            "g",
        ])
        .await;
    assert_eq!(run.exit, Exit::Unavailable, "{}", run.err);
}

#[tokio::test]
async fn help_lists_the_exit_codes() {
    let s = Sandbox::new();
    let run = s.run(&["--help"]).await;
    assert_eq!(run.exit, Exit::Ok);
    assert!(run.out.contains("3  budget exceeded"), "{}", run.out);
}
