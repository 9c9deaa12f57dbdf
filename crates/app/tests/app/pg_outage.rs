//! PostgreSQL unreachable for a minute (cut through a loopback proxy)
//! while calls keep finishing on Redis: settlements wait in the in-process
//! fallback queue, and once the database is back every usage row is
//! written once, none twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use spendgate::domain::{Limits, Micros, Ttl};
use spendgate::workers::Schedule;
use spendgate::{Backoff, BudgetSettings, ReserveDecision, Spendgate, Usage, WorkerSettings};

use crate::support::servers::{PgDb, redis_url};
use crate::support::{community, key, m, model, user};
use spendgate_fault_proxy::FaultProxy;

/// How long the database stays cut: `SPENDGATE_TEST_PG_OUTAGE_SECS`, 60 by
/// default.
fn outage() -> Duration {
    let secs = std::env::var("SPENDGATE_TEST_PG_OUTAGE_SECS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("SPENDGATE_TEST_PG_OUTAGE_SECS is a number")
        })
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_for_a_minute_loses_and_doubles_no_usage_row() {
    let (db, db_url) = PgDb::create().await;
    let (proxy, proxied) = FaultProxy::for_url(&db_url).await.unwrap();
    let ms = |n| Ttl::from_millis(n).unwrap();
    let sg = Spendgate::builder()
        .redis(redis_url())
        .database(proxied)
        .settings(BudgetSettings {
            retry: Backoff::new(ms(200), ms(2_000)),
            ..BudgetSettings::default()
        })
        .build()
        .await
        .unwrap();
    let workers = sg.start_workers(WorkerSettings {
        finalize_replay: Schedule::every(Duration::from_millis(500)),
        ..WorkerSettings::default()
    });
    let c = community("pg-outage");
    sg.budget()
        .set_budget(&c, Limits::new(Micros::from_usd(1_000)))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let finished: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for task in 0..8_i64 {
        let (sg, c, stop, finished) = (sg.clone(), c.clone(), stop.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0_i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let request = spendgate::ReserveRequest::tokens(
                    c.clone(),
                    user(&format!("u{task}")),
                    key(&format!("t{task}-{i}")),
                    model("cheap"),
                    1,
                    100,
                    100,
                );
                match sg.budget().reserve(request).await {
                    Ok(ReserveDecision::Reserved(hold)) => {
                        let actual = 50 + task * 7 + i % 13;
                        hold.finalize(Usage::cost(m(actual))).await.unwrap();
                        finished.lock().unwrap().push(actual);
                    }
                    other => panic!("reserve on Redis must not depend on the database: {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_cut = finished.lock().unwrap().len();
    proxy.set_cut(true);
    tokio::time::sleep(outage()).await;
    let during_cut = finished.lock().unwrap().len() - before_cut;
    proxy.set_cut(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let costs = finished.lock().unwrap().clone();
    assert!(
        during_cut > 0,
        "calls kept finishing while PostgreSQL was cut"
    );
    let want_rows = i64::try_from(costs.len()).unwrap();
    let want_sum: i64 = costs.iter().sum();

    let direct = Database::connect(db_url.as_str()).await.unwrap();
    let count = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS total \
         FROM agent_usage_log WHERE community_id = $1",
        [c.as_str().into()],
    );
    let mut logged = (0_i64, 0_i64);
    for _ in 0..240 {
        let row = direct.query_one_raw(count.clone()).await.unwrap().unwrap();
        logged = (
            row.try_get("", "n").unwrap(),
            row.try_get("", "total").unwrap(),
        );
        if logged.0 >= want_rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(logged, (want_rows, want_sum), "usage rows (count, sum)");
    let status = sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.reserved), (m(want_sum), m(0)));
    println!(
        "{} calls finished, {during_cut} of them during a {} s cut",
        costs.len(),
        outage().as_secs()
    );
    workers.shutdown(Duration::from_secs(10)).await;
    drop(direct);
    drop(db);
}
