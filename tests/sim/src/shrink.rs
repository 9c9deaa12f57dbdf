//! Shrinking a failure: the shortest prefix of steps that still breaks
//! the same law, then as few callers and steps as still do.

use std::future::Future;

use crate::world::{Failure, Plan, Shape, run_plan};

/// How many runs a shrink may make.
const BUDGET: u32 = 400;

/// Whether `plan` on `shape` still breaks `law`: the failure if so.
async fn still(seed: u64, shape: Shape, plan: &Plan, law: &str) -> Option<Failure> {
    match run_plan(seed, shape, plan.clone()).await {
        Err(failure) if failure.law == law => Some(failure),
        _ => None,
    }
}

/// Tries `candidate`; keeps it in `best` when it still fails.
async fn attempt<F>(tries: &mut u32, best: &mut Failure, candidate: F) -> bool
where
    F: Future<Output = Option<Failure>>,
{
    if *tries >= BUDGET {
        return false;
    }
    *tries += 1;
    match candidate.await {
        Some(failure) => {
            *best = failure;
            true
        }
        None => false,
    }
}

/// The smallest failure found from `failure` within a budget of runs:
/// fewer steps (a prefix), fewer callers (masked), fewer steps within
/// the prefix (skipped), each kept only while the same law still breaks.
/// Deterministic: the same failure shrinks to the same result.
pub async fn shrink(failure: Failure) -> Failure {
    let seed = failure.seed;
    let law = failure.law;
    let mut best = failure;
    let mut tries = 0;
    // The prefix: the failing step is the last one run.
    let at_failure = Shape {
        steps: best.step.saturating_add(1).min(best.shape.steps),
        ..best.shape
    };
    let plan = best.plan.clone();
    attempt(&mut tries, &mut best, still(seed, at_failure, &plan, law)).await;
    let mut low = 1;
    let mut high = best.shape.steps;
    while low < high && tries < BUDGET {
        let mid = low + (high - low) / 2;
        let shape = Shape {
            steps: mid,
            ..best.shape
        };
        let plan = best.plan.clone();
        if attempt(&mut tries, &mut best, still(seed, shape, &plan, law)).await {
            high = best.shape.steps.min(mid);
        } else {
            low = mid + 1;
        }
    }
    // Callers.
    for community in 0..best.shape.communities {
        for user in 0..best.shape.users {
            let mut plan = best.plan.clone();
            if !plan.mask.insert((community, user)) {
                continue;
            }
            let shape = best.shape;
            attempt(&mut tries, &mut best, still(seed, shape, &plan, law)).await;
        }
    }
    // Steps: halves, then quarters, down to one at a time.
    let mut chunk = best.shape.steps.div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < best.shape.steps && tries < BUDGET {
            let mut plan = best.plan.clone();
            let end = start.saturating_add(chunk).min(best.shape.steps);
            let new: Vec<u32> = (start..end).filter(|s| !plan.skip.contains(s)).collect();
            if !new.is_empty() {
                plan.skip.extend(new);
                let shape = best.shape;
                attempt(&mut tries, &mut best, still(seed, shape, &plan, law)).await;
            }
            start = end;
        }
        if chunk == 1 || tries >= BUDGET {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    best
}
