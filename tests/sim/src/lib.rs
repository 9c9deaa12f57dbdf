//! A seeded, deterministic simulation of spendgate: replicas of the real
//! budget services and every worker (reaper, finalize replay,
//! reconciliation against a simulated provider, config sync, drift,
//! idempotency purge) over the real memory adapters, with a fault layer
//! around the budget store (down, slow, a lost reply after the write
//! applied) and around the database's ports (configuration, usage log,
//! finalize and reconciliation queues: down, slow), replicas crashing and
//! restarting from the durable ports alone, races on one call and on one
//! configuration row, on a manual clock with month boundaries and jumps,
//! checked against the laws of the design brief after every step and at
//! quiescence.
//!
//! One `u64` seed decides every choice (callers, amounts, faults, clock),
//! and each step draws from its own generator (seed and step), so a
//! failure replays exactly (`SPENDGATE_SIM_SEED=<seed>`) and can be
//! shrunk by leaving steps and callers out ([`shrink`]). It runs on a
//! current-thread Tokio runtime with paused time; nothing reads the wall
//! clock or the OS's randomness, and no decision iterates a hash map.
//!
//! [`Mutant`] puts back defects spendgate really had; the tests show the
//! simulator catches each.
//!
//! # What it found
//! A settlement whose store write applied but whose reply was lost (the
//! synchronous attempt or a replay's) is queued; when its replay reached
//! the store only after the marker retention (24 h of outage, or the
//! replay worker stopped that long), the store had forgotten the marker,
//! the usage log had no row (the lost attempt never wrote one), and the
//! replay committed the cost a second time (law 3): seeds 188, 244, 293
//! and 374 of the first 400 (300 steps each). A replay that finds the
//! store without the call the marker retention after its hold was made
//! now parks it as a dead letter for an operator; law 5 counts a parked
//! settlement as committed once or not at all, never twice.

mod callers;
pub mod database;
pub mod faults;
mod ledger;
pub mod mutant;
mod operators;
mod quiescence;
mod replica;
pub mod shrink;
pub mod world;

pub use mutant::Mutant;
pub use world::{Failure, Plan, Shape, run, run_plan};
