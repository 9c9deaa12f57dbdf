//! Stream reconciliation: for a hold whose guard was dropped, ask the
//! provider what the call really cost and finalize with it.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Handover, ReconciliationQueue, UsageSource};

use super::job::{Job, TickOutcome};
use crate::services::budget::{Backoff, BudgetService, HoldTicket};

/// How reconciliation retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconciliationSettings {
    /// Tries before the hold is left to the reaper.
    pub max_tries: u32,
    /// Wait after each failed try (10 s, doubling, by default).
    pub backoff: Backoff,
    /// Entries claimed per pass.
    pub batch: u32,
    /// How long a claimed entry is leased to this pass.
    pub lease: Ttl,
}

impl Default for ReconciliationSettings {
    /// 3 tries, 10 s doubling, 100 a pass, 60 s lease.
    fn default() -> Self {
        let secs = |s: u32| Ttl::from_secs(s).unwrap_or(Ttl::DAY);
        Self {
            max_tries: 3,
            backoff: Backoff::new(secs(10), secs(3_600)),
            batch: 100,
            lease: secs(60),
        }
    }
}

/// Settles handed-over holds with the provider's word on their cost.
pub struct ReconciliationJob {
    queue: Arc<ReconciliationQueue>,
    source: Arc<dyn UsageSource>,
    budget: BudgetService,
    settings: ReconciliationSettings,
}

/// Counter of handovers the provider never reported, left to the reaper.
pub const GAVE_UP: &str = "spendgate_reconciliation_gave_up_total";

impl ReconciliationJob {
    /// Reconciliation of `queue` against `source`.
    pub fn new(
        queue: Arc<ReconciliationQueue>,
        source: Arc<dyn UsageSource>,
        budget: BudgetService,
        settings: ReconciliationSettings,
    ) -> Self {
        Self {
            queue,
            source,
            budget,
            settings,
        }
    }

    /// One try for one hold: `Ok(true)` settled, `Ok(false)` not yet known,
    /// `Err` a failure worth retrying.
    async fn try_one(&self, handover: &Handover) -> Result<bool, String> {
        let usage = self
            .source
            .usage(&handover.hold.key)
            .await
            .map_err(|e| e.to_string())?;
        let Some(usage) = usage else {
            return Ok(false);
        };
        let ticket = HoldTicket {
            community: handover.community.clone(),
            hold: handover.hold.clone(),
            trace_id: handover.trace_id.clone(),
        };
        match self
            .budget
            .reconcile(&ticket, usage.cost, usage.tokens)
            .await
        {
            // Committed, or kept in the finalize queue for the replay.
            Ok(_) => Ok(true),
            Err(error) => Err(error.to_string()),
        }
    }
}

#[async_trait]
impl Job for ReconciliationJob {
    fn name(&self) -> &'static str {
        "reconciliation"
    }

    fn singleton(&self) -> bool {
        false
    }

    async fn tick(&self, now: Timestamp) -> TickOutcome {
        let claimed = match self
            .queue
            .claim_due(now, self.settings.batch, self.settings.lease)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "reconciliation: queue unavailable");
                return TickOutcome {
                    items: 0,
                    failures: 1,
                };
            }
        };
        let mut outcome = TickOutcome::default();
        for entry in claimed {
            let handover = &entry.item;
            let hold = handover.hold.hold_ref();
            let tries = entry.attempts.saturating_add(1);
            let failure = match self.try_one(handover).await {
                Ok(true) => {
                    if let Err(error) = self.queue.complete(&handover.community, &hold).await {
                        tracing::warn!(%error, "reconciliation: entry not completed; its replay is harmless");
                    }
                    outcome.items += 1;
                    continue;
                }
                Ok(false) => "provider does not know the call yet".to_owned(),
                Err(error) => error,
            };
            outcome.failures += 1;
            if tries >= self.settings.max_tries {
                tracing::warn!(
                    community = %handover.community,
                    key = %handover.hold.key,
                    %failure,
                    "reconciliation gave up; the reaper releases the hold"
                );
                metrics::counter!(GAVE_UP).increment(1);
                if let Err(error) = self.queue.complete(&handover.community, &hold).await {
                    tracing::warn!(%error, "reconciliation: entry not removed");
                }
            } else {
                let due = self.settings.backoff.due_after(tries, now);
                if let Err(error) = self
                    .queue
                    .retry_at(&handover.community, &hold, &failure, due)
                    .await
                {
                    tracing::warn!(%error, "reconciliation: retry not scheduled; due after its lease");
                }
            }
        }
        outcome
    }
}
