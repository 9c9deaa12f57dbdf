//! Background work: jobs with a testable [`Job::tick`], loops that run them
//! until cancelled, leases for singleton jobs across replicas, and one
//! [`WorkerHandle`] an embedding service starts on its own runtime.
//!
//! [`crate::Spendgate::start_workers`] starts the standard set: reaper,
//! config sync, finalize replay, reconciliation (when a usage source is
//! configured), the drift monitor and the idempotency purge.

pub mod config_sync;
pub mod drift;
pub mod finalize_replay;
pub mod idempotency_purge;
pub mod job;
pub mod reaper;
pub mod reconciliation;
pub mod runner;

pub use config_sync::ConfigSyncJob;
pub use drift::DriftJob;
pub use finalize_replay::FinalizeReplayJob;
pub use idempotency_purge::{IdempotencyPurgeJob, IdempotencyPurgeSettings};
pub use job::{Job, TickOutcome};
pub use reaper::{ReaperJob, ReaperSettings};
pub use reconciliation::{GiveUp, ReconciliationJob, ReconciliationSettings};
pub use runner::{LeaseConfig, Schedule, ShutdownReport, WorkerHandle, run_once};
