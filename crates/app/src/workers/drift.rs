//! The drift monitor: store counters against the usage log.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, Period, Timestamp};
use spendgate_ports::{BudgetStore, ConfigProvider, UsageLog};

use super::job::{Job, TickOutcome};

/// Gauge: the store's committed minus the usage log's sum, in micro-USD,
/// labelled `community`; set for communities that differ, and back to 0
/// by the first pass that finds one of them in agreement again (so an
/// alert on it clears once the drift is repaired).
pub const DRIFT: &str = "spendgate_drift_micros";

/// Compares, for every enabled community and the current period, the
/// store's `committed` with the usage log's sum, and reports differences
/// (a warning and the [`DRIFT`] gauge). A difference is expected briefly
/// while settlements wait in the finalize queue; one that persists is
/// repaired with [`crate::BudgetService::rebuild`] (or `spendgate rebuild`),
/// which sets the store's sums to the log's.
pub struct DriftJob {
    store: Arc<dyn BudgetStore>,
    log: Arc<dyn UsageLog>,
    config: Arc<dyn ConfigProvider>,
    /// Communities whose gauge this job set to a difference: the ones to
    /// reset to 0 when they agree again (a gauge for every community in
    /// agreement would be one series per community for nothing).
    drifted: Mutex<BTreeSet<CommunityId>>,
}

impl DriftJob {
    /// A monitor of `store` against `log`.
    pub fn new(
        store: Arc<dyn BudgetStore>,
        log: Arc<dyn UsageLog>,
        config: Arc<dyn ConfigProvider>,
    ) -> Self {
        Self {
            store,
            log,
            config,
            drifted: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records whether `community` drifted in this pass; `true` when it
    /// agrees again after a pass that found it drifting.
    fn recovered(&self, community: &CommunityId, drifting: bool) -> bool {
        // A set of ids cannot be left half-updated: a poisoned lock is
        // still consistent.
        let mut drifted = self.drifted.lock().unwrap_or_else(PoisonError::into_inner);
        if drifting {
            drifted.insert(community.clone());
            false
        } else {
            drifted.remove(community)
        }
    }
}

#[async_trait]
impl Job for DriftJob {
    fn name(&self) -> &'static str {
        "drift"
    }

    /// Counts communities checked as items and communities that differ (or
    /// could not be read) as failures.
    async fn tick(&self, now: Timestamp) -> TickOutcome {
        let (Ok(period), Ok(communities)) = (
            Period::containing(now),
            self.config.active_communities().await,
        ) else {
            return TickOutcome {
                items: 0,
                failures: 1,
            };
        };
        let mut outcome = TickOutcome::default();
        for config in communities {
            let c = &config.community;
            let (status, logged) = match (
                self.store.status(c, period).await,
                self.log.total_cost(c, period).await,
            ) {
                (Ok(status), Ok(logged)) => (status, logged),
                (Err(e), _) => {
                    tracing::warn!(community = %c, error = %e, "drift: store unreadable");
                    outcome.failures += 1;
                    continue;
                }
                (_, Err(e)) => {
                    tracing::warn!(community = %c, error = %e, "drift: usage log unreadable");
                    outcome.failures += 1;
                    continue;
                }
            };
            outcome.items += 1;
            let drifting = status.committed != logged;
            if self.recovered(c, drifting) {
                tracing::info!(community = %c, %period, "drift: store and usage log agree again");
                metrics::gauge!(DRIFT, "community" => c.to_string()).set(0.0);
            }
            if drifting {
                let difference = status.committed.get() - logged.get();
                tracing::warn!(
                    community = %c,
                    %period,
                    store = status.committed.get(),
                    log = logged.get(),
                    "drift: store and usage log disagree"
                );
                #[allow(clippy::cast_precision_loss)] // micro-USD below 2^53
                metrics::gauge!(DRIFT, "community" => c.to_string()).set(difference as f64);
                outcome.failures += 1;
            }
        }
        outcome
    }
}
