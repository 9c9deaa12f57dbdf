//! `finalize` and `cancel` by ids with the hot path on a Redis of the
//! test's own that is flushed, then stopped, then restarted empty: a cost
//! the command reported committed or queued is committed exactly once after
//! recovery.

use spendgate::Spendgate;
use spendgate::inbound::cli::Exit;

use crate::own_redis::ThrowawayRedis;
use crate::support::Sandbox;

fn finalize<'a>(key: &'a str, usd: &'a str) -> [&'a str; 7] {
    [
        "finalize",
        "guild-1",
        "alice",
        key,
        "--actual-usd",
        usd,
        "--json",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_through_a_flushed_then_stopped_redis_are_committed_once() {
    let mut redis = ThrowawayRedis::start().await;
    let s = Sandbox::new().env("SPENDGATE_REDIS_URL", &redis.url());
    s.budget("guild-1", "10").await;
    for key in ["m1", "m2", "m3"] {
        s.reserve_usd("guild-1", "alice", key, "1").await.ok_json();
    }
    let done = s.run(&finalize("m1", "0.25")).await.ok_json();
    assert_eq!(done["result"], "finalized");

    redis.flush().await;
    let lost = s.run(&finalize("m2", "0.75")).await.ok_json();
    assert_eq!(lost["result"], "committed_without_hold");
    let again = s.run(&finalize("m2", "0.75")).await.ok_json();
    assert_eq!(again["result"], "already_finalized");
    let cancel = s.run(&["cancel", "guild-1", "alice", "m3"]).await;
    assert_eq!(cancel.exit, Exit::NotFound, "{}", cancel.err);

    // The limits again (config sync would), then a hold, then a stop.
    s.budget("guild-1", "10").await;
    s.reserve_usd("guild-1", "alice", "m4", "1").await.ok_json();
    redis.pause();
    let queued = s.run(&finalize("m4", "0.5")).await.ok_json();
    assert_eq!(queued["result"], "queued");
    redis.resume();

    // `serve`'s replay worker, once.
    let sg = Spendgate::builder()
        .redis(redis.url())
        .database(format!("sqlite:{}?mode=rwc", s.path("spendgate.db")))
        .build()
        .await
        .unwrap();
    for _ in 0..100 {
        sg.budget().replay_settlements(100).await.unwrap();
        if sg.ports().finalize_queue.len().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sg.ports().finalize_queue.len().await.unwrap(), 0);
    let retry = s.run(&finalize("m4", "0.5")).await.ok_json();
    assert_eq!(retry["result"], "already_finalized");

    // m1's 0.25 went with the flush: the usage log has it.
    let rebuilt = s.run(&["rebuild", "guild-1", "--json"]).await.ok_json();
    assert_eq!(rebuilt["after_usd"], "1.5", "{rebuilt}");
    let status = s.status("guild-1").await;
    assert_eq!(
        (&status["committed_usd"], &status["reserved_usd"]),
        (&"1.5".into(), &"0".into()),
        "{status}"
    );

    // A restart without persistence loses it all again; the log does not.
    redis.lose_everything().await;
    let rebuilt = s.run(&["rebuild", "guild-1", "--json"]).await.ok_json();
    assert_eq!(rebuilt["after_usd"], "1.5", "{rebuilt}");
}
