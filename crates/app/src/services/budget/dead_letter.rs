//! Settlements the store refused for good: a cost that would push a
//! counter out of the micro-USD range, input it rejects, data it cannot
//! read. Retrying them changes nothing, so their finalize queue entry is
//! parked as a dead letter (never claimed again, counted in
//! [`DEAD_LETTERS`], listed by `spendgate dead-letters`) instead of being
//! replayed forever. A refusal that may pass later (a community whose
//! limits config sync has not restored yet) keeps the entry queued, due
//! again after the longest backoff.

use spendgate_domain::Timestamp;
use spendgate_ports::{PendingSettlement, StoreError};

use super::settle::hold_ref;
use super::{BudgetService, FinalizeError};
use crate::services::telemetry::{self, DEAD_LETTERS};

/// Why a refusal can never pass, as the metric's `reason` label; `None`
/// when it may pass later.
fn permanent(error: &StoreError) -> Option<&'static str> {
    match error {
        StoreError::Overflow(_) => Some("out_of_range"),
        StoreError::InvalidInput(_) => Some("invalid_input"),
        StoreError::Corrupt(_) => Some("corrupt"),
        _ => None,
    }
}

impl BudgetService {
    /// Parks a replayed settlement the store no longer knows, long enough
    /// after its hold that an earlier attempt (whose reply was lost) may
    /// have committed it: committing again could count it twice, dropping
    /// it could lose it, so an operator decides (`spendgate dead-letters`).
    pub(super) async fn ambiguous(&self, pending: &PendingSettlement, now: Timestamp) {
        let hold = hold_ref(pending);
        tracing::error!(
            community = %pending.community,
            user = %hold.user,
            key = %hold.key,
            "settlement unknown to the store past the marker retention after an attempt that may have applied; parked as a dead letter"
        );
        telemetry::count(DEAD_LETTERS, "reason", "ambiguous");
        let reason = "ambiguous: the store no longer knows this use of the key (it forgot it, or \
                      holds another use), and an earlier attempt whose reply was lost may have \
                      committed it; check the counters before applying";
        if let Err(queue_error) = self
            .core()
            .finalize_queue
            .dead_letter(
                &pending.community,
                &hold,
                pending.hold_created_at,
                reason,
                now,
            )
            .await
        {
            tracing::warn!(%queue_error, "finalize queue entry not parked; it is replayed again after its lease");
        }
    }

    /// Handles the store's refusal of `pending` at `now`: parks its queue
    /// entry as a dead letter when the refusal is permanent, else leaves it
    /// queued at the longest backoff (when `queued`, that is when it was
    /// written ahead). Returns the error the caller of a finalize gets.
    pub(super) async fn refused(
        &self,
        pending: &PendingSettlement,
        error: StoreError,
        queued: bool,
        now: Timestamp,
    ) -> FinalizeError {
        let queue = &self.core().finalize_queue;
        let hold = hold_ref(pending);
        let reason = error.to_string();
        match permanent(&error) {
            Some(label) => {
                tracing::error!(
                    community = %pending.community,
                    user = %hold.user,
                    key = %hold.key,
                    %error,
                    "settlement refused for good by the store; parked as a dead letter"
                );
                telemetry::count(DEAD_LETTERS, "reason", label);
                if queued
                    && let Err(queue_error) = queue
                        .dead_letter(
                            &pending.community,
                            &hold,
                            pending.hold_created_at,
                            &reason,
                            now,
                        )
                        .await
                {
                    // The entry keeps its lease and is refused again after it.
                    tracing::warn!(%queue_error, "finalize queue entry not parked; it is refused again after its lease");
                }
            }
            None => {
                tracing::error!(community = %pending.community, %error, "settlement refused by the store; retried after the longest backoff");
                if queued {
                    self.retry(pending, &reason, self.core().settings.retry.max_due(now))
                        .await;
                }
            }
        }
        match error {
            StoreError::Overflow(_) => FinalizeError::CostOutOfRange(error),
            other => FinalizeError::Store(other),
        }
    }
}
