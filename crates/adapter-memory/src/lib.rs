//! In-process implementations of every spendgate port.
//!
//! An adapter crate: it implements `spendgate-ports` on plain memory, for
//! two uses. It is the embedded default of a single process that needs no
//! server (nothing survives a restart), and it is the double that
//! application tests run against. [`MemoryBudgetStore`] is the domain's
//! reference model behind a lock, so it cannot disagree with the model; the
//! contract suite still runs against it like against every other store.

mod budget_store;
mod cache;
mod clock;
mod config;
mod idempotency;
mod lease;
mod provider;
mod queue;
mod usage;

pub use budget_store::MemoryBudgetStore;
pub use cache::MemoryTierCache;
pub use clock::ManualClock;
pub use config::{MemoryConfig, MemoryTierOverrides};
pub use idempotency::MemoryIdempotency;
pub use lease::MemoryLease;
pub use provider::MemoryUsageSource;
pub use queue::MemoryWorkQueue;
pub use usage::MemoryUsageLog;
