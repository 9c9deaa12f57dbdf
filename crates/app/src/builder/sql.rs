//! The SQL shapes (PostgreSQL, or the embedded SQLite file): one
//! connection pool for everything the database keeps.

use std::sync::Arc;

use spendgate_adapter_postgres::{
    FinalizeOutbox, SqlBudgetStore, SqlConfigRepo, SqlIdempotency, SqlLease,
    SqlReconciliationQueue, SqlUsageLog, connect_and_migrate,
};
use spendgate_domain::BudgetPolicy;
use spendgate_ports::{
    BudgetStore, ConfigProvider, FinalizeQueue, IdempotencyStore, Lease, ReconciliationQueue,
    TierOverrideRepo, UsageLog,
};

use super::BuildError;

/// The repositories on one migrated database, and a maker of the SQL
/// budget store on it.
pub(super) struct Parts {
    repo: Arc<SqlConfigRepo>,
    usage_log: Arc<SqlUsageLog>,
    finalize_queue: Arc<FinalizeOutbox>,
    lease: Arc<SqlLease>,
    reconciliation: Arc<SqlReconciliationQueue>,
    idempotency: Arc<SqlIdempotency>,
    store: Box<dyn Fn(BudgetPolicy) -> SqlBudgetStore + Send + Sync>,
}

pub(super) async fn open(url: &str) -> Result<Parts, BuildError> {
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let sqlite = url.starts_with("sqlite:");
    if postgres && !cfg!(feature = "postgres") {
        return Err(BuildError::FeatureDisabled {
            setting: "a postgres:// database URL",
            feature: "postgres",
        });
    }
    if sqlite && !cfg!(feature = "sqlite") {
        return Err(BuildError::FeatureDisabled {
            setting: "a sqlite: database URL",
            feature: "sqlite",
        });
    }
    if !postgres && !sqlite {
        return Err(BuildError::UnsupportedUrl(spendgate_ports::redact_url(url)));
    }
    let db = connect_and_migrate(url)
        .await
        .map_err(BuildError::Database)?;
    Ok(Parts {
        repo: Arc::new(SqlConfigRepo::new(db.clone())),
        usage_log: Arc::new(SqlUsageLog::new(db.clone())),
        finalize_queue: Arc::new(FinalizeOutbox::new(db.clone())),
        lease: Arc::new(SqlLease::new(db.clone())),
        reconciliation: Arc::new(SqlReconciliationQueue::new(db.clone())),
        idempotency: Arc::new(SqlIdempotency::new(db.clone())),
        store: Box::new(move |policy| SqlBudgetStore::new(db.clone(), policy)),
    })
}

impl Parts {
    pub(super) fn config(&self) -> Arc<dyn ConfigProvider> {
        self.repo.clone()
    }

    pub(super) fn tier_overrides(&self) -> Arc<dyn TierOverrideRepo> {
        self.repo.clone()
    }

    pub(super) fn usage_log(&self) -> Arc<dyn UsageLog> {
        self.usage_log.clone()
    }

    pub(super) fn finalize_queue(&self) -> Arc<FinalizeQueue> {
        self.finalize_queue.clone()
    }

    pub(super) fn lease(&self) -> Arc<dyn Lease> {
        self.lease.clone()
    }

    pub(super) fn reconciliation(&self) -> Arc<ReconciliationQueue> {
        self.reconciliation.clone()
    }

    pub(super) fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        self.idempotency.clone()
    }

    pub(super) fn store(&self, policy: BudgetPolicy) -> Arc<dyn BudgetStore> {
        Arc::new((self.store)(policy))
    }
}
