//! `SqlLease` on both backends: one holder at a time, renewal, expiry by
//! the caller's `now` (no sleeping), compare-and-delete release, bad input,
//! and racing takers.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use spendgate_adapter_postgres::SqlLease;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Lease, RepoError};
use tokio::sync::Barrier;

use crate::support::{TestDb, ts};

fn ttl(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

const MINUTE: i64 = 60_000;

/// The stored (holder, expires_at) of `name`, if it has a row.
async fn row(t: &TestDb, name: &str) -> Option<(String, i64)> {
    let stmt = Statement::from_sql_and_values(
        t.db.get_database_backend(),
        "SELECT holder, expires_at FROM worker_lease WHERE name = $1",
        vec![name.into()],
    );
    t.db.query_one_raw(stmt).await.unwrap().map(|r| {
        (
            r.try_get_by_index::<String>(0).unwrap(),
            r.try_get_by_index::<i64>(1).unwrap(),
        )
    })
}

async fn first_holder_is_granted_and_others_refused_while_it_lives(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(1_000)).await,
        Ok(true)
    );
    assert_eq!(row(t, "reaper").await, Some(("a".into(), 1_300)));
    // Refused while it lives, up to its last millisecond; nothing changes.
    for now in [1_000, 1_150, 1_299] {
        assert_eq!(
            lease.acquire("reaper", "b", ttl(MINUTE), ts(now)).await,
            Ok(false),
            "at {now}"
        );
    }
    assert_eq!(row(t, "reaper").await, Some(("a".into(), 1_300)));
    // Another pool (another replica) sees the same.
    let other = SqlLease::new(t.reconnect().await);
    assert_eq!(
        other.acquire("reaper", "c", ttl(1), ts(1_200)).await,
        Ok(false)
    );
}

async fn holder_renews_its_lease(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(1_000)).await,
        Ok(true)
    );
    // Renewed at 1_250: the lease now runs to 1_550, past its first end.
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(1_250)).await,
        Ok(true)
    );
    assert_eq!(row(t, "reaper").await, Some(("a".into(), 1_550)));
    assert_eq!(
        lease.acquire("reaper", "b", ttl(300), ts(1_300)).await,
        Ok(false)
    );
    assert_eq!(
        lease.acquire("reaper", "b", ttl(300), ts(1_549)).await,
        Ok(false)
    );
    // A renewal sets the end anew, shorter too.
    assert_eq!(
        lease.acquire("reaper", "a", ttl(10), ts(1_500)).await,
        Ok(true)
    );
    assert_eq!(row(t, "reaper").await, Some(("a".into(), 1_510)));
    // The holder may even renew a lease it let expire, if nobody took it.
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(5_000)).await,
        Ok(true)
    );
    assert_eq!(row(t, "reaper").await, Some(("a".into(), 5_300)));
}

async fn another_holder_is_granted_after_expiry(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(1_000)).await,
        Ok(true)
    );
    assert_eq!(
        lease.acquire("reaper", "b", ttl(300), ts(1_299)).await,
        Ok(false)
    );
    // At the expiry millisecond the lease is over.
    assert_eq!(
        lease.acquire("reaper", "b", ttl(300), ts(1_300)).await,
        Ok(true)
    );
    assert_eq!(row(t, "reaper").await, Some(("b".into(), 1_600)));
    // The former holder lost it: it can neither renew nor release.
    assert_eq!(
        lease.acquire("reaper", "a", ttl(300), ts(1_301)).await,
        Ok(false)
    );
    assert_eq!(lease.release("reaper", "a").await, Ok(false));
    assert_eq!(row(t, "reaper").await, Some(("b".into(), 1_600)));
}

async fn only_the_holder_releases(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    assert_eq!(lease.release("sync", "a").await, Ok(false));
    assert_eq!(
        lease.acquire("sync", "a", ttl(MINUTE), ts(0)).await,
        Ok(true)
    );
    assert_eq!(lease.release("sync", "b").await, Ok(false));
    assert_eq!(row(t, "sync").await, Some(("a".into(), MINUTE)));
    assert_eq!(
        lease.acquire("sync", "b", ttl(MINUTE), ts(10)).await,
        Ok(false)
    );

    assert_eq!(lease.release("sync", "a").await, Ok(true));
    assert_eq!(row(t, "sync").await, None);
    assert_eq!(lease.release("sync", "a").await, Ok(false));
    assert_eq!(
        lease.acquire("sync", "b", ttl(MINUTE), ts(20)).await,
        Ok(true)
    );
}

