//! The simulator catches defects spendgate really had: each one put back
//! by a mutated fake ([`Mutant`]) breaks a law within a few seeds, and the
//! failure shrinks to a shorter trace that still breaks it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use spendgate_sim::shrink::shrink;
use spendgate_sim::{Failure, Mutant, Shape, run};

/// Seeds tried per mutant before the test gives up.
const SEEDS: u64 = 300;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

fn first_failure(mutant: Mutant) -> Failure {
    let rt = runtime();
    let shape = Shape {
        mutant: Some(mutant),
        ..Shape::default()
    };
    for seed in 1..=SEEDS {
        if let Err(failure) = rt.block_on(run(seed, shape)) {
            println!(
                "{mutant:?}: seed {} step {}: {}: {}",
                failure.seed, failure.step, failure.law, failure.detail
            );
            return failure;
        }
    }
    panic!("{mutant:?} survived {SEEDS} seeds");
}

#[test]
fn settling_by_looking_the_hold_up_first_is_caught() {
    first_failure(Mutant::LookupFirst);
}

#[test]
fn a_store_that_reads_before_it_locks_is_caught() {
    first_failure(Mutant::ReadBeforeLock);
}

#[test]
fn a_store_that_takes_stale_limits_is_caught() {
    first_failure(Mutant::StaleLimits);
}

#[test]
fn a_budget_change_that_rewrites_the_whole_row_is_caught() {
    first_failure(Mutant::WholeRowBudgetChange);
}

#[test]
fn a_failure_shrinks_to_a_shorter_trace_that_breaks_the_same_law() {
    let failure = first_failure(Mutant::ReadBeforeLock);
    let small = runtime().block_on(shrink(failure.clone()));
    println!("{small}");
    assert_eq!(small.law, failure.law);
    assert!(
        small.trace.len() < failure.trace.len(),
        "{} events, was {}",
        small.trace.len(),
        failure.trace.len()
    );
}
