//! The simulator in CI: many seeds, each run to quiescence with every law
//! checked, spread over the machine's cores; one seed replayed twice
//! gives the same trace.
//!
//! `SPENDGATE_SIM_SEED=<seed>` runs that seed alone (with its trace),
//! `SPENDGATE_SIM_SKIP` / `SPENDGATE_SIM_MASK` leave out what a shrunk
//! failure says; `SPENDGATE_SIM_SEEDS=<n>` and `SPENDGATE_SIM_STEPS=<n>`
//! change the batch; `SPENDGATE_SIM_SECS=<s>` soaks: new seeds until that
//! many seconds have passed; `SPENDGATE_SIM_FIRST=<n>` starts either at
//! seed n. `SPENDGATE_SIM_LOG=1` prints the services'
//! own logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spendgate_sim::shrink::shrink;
use spendgate_sim::{Failure, Plan, Shape, run, run_plan};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
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

fn shape() -> Shape {
    Shape {
        steps: u32::try_from(env("SPENDGATE_SIM_STEPS", 2_000)).unwrap(),
        ..Shape::default()
    }
}

/// The failure shrunk, with the run it came from.
fn report(failure: Failure) -> String {
    let first = format!(
        "seed {} step {}: {}: {} ({} events)",
        failure.seed,
        failure.step,
        failure.law,
        failure.detail,
        failure.trace.len()
    );
    let small = runtime().block_on(shrink(failure));
    format!("{first}\nshrunk:\n{small}")
}

#[test]
fn every_law_holds_on_every_seed() {
    let shape = shape();
    if let Ok(seed) = std::env::var("SPENDGATE_SIM_SEED") {
        let seed = seed.parse().expect("SPENDGATE_SIM_SEED is a u64");
        let plan = Plan {
            skip: list("SPENDGATE_SIM_SKIP")
                .iter()
                .map(|s| s.parse().expect("SPENDGATE_SIM_SKIP lists steps"))
                .collect(),
            mask: list("SPENDGATE_SIM_MASK")
                .iter()
                .map(|s| {
                    let (c, u) = s
                        .split_once('.')
                        .expect("SPENDGATE_SIM_MASK lists community.user");
                    (c.parse().unwrap(), u.parse().unwrap())
                })
                .collect(),
        };
        match runtime().block_on(run_plan(seed, shape, plan)) {
            Ok(trace) => println!("{}", trace.join("\n")),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let seeds = env("SPENDGATE_SIM_SEEDS", 2_000);
    let soak = std::env::var("SPENDGATE_SIM_SECS")
        .ok()
        .map(|s| Duration::from_secs(s.parse().expect("SPENDGATE_SIM_SECS is seconds")));
    let started = Instant::now();
    let first = env("SPENDGATE_SIM_FIRST", 1);
    let next = AtomicU64::new(first);
    let done = AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failures: Vec<Failure> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let rt = runtime();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        let more = match soak {
                            Some(secs) => started.elapsed() < secs,
                            None => seed < first + seeds,
                        };
                        if !more {
                            return None;
                        }
                        if let Err(failure) = rt.block_on(run(seed, shape)) {
                            next.store(u64::MAX / 2, Ordering::Relaxed);
                            return Some(failure);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().unwrap())
            .collect()
    });
    let ran = done.load(Ordering::Relaxed);
    println!(
        "{ran} seeds x {} steps in {:.1} s",
        shape.steps,
        started.elapsed().as_secs_f64()
    );
    if let Some(failure) = failures.into_iter().min_by_key(|f| f.seed) {
        panic!("{}", report(failure));
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
