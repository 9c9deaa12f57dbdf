//! The service scenarios on real Redis (through a cuttable proxy) for the
//! hot path and a fresh PostgreSQL database for configuration, usage log
//! and finalize queue.

use std::sync::Arc;

use spendgate::domain::Micros;
use spendgate::{ReserveError, Settled, Spendgate, Usage};

use crate::support::servers::{PgDb, redis_url};
use crate::support::{Env, Parts, Wipe, m};
use spendgate_fault_proxy::FaultProxy;

async fn env_with_proxy() -> (Env, Arc<FaultProxy>) {
    let clock = Env::clock_at_mid_november();
    let upstream = redis_url();
    let authority = upstream
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = Arc::new(FaultProxy::start(authority).await.unwrap());
    let (db, db_url) = PgDb::create().await;
    let spendgate = Spendgate::builder()
        .redis(format!("redis://127.0.0.1:{}", proxy.port()))
        .database(db_url)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let env = Env::assemble(
        Parts {
            spendgate,
            keep: Box::new((db, proxy.clone())),
            wipe: Wipe::RedisKeys { url: upstream },
        },
        clock,
    )
    .await;
    (env, proxy)
}

pub async fn env() -> Env {
    env_with_proxy().await.0
}

crate::service_scenarios!(env);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_redis_denies_reserves_and_queues_finalizes_until_it_is_back() {
    let (env, proxy) = env_with_proxy().await;
    let c = env.community("cut", 10).await;
    let budget = env.sg.budget();
    let mut holds = Vec::new();
    for i in 0..10 {
        holds.push(env.reserve(env.request(&c, &format!("k{i}"))).await);
    }

    proxy.set_cut(true);
    let refused = budget.reserve(env.request(&c, "late")).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::StoreUnavailable(_)),
        "{refused:?}"
    );
    let mut sum = 0;
    for (i, hold) in holds.into_iter().enumerate() {
        let actual = 900 + i64::try_from(i).unwrap();
        sum += actual;
        let settled = hold.finalize(Usage::cost(m(actual))).await.unwrap();
        assert_eq!(settled, Settled::Queued { actual: m(actual) });
    }

    proxy.set_cut(false);
    // The connection manager reconnects on demand; replay until done.
    let mut completed = 0;
    for _ in 0..50 {
        env.advance_ms(3_600_000);
        completed += budget.replay_settlements(100).await.unwrap().completed;
        if completed == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(completed, 10);
    let status = budget
        .status(
            &c,
            Some(spendgate::domain::Period::parse("2026-11").unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status.committed, status.reserved), (m(sum), Micros::ZERO));
    assert_eq!(env.log.total_cost(&c, status.period).await.unwrap(), m(sum));
}
