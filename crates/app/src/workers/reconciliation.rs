//! Stream reconciliation: for a hold whose guard was dropped, ask the
//! provider what the call really cost and finalize with it.
//!
//! The provider is asked by the call's id ([`Handover::call_id`]), never
//! by the caller's idempotency key, and an answer naming another model
//! than the hold's is refused (see [`BudgetService::reconcile`]): both
//! would otherwise charge one tenant's call with another's cost.
//!
//! When the provider never answers (unknown call, errors, refused
//! answers) within [`ReconciliationSettings::max_tries`], the hold is
//! charged its estimate by default ([`GiveUp::ChargeEstimate`]): a dropped
//! stream still cost money, and releasing the hold would make it free.
//! [`GiveUp::Release`] leaves it to the reaper instead, as a call that
//! cost nothing.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Handover, ReconciliationQueue, UsageSource};

use super::job::{Job, TickOutcome};
use crate::services::budget::{Backoff, BudgetService, FinalizeError, HoldTicket, ReconcileError};

/// What becomes of a handed-over hold the provider never reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GiveUp {
    /// Commit its estimate (usage log source `reconciliation`, no
    /// tokens): the call ran, so it is charged what was held for it.
    #[default]
    ChargeEstimate,
    /// Leave it to the reaper, which releases the estimate at the hold's
    /// TTL: the call is charged nothing unless someone finalizes it late.
    Release,
}

/// How reconciliation retries, and what it does when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconciliationSettings {
    /// Tries before giving up.
    pub max_tries: u32,
    /// Wait after each failed try (10 s, doubling, by default).
    pub backoff: Backoff,
    /// Entries claimed per pass.
    pub batch: u32,
    /// How long a claimed entry is leased to this pass.
    pub lease: Ttl,
    /// What happens to the hold after the last try.
    pub on_give_up: GiveUp,
}

impl Default for ReconciliationSettings {
    /// 3 tries, 10 s doubling, 100 a pass, 60 s lease, then the estimate
    /// is charged.
    fn default() -> Self {
        let secs = |s: u32| Ttl::from_secs(s).unwrap_or(Ttl::DAY);
        Self {
            max_tries: 3,
            backoff: Backoff::new(secs(10), secs(3_600)),
            batch: 100,
            lease: secs(60),
            on_give_up: GiveUp::default(),
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

/// Counter of handovers the provider never reported, labelled `action`:
/// `charged_estimate` or `released` (left to the reaper).
pub const GAVE_UP: &str = "spendgate_reconciliation_gave_up_total";

/// Whether a settlement error still means the settlement is kept: queued
/// for the replay, or parked as a dead letter for an operator.
fn kept(error: &FinalizeError) -> bool {
    matches!(
        error,
        FinalizeError::Store(_) | FinalizeError::CostOutOfRange(_)
    )
}

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

    /// One try for one hold, asking the provider by the call's id:
    /// `Ok(true)` settled, `Ok(false)` not yet known, `Err` a failure
    /// worth retrying (an answer about another model among them).
    async fn try_one(&self, handover: &Handover) -> Result<bool, String> {
        let usage = self
            .source
            .usage(&handover.call_id())
            .await
            .map_err(|e| e.to_string())?;
        let Some(usage) = usage else {
            return Ok(false);
        };
        match self.budget.reconcile(&ticket(handover), &usage).await {
            // Committed, or kept in the finalize queue.
            Ok(_) => Ok(true),
            Err(ReconcileError::Finalize(error)) if kept(&error) => Ok(true),
            // A cost of 0 for a hold the store no longer knows (reaped,
            // its tombstone gone): nothing to release, nothing to charge.
            Err(ReconcileError::Finalize(FinalizeError::UnknownHold { .. })) => Ok(true),
            Err(error) => Err(error.to_string()),
        }
    }

    /// After the last try: charges the estimate or leaves the hold to the
    /// reaper. Returns whether the entry is done; `false` when the charge
    /// could not be kept anywhere, to be tried again.
    async fn give_up(&self, handover: &Handover, failure: &str) -> bool {
        let action = match self.settings.on_give_up {
            GiveUp::Release => "released",
            GiveUp::ChargeEstimate => {
                match self.budget.charge_estimate(&ticket(handover)).await {
                    Ok(_) => {}
                    Err(error) if kept(&error) => {}
                    Err(error) => {
                        tracing::warn!(
                            community = %handover.community,
                            %error,
                            "reconciliation: the estimate could not be charged; trying again"
                        );
                        return false;
                    }
                }
                "charged_estimate"
            }
        };
        tracing::warn!(
            community = %handover.community,
            key = %handover.hold.key,
            %failure,
            action,
            "reconciliation gave up: the provider never reported the call"
        );
        metrics::counter!(GAVE_UP, "action" => action).increment(1);
        true
    }
}

fn ticket(handover: &Handover) -> HoldTicket {
    HoldTicket {
        community: handover.community.clone(),
        hold: handover.hold.clone(),
        trace_id: handover.trace_id.clone(),
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
            let instance = Some(handover.hold.created_at);
            let tries = entry.attempts.saturating_add(1);
            let failure = match self.try_one(handover).await {
                Ok(true) => {
                    if let Err(error) = self
                        .queue
                        .complete(&handover.community, &hold, instance)
                        .await
                    {
                        tracing::warn!(%error, "reconciliation: entry not completed; its replay is harmless");
                    }
                    outcome.items += 1;
                    continue;
                }
                Ok(false) => "provider does not know the call yet".to_owned(),
                Err(error) => error,
            };
            outcome.failures += 1;
            if tries >= self.settings.max_tries && self.give_up(handover, &failure).await {
                if let Err(error) = self
                    .queue
                    .complete(&handover.community, &hold, instance)
                    .await
                {
                    tracing::warn!(%error, "reconciliation: entry not removed");
                }
            } else {
                let due = self.settings.backoff.due_after(tries, now);
                if let Err(error) = self
                    .queue
                    .retry_at(&handover.community, &hold, instance, &failure, due)
                    .await
                {
                    tracing::warn!(%error, "reconciliation: retry not scheduled; due after its lease");
                }
            }
        }
        outcome
    }
}
