//! Finalize replay: settlements left in the finalize queue (store outage,
//! usage log outage, a process that died mid-settlement) are applied.

use async_trait::async_trait;
use spendgate_domain::Timestamp;

use super::job::{Job, TickOutcome};
use crate::services::budget::BudgetService;

/// Applies due settlements of the finalize queue, at most `batch` a pass,
/// exactly once each (see [`BudgetService::replay_settlements`]).
pub struct FinalizeReplayJob {
    budget: BudgetService,
    batch: u32,
}

impl FinalizeReplayJob {
    /// A replay of up to `batch` settlements a pass.
    pub fn new(budget: BudgetService, batch: u32) -> Self {
        Self { budget, batch }
    }
}

#[async_trait]
impl Job for FinalizeReplayJob {
    fn name(&self) -> &'static str {
        "finalize_replay"
    }

    fn singleton(&self) -> bool {
        // Claims are leased per entry; replicas share the work.
        false
    }

    async fn tick(&self, _now: Timestamp) -> TickOutcome {
        match self.budget.replay_settlements(self.batch).await {
            Ok(report) => TickOutcome {
                items: report.completed,
                failures: report.retried.saturating_add(report.refused),
            },
            Err(error) => {
                tracing::warn!(%error, "finalize replay: queue unavailable");
                TickOutcome {
                    items: 0,
                    failures: 1,
                }
            }
        }
    }
}
