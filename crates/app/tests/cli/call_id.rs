//! `reserve` prints the call's id, for the gateway to pass to the
//! provider with the call.

use crate::support::Sandbox;

#[tokio::test]
async fn reserve_prints_a_call_id_per_community_the_same_on_a_replay() {
    let s = Sandbox::new();
    s.budget("guild-1", "10").await;
    s.budget("guild-2", "10").await;
    let first = s
        .reserve_usd("guild-1", "alice", "msg-1", "0.5")
        .await
        .ok_json();
    let id = first["call_id"].as_str().unwrap();
    assert!(id.starts_with("sgc1_"), "{id}");
    let replay = s
        .reserve_usd("guild-1", "alice", "msg-1", "0.5")
        .await
        .ok_json();
    assert_eq!(replay["result"], "already_reserved");
    assert_eq!(replay["call_id"], id);
    let other = s
        .reserve_usd("guild-2", "alice", "msg-1", "0.5")
        .await
        .ok_json();
    assert_ne!(other["call_id"], id);
}
