//! `dead-letters`: the settlements the store refused for good.

use spendgate::inbound::cli::Exit;

use crate::support::Sandbox;

#[tokio::test]
async fn dead_letters_lists_a_finalize_refused_as_out_of_range_and_exits_0() {
    let s = Sandbox::new();
    let empty = s.run(&["dead-letters", "--json"]).await.ok_json();
    assert_eq!(empty["count"], 0);

    // The largest limit, 2^53 - 1 micro-USD.
    s.budget("guild-1", "9007199254.740991").await;
    for key in ["k1", "k2"] {
        s.reserve_usd("guild-1", "alice", key, "0.000001")
            .await
            .ok_json();
    }
    let finalize = |key: &'static str, usd: &'static str| {
        [
            "finalize",
            "guild-1",
            "alice",
            key,
            "--actual-usd",
            usd,
            "--json",
        ]
    };
    s.run(&finalize("k1", "9007199254.74099")).await.ok_json();
    let refused = s.run(&finalize("k2", "0.000002")).await;
    assert_eq!(refused.exit, Exit::Usage, "{}", refused.err);
    assert!(refused.err.contains("out of range"), "{}", refused.err);

    let listed = s.run(&["dead-letters", "--json"]).await.ok_json();
    assert_eq!(listed["count"], 1);
    let entry = &listed["dead_letters"][0];
    assert_eq!(
        (&entry["community"], &entry["key"], &entry["actual_usd"]),
        (&"guild-1".into(), &"k2".into(), &"0.000002".into())
    );
    assert_eq!(entry["attempts"], 1);
    let text = s.run(&["dead-letters"]).await;
    assert_eq!(text.exit, Exit::Ok);
    assert!(text.out.starts_with("1 dead letter(s)"), "{}", text.out);
}
