//! The contract suites on the in-memory stores.

use std::sync::Arc;

use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::BudgetStore;

async fn store() -> Arc<dyn BudgetStore> {
    Arc::new(MemoryBudgetStore::new(BudgetPolicy::default()))
}

spendgate_contract::budget_store_contract!(store);

/// The idempotency scenarios and races on the in-memory records.
mod idempotency {
    use std::sync::Arc;

    use spendgate_adapter_memory::MemoryIdempotency;
    use spendgate_ports::IdempotencyStore;

    async fn store() -> Arc<dyn IdempotencyStore> {
        Arc::new(MemoryIdempotency::new())
    }

    spendgate_contract::idempotency_store_contract!(store);
}
