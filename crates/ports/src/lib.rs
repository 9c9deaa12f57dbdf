//! The ports of spendgate: the async traits the services need, and nothing
//! about how they are met.
//!
//! Domain types flow through these traits; adapters (memory, Redis,
//! PostgreSQL/SQLite) implement them and the app wires them together. Each
//! trait is object-safe (used as `Arc<dyn Port>`) and documents its
//! contract: what is atomic, what is idempotent, and what every path
//! returns. With the `mocks` feature (or under `cfg(test)`) each trait also
//! has a `mockall` double, `Mock<Trait>`.

mod budget_store;
mod clock;
mod config;
mod provider;
mod usage;

pub use budget_store::{BudgetStatus, BudgetStore, StoreError};
pub use clock::{Clock, SystemClock};
pub use config::{CommunityConfig, ConfigProvider, RepoError, TierOverrideRepo};
pub use provider::{ProviderError, ProviderUsage, UsageSource};
pub use usage::{CostSource, UsageLog, UsageRecord};

#[cfg(any(test, feature = "mocks"))]
pub use budget_store::MockBudgetStore;
#[cfg(any(test, feature = "mocks"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "mocks"))]
pub use config::{MockConfigProvider, MockTierOverrideRepo};
#[cfg(any(test, feature = "mocks"))]
pub use provider::MockUsageSource;
#[cfg(any(test, feature = "mocks"))]
pub use usage::MockUsageLog;