async fn names_are_independent(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    assert_eq!(
        lease.acquire("reaper", "a", ttl(MINUTE), ts(0)).await,
        Ok(true)
    );
    assert_eq!(lease.acquire("sync", "b", ttl(100), ts(0)).await, Ok(true));
    assert_eq!(
        lease.acquire("reaper", "b", ttl(MINUTE), ts(1)).await,
        Ok(false)
    );
    assert_eq!(
        lease.acquire("sync", "a", ttl(MINUTE), ts(1)).await,
        Ok(false)
    );
    // One expiring or released leaves the other held.
    assert_eq!(
        lease.acquire("sync", "a", ttl(MINUTE), ts(100)).await,
        Ok(true)
    );
    assert_eq!(
        lease.acquire("reaper", "b", ttl(MINUTE), ts(100)).await,
        Ok(false)
    );
    assert_eq!(lease.release("sync", "a").await, Ok(true));
    assert_eq!(row(t, "reaper").await, Some(("a".into(), MINUTE)));
    assert_eq!(t.count("SELECT COUNT(*) FROM worker_lease").await, 1);
}

async fn bad_names_and_holders_are_invalid_input(t: &TestDb) {
    let lease = SqlLease::new(t.db.clone());
    let long = "x".repeat(129);
    for bad in [
        "",
        "two words",
        "tab\there",
        "line\n",
        "open{",
        "close}",
        "é",
        long.as_str(),
    ] {
        for (name, holder) in [(bad, "a"), ("good", bad)] {
            let got = lease.acquire(name, holder, ttl(MINUTE), ts(0)).await;
            assert!(
                matches!(got, Err(RepoError::InvalidInput(_))),
                "acquire({name:?}, {holder:?}): {got:?}"
            );
            let got = lease.release(name, holder).await;
            assert!(
                matches!(got, Err(RepoError::InvalidInput(_))),
                "release({name:?}, {holder:?}): {got:?}"
            );
        }
    }
    // An end past the representable range is refused too.
    let got = lease
        .acquire("good", "a", ttl(Ttl::MAX_MS), Timestamp::MAX)
        .await;
    assert!(matches!(got, Err(RepoError::InvalidInput(_))), "{got:?}");
    assert_eq!(t.count("SELECT COUNT(*) FROM worker_lease").await, 0);
    // 128 bytes are fine.
    let max = "m".repeat(128);
    assert_eq!(
        lease.acquire(&max, &max, ttl(MINUTE), ts(0)).await,
        Ok(true)
    );
    assert_eq!(lease.release(&max, &max).await, Ok(true));
}

/// 8 takers (on two pools, like two replicas) race for one name at once,
/// first while nobody holds it (insert path), then while an expired holder
/// still has the row (update path): exactly one is granted each time.
async fn racing_acquirers_get_exactly_one_grant(t: &TestDb) {
    let pools: [DatabaseConnection; 2] = [t.db.clone(), t.reconnect().await];
    for round in 0..4 {
        let name = format!("race-{round}");
        let now = if round % 2 == 1 {
            // An expired lease of a holder that is not racing.
            let lease = SqlLease::new(t.db.clone());
            assert_eq!(lease.acquire(&name, "old", ttl(100), ts(0)).await, Ok(true));
            ts(1_000)
        } else {
            ts(0)
        };
        let start = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let lease = SqlLease::new(pools[i % 2].clone());
                let name = name.clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    let holder = format!("holder-{i}");
                    let got = lease.acquire(&name, &holder, ttl(MINUTE), now).await;
                    (holder, got)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (holder, got) = task.await.unwrap();
            if got.unwrap() {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            row(t, &name).await,
            Some((winners[0].clone(), now.as_millis() + MINUTE)),
            "round {round}"
        );
    }
}

crate::on_both_backends!(
    first_holder_is_granted_and_others_refused_while_it_lives,
    holder_renews_its_lease,
    another_holder_is_granted_after_expiry,
    only_the_holder_releases,
    names_are_independent,
    bad_names_and_holders_are_invalid_input,
    racing_acquirers_get_exactly_one_grant,
);
