//! The simulator's generator on the real stores: standalone Redis, Redis
//! Cluster, PostgreSQL and SQLite, fewer seeds and steps than on memory,
//! on a runtime with real time (the stores' clients keep their own
//! timeouts), every law checked after every step and at quiescence. A
//! store that cannot be reached fails the test. Redis and PostgreSQL are
//! faulted through a TCP proxy (a cut, a slow link, a reply lost after
//! the server applied the write); the cluster and SQLite in process (see
//! the `backend` module).
//!
//! Reads `SPENDGATE_TEST_REDIS_URL`, `SPENDGATE_TEST_REDIS_CLUSTER_URLS`
//! (comma-separated) and `SPENDGATE_TEST_DATABASE_URL`, with loopback
//! defaults; `SPENDGATE_SIM_REAL_SEEDS` and `SPENDGATE_SIM_REAL_STEPS`
//! change the batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use spendgate_sim::{Backend, Plan, Shape, run_on};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds_on(backend: &Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shape = Shape {
        steps: u32::try_from(count("SPENDGATE_SIM_REAL_STEPS", 300)).unwrap(),
        ..Shape::default()
    };
    for seed in 1..=count("SPENDGATE_SIM_REAL_SEEDS", 8) {
        if let Err(failure) = rt.block_on(run_on(backend, seed, shape, Plan::default())) {
            panic!("{backend:?}: {failure}");
        }
    }
}

#[test]
fn every_law_holds_on_redis() {
    seeds_on(&Backend::Redis(env(
        "SPENDGATE_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
    )));
}

#[test]
fn every_law_holds_on_a_redis_cluster() {
    let urls = env(
        "SPENDGATE_TEST_REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103",
    );
    seeds_on(&Backend::RedisCluster(
        urls.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    ));
}

#[test]
fn every_law_holds_on_postgres() {
    seeds_on(&Backend::Postgres(env(
        "SPENDGATE_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )));
}

#[test]
fn every_law_holds_on_sqlite() {
    seeds_on(&Backend::Sqlite);
}
