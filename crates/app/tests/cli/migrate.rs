//! `migrate up | down | status` on a fresh SQLite file.

use crate::support::Sandbox;

#[tokio::test]
async fn migrate_status_on_a_fresh_file_lists_every_migration_pending() {
    let s = Sandbox::new();
    let doc = s.run(&["migrate", "status", "--json"]).await.ok_json();
    let list = doc["migrations"].as_array().unwrap();
    assert!(list.len() >= 9, "{doc}");
    assert_eq!(doc["pending"], list.len());
}

#[tokio::test]
async fn migrate_up_applies_every_migration_and_status_shows_none_pending() {
    let s = Sandbox::new();
    let up = s.run(&["migrate", "up", "--json"]).await.ok_json();
    assert_eq!(up["pending"], 0);
    let status = s.run(&["migrate", "status", "--json"]).await.ok_json();
    assert_eq!(status["pending"], 0);
    assert!(
        status["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied"] == true)
    );
}

#[tokio::test]
async fn migrate_down_undoes_the_latest_migration() {
    let s = Sandbox::new();
    s.run(&["migrate", "up"]).await;
    let down = s
        .run(&["migrate", "down", "--steps", "1", "--json"])
        .await
        .ok_json();
    assert_eq!(down["pending"], 1);
    assert_eq!(down["undone_now"], 1);
}
