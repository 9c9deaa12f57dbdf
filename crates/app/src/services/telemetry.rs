//! Metric names and the one place that records them, through the `metrics`
//! facade. The library installs no exporter; the binary (or the embedding
//! service) does.

use std::time::Instant;

/// Counter of reserve decisions, labelled `outcome`.
pub const RESERVES: &str = "spendgate_reserves_total";
/// Counter of finalize and cancel results, labelled `outcome`.
pub const FINALIZES: &str = "spendgate_finalizes_total";
/// Counter of settlements left in the finalize queue for replay, labelled
/// `reason`.
pub const QUEUED_SETTLEMENTS: &str = "spendgate_queued_settlements_total";
/// Histogram of budget store call latency in seconds, labelled `op`.
pub const STORE_LATENCY: &str = "spendgate_store_call_seconds";
/// Counter of tier-override look-ups, labelled `source`.
pub const TIER_LOOKUPS: &str = "spendgate_tier_lookups_total";
/// Counter of holds handed to reconciliation, labelled `outcome`.
pub const HANDOVERS: &str = "spendgate_handovers_total";
/// Counter of settlements the store refused for good and parked as dead
/// letters, labelled `reason` (`out_of_range`, `invalid_input`,
/// `corrupt`).
pub const DEAD_LETTERS: &str = "spendgate_dead_letter_settlements_total";
/// Counter of provider answers reconciliation refused, labelled `reason`
/// (`model_mismatch`): nothing was committed from them.
pub const RECONCILIATION_REFUSED: &str = "spendgate_reconciliation_refused_total";
/// Counter of degraded paths taken (a write that could not be made and
/// was left for a worker), labelled `what`.
pub const DEGRADED: &str = "spendgate_degraded_total";

pub(crate) fn count(name: &'static str, label: &'static str, value: &'static str) {
    metrics::counter!(name, label => value).increment(1);
}

/// Times one store call and records it under `op` when dropped.
pub(crate) struct StoreTimer {
    op: &'static str,
    started: Instant,
}

impl StoreTimer {
    pub(crate) fn start(op: &'static str) -> Self {
        Self {
            op,
            started: Instant::now(),
        }
    }
}

impl Drop for StoreTimer {
    fn drop(&mut self) {
        metrics::histogram!(STORE_LATENCY, "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}
