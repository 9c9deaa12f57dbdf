//! What outlives a process (the store, the database, the shared leases
//! and records, the provider) and one `spendgate` process over it: its
//! services and every worker. A crash drops a replica; a restart builds a
//! new one from the durable ports alone.

use std::sync::Arc;

use spendgate::Spendgate;
use spendgate::workers::{
    ConfigSyncJob, DriftJob, FinalizeReplayJob, IdempotencyPurgeJob, IdempotencyPurgeSettings,
    ReaperJob, ReconciliationJob, ReconciliationSettings,
};
use spendgate_adapter_memory::{ManualClock, MemoryIdempotency, MemoryLease, MemoryUsageSource};

use crate::database::DatabasePorts;
use crate::faults::FaultyStore;

/// Everything a crash leaves in place.
pub(crate) struct Durable {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) store: Arc<FaultyStore>,
    pub(crate) db: DatabasePorts,
    pub(crate) lease: Arc<MemoryLease>,
    pub(crate) idempotency: Arc<MemoryIdempotency>,
    pub(crate) provider: Arc<MemoryUsageSource>,
}

/// One process: the services and its own instance of every worker.
pub(crate) struct Replica {
    pub(crate) sg: Spendgate,
    pub(crate) reaper: ReaperJob,
    pub(crate) replay: FinalizeReplayJob,
    pub(crate) sync: ConfigSyncJob,
    pub(crate) drift: DriftJob,
    pub(crate) reconcile: ReconciliationJob,
    pub(crate) purge: IdempotencyPurgeJob,
}

impl Replica {
    /// A process started over `durable`, with nothing in memory.
    pub(crate) async fn start(durable: &Durable) -> Result<Self, String> {
        let sg = Spendgate::builder()
            .clock(durable.clock.clone())
            .store(durable.store.clone())
            .config(durable.db.config.clone())
            .usage_log(durable.db.usage_log.clone())
            .finalize_queue(durable.db.finalize_queue.clone())
            .reconciliation_queue(durable.db.reconciliation.clone())
            .lease(durable.lease.clone())
            .idempotency(durable.idempotency.clone())
            .usage_source(durable.provider.clone())
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let ports = sg.ports().clone();
        let budget = sg.budget().clone();
        Ok(Self {
            reaper: ReaperJob::new(ports.store.clone(), ports.config.clone()),
            replay: FinalizeReplayJob::new(budget.clone(), 100),
            sync: ConfigSyncJob::new(ports.config.clone(), budget.clone()),
            drift: DriftJob::new(
                ports.store.clone(),
                ports.usage_log.clone(),
                ports.config.clone(),
            ),
            reconcile: ReconciliationJob::new(
                ports.reconciliation.clone(),
                durable.provider.clone(),
                budget,
                ReconciliationSettings::default(),
            ),
            purge: IdempotencyPurgeJob::new(
                ports.idempotency.clone(),
                IdempotencyPurgeSettings::default(),
            ),
            sg,
        })
    }
}
