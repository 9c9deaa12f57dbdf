//! The contract suite on the in-memory store.

use std::sync::Arc;

use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::BudgetStore;

async fn store() -> Arc<dyn BudgetStore> {
    Arc::new(MemoryBudgetStore::new(BudgetPolicy::default()))
}

spendgate_contract::budget_store_contract!(store);
