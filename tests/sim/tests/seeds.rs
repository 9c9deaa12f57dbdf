//! The simulator in CI: many seeds, each run to quiescence with every law
//! checked; one seed replayed twice gives the same trace.
//!
//! `SPENDGATE_SIM_SEED=<seed>` runs that seed alone (with its trace);
//! `SPENDGATE_SIM_SEEDS=<n>` and `SPENDGATE_SIM_STEPS=<n>` change the
//! batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use spendgate_sim::{Shape, run};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `SPENDGATE_SIM_LOG=1` prints the services' own logs beside the trace.
fn logs() {
    if std::env::var_os("SPENDGATE_SIM_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    logs();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn every_law_holds_on_every_seed() {
    let shape = Shape {
        steps: u32::try_from(env("SPENDGATE_SIM_STEPS", 300)).unwrap(),
        ..Shape::default()
    };
    let seeds: Vec<u64> = match std::env::var("SPENDGATE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SPENDGATE_SIM_SEED is a u64")],
        Err(_) => (1..=env("SPENDGATE_SIM_SEEDS", 500)).collect(),
    };
    let rt = runtime();
    for seed in seeds {
        if let Err(failure) = rt.block_on(run(seed, shape)) {
            panic!("{failure}");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let shape = Shape::default();
    let first = runtime().block_on(run(42, shape)).unwrap();
    let second = runtime().block_on(run(42, shape)).unwrap();
    assert!(first.len() > 100, "{} events", first.len());
    assert_eq!(first, second);
}
