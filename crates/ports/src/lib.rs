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
mod cache;
mod clock;
mod config;
mod idempotency;
mod lease;
mod listing;
mod provider;
mod queue;
mod redact;
mod usage;

pub use budget_store::{BudgetStatus, BudgetStore, StoreError};
pub use cache::TierCache;
pub use clock::{Clock, SystemClock};
pub use config::{CommunityConfig, ConfigProvider, RepoError, TierOverrideRepo, Versioned};
pub use idempotency::{
    Claim, IdempotencyStore, MAX_OPERATION_LEN, MAX_RECORD_BYTES, MAX_REQUEST_KEY_LEN, RequestId,
    StoredResponse, check_fingerprint,
};
pub use lease::{Lease, MAX_LEASE_ARG_LEN, check_lease_args};
pub use listing::{
    CursorError, PageSize, PageSizeError, USERS_PAGE_MAX, UsersCursor, UsersPage, user_after,
};
pub use provider::{ProviderError, ProviderUsage, UsageSource};
pub use queue::{
    Claimed, DeadLetter, FinalizeQueue, Handover, PendingSettlement, QueueItem,
    ReconciliationQueue, WorkQueue, same_use,
};
pub use redact::redact_url;
pub use usage::{CostSource, UsageLog, UsageRecord};

#[cfg(any(test, feature = "mocks"))]
pub use budget_store::MockBudgetStore;
#[cfg(any(test, feature = "mocks"))]
pub use cache::MockTierCache;
#[cfg(any(test, feature = "mocks"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "mocks"))]
pub use config::{MockConfigProvider, MockTierOverrideRepo};
#[cfg(any(test, feature = "mocks"))]
pub use idempotency::MockIdempotencyStore;
#[cfg(any(test, feature = "mocks"))]
pub use lease::MockLease;
#[cfg(any(test, feature = "mocks"))]
pub use provider::MockUsageSource;
#[cfg(any(test, feature = "mocks"))]
pub use queue::MockWorkQueue;
#[cfg(any(test, feature = "mocks"))]
pub use usage::MockUsageLog;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_port_is_object_safe() {
        let _: Arc<dyn BudgetStore> = Arc::new(MockBudgetStore::new());
        let _: Arc<dyn ConfigProvider> = Arc::new(MockConfigProvider::new());
        let _: Arc<dyn TierOverrideRepo> = Arc::new(MockTierOverrideRepo::new());
        let _: Arc<dyn UsageLog> = Arc::new(MockUsageLog::new());
        let _: Arc<dyn UsageSource> = Arc::new(MockUsageSource::new());
        let _: Arc<dyn Clock> = Arc::new(MockClock::new());
        let _: Arc<dyn TierCache> = Arc::new(MockTierCache::new());
        let _: Arc<dyn Lease> = Arc::new(MockLease::new());
        let _: Arc<dyn IdempotencyStore> = Arc::new(MockIdempotencyStore::new());
        let _: Arc<FinalizeQueue> = Arc::new(MockWorkQueue::<PendingSettlement>::new());
        let _: Arc<ReconciliationQueue> = Arc::new(MockWorkQueue::<Handover>::new());
    }

    #[test]
    fn domain_refusals_map_to_actionable_store_errors() {
        let community = spendgate_domain::CommunityId::parse("c").unwrap();
        assert_eq!(
            StoreError::from_domain(&community, spendgate_domain::BudgetError::NotConfigured),
            StoreError::NotConfigured(community.clone())
        );
        assert!(matches!(
            StoreError::from_domain(&community, spendgate_domain::MoneyError::Overflow.into()),
            StoreError::Overflow(_)
        ));
        assert!(matches!(
            StoreError::from_domain(&community, spendgate_domain::TimeError::Overflow.into()),
            StoreError::InvalidInput(_)
        ));
    }
}
