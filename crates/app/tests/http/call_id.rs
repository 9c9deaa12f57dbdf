//! The reserve answers the call's id, which the gateway passes to the
//! provider with the call: one per call, the same whenever that hold is
//! read back.

use crate::on_every_backend;
use crate::support::Server;

on_every_backend!(a_reserve_answers_a_call_id_unique_to_the_call_and_stable_for_its_hold);

async fn a_reserve_answers_a_call_id_unique_to_the_call_and_stable_for_its_hold(s: Server) {
    let a = s.community("call-a", 10).await;
    let b = s.community("call-b", 10).await;
    let first = s.reserve(&a, "msg-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let id = first.json["call_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sgc1_") && !id.contains("msg-1"), "{id}");

    let replay = s.reserve(&a, "msg-1").await;
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.json["call_id"], id.as_str());
    let found = s
        .get(format!("/api/v1/communities/{a}/reservations/alice/msg-1"))
        .send()
        .await;
    assert_eq!(found.json["hold"]["call_id"], id.as_str());

    let other = s.reserve(&b, "msg-1").await;
    assert_eq!(other.status, 201, "{}", other.text);
    assert_ne!(other.json["call_id"], id.as_str());
}
