//! A timed reaper pass at scale on PostgreSQL, run by hand:
//!
//! ```text
//! cargo test -p spendgate-adapter-postgres --test adapter -- \
//!     --ignored reaper_pass_over_100k_communities --nocapture
//! ```
//!
//! 100,000 configured communities, each with one hold; 1,000 of those
//! holds are expired. The pass is `due_communities` then one `reap` per
//! community it names; the target is under 5 s. A second pass over 1,000
//! more communities reaps [`REAPERS`] communities at a time. It prints the
//! plan of the due query and the timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use spendgate_adapter_postgres::SqlBudgetStore;
use spendgate_domain::{BudgetPolicy, Period};
use spendgate_ports::BudgetStore;

use crate::support::{Backend, TestDb, ts};

const COMMUNITIES: i64 = 100_000;
const DUE_EVERY: i64 = 100;
const T0: i64 = 1_763_942_400_000; // 2025-11-24
const TTL: i64 = 60_000;
/// The second pass's holds fall due from here, after the first pass.
const SECOND: i64 = T0 + 2 * TTL + COMMUNITIES;
/// Reaps in flight at once in the second pass.
const REAPERS: usize = 4;

async fn seed(t: &TestDb, period: &str) {
    let c = "'c' || lpad(i::text, 6, '0')";
    let range = format!("FROM generate_series(1, {COMMUNITIES}) AS i");
    for sql in [
        format!("INSERT INTO budget_community SELECT {c}, 1000000, NULL {range}"),
        format!("INSERT INTO budget_period SELECT {c}, '{period}', 0, 300, 1, false {range}"),
        format!("INSERT INTO budget_user_period SELECT {c}, '{period}', 'alice', 0, 300 {range}"),
        format!(
            "INSERT INTO budget_hold SELECT {c}, 'alice', 'k1', 300, 'cheap', '{period}', {T0}, \
             CASE WHEN i % {DUE_EVERY} = 0 THEN {T0} + {TTL} + i \
             WHEN i % {DUE_EVERY} = {DUE_EVERY} / 2 THEN {SECOND} + i \
             ELSE {T0} + 86400000 END {range}"
        ),
        "ANALYZE".to_owned(),
    ] {
        t.exec(&sql, vec![]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "seeds 100,000 communities; run by hand to time a reaper pass"]
async fn reaper_pass_over_100k_communities() {
    let t = TestDb::fresh(Backend::Postgres).await;
    let period = Period::containing(ts(T0)).unwrap();
    let seeding = Instant::now();
    seed(&t, &period.to_string()).await;
    eprintln!(
        "seeded {COMMUNITIES} communities in {:?}",
        seeding.elapsed()
    );

    let now = T0 + TTL + COMMUNITIES;
    let plan =
        t.db.query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT community_id, MIN(expires_at) AS due \
                 FROM budget_hold WHERE expires_at <= {now} GROUP BY community_id \
                 ORDER BY due, community_id LIMIT 10000"
            ),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{plan}");
    assert!(plan.contains("budget_hold_due"), "the due index is used");

    let store = Arc::new(SqlBudgetStore::new(t.db.clone(), BudgetPolicy::default()));
    let expected = usize::try_from(COMMUNITIES / DUE_EVERY).unwrap();

    // One round trip, for scale: 1,000 status reads.
    let started = Instant::now();
    for c in due_sample(&store, now).await {
        store.status(&c, period).await.unwrap();
    }
    eprintln!(
        "1000 status reads (one round trip each): {:?}",
        started.elapsed()
    );

    // Sequential pass.
    let started = Instant::now();
    let due = store.due_communities(ts(now), 10_000).await.unwrap();
    let listed = started.elapsed();
    assert_eq!(due.len(), expected);
    let mut reaped = 0;
    for c in &due {
        reaped += store.reap(c, ts(now)).await.unwrap().count;
    }
    let pass = started.elapsed();
    assert_eq!(reaped, u64::try_from(expected).unwrap());
    eprintln!(
        "sequential pass: due_communities {listed:?}, due_communities + {expected} reaps {pass:?}"
    );
    assert!(store.due_communities(ts(now), 10).await.unwrap().is_empty());

    // Concurrent pass: the next 1,000, `REAPERS` at a time.
    let now = SECOND + COMMUNITIES;
    let started = Instant::now();
    let due = store.due_communities(ts(now), 10_000).await.unwrap();
    let listed_again = started.elapsed();
    assert_eq!(due.len(), expected);
    let chunk = due.len().div_ceil(REAPERS);
    let workers: Vec<_> = due
        .chunks(chunk)
        .map(|part| {
            let (store, part) = (Arc::clone(&store), part.to_vec());
            tokio::spawn(async move {
                let mut count = 0;
                for c in &part {
                    count += store.reap(c, ts(now)).await.unwrap().count;
                }
                count
            })
        })
        .collect();
    let mut reaped = 0;
    for worker in workers {
        reaped += worker.await.unwrap();
    }
    let concurrent = started.elapsed();
    assert_eq!(reaped, u64::try_from(expected).unwrap());
    eprintln!(
        "concurrent pass ({REAPERS} reapers): due_communities {listed_again:?}, \
         due_communities + {expected} reaps {concurrent:?}"
    );
    assert!(
        pass < Duration::from_secs(5) || concurrent < Duration::from_secs(5),
        "sequential pass {pass:?}, concurrent pass {concurrent:?}"
    );
}

async fn due_sample(store: &SqlBudgetStore, now: i64) -> Vec<spendgate_domain::CommunityId> {
    store.due_communities(ts(now), 1_000).await.unwrap()
}
