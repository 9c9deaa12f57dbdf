//! The guard an accepted reserve returns: settle it with `finalize` or
//! `cancel`. Dropped unsettled, it hands the hold to reconciliation, never
//! cancels it: the call may have cost money. Without a provider usage
//! source nothing would reconcile it, so it is charged its estimate.

use std::time::Duration;

use spendgate_domain::{CallId, ExtendOutcome, Micros, Timestamp, Ttl};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{BudgetService, ExtendError, FinalizeError, HandoverError, HoldTicket, Settled, Usage};
use crate::services::telemetry::{self, HANDOVERS};

/// What the store said when it accepted the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) remaining: Option<Micros>,
    pub(super) limit: Option<Micros>,
    pub(super) warning: bool,
    pub(super) replay: bool,
}

/// A held estimate for one call.
///
/// Settle it exactly once: [`HoldGuard::finalize`] with what the call used,
/// or [`HoldGuard::cancel`] if the call never ran. A guard dropped
/// unsettled (a panic, a dropped stream, a forgotten branch), or whose
/// settlement failed without being kept, is handed to reconciliation on the
/// current tokio runtime; when no provider usage source is configured it is
/// finalized with its estimate instead (a call that may have run is never
/// made free).
#[derive(Debug)]
pub struct HoldGuard {
    service: BudgetService,
    ticket: HoldTicket,
    grant: Grant,
    heartbeat: Option<DropGuard>,
    settled: bool,
}

impl HoldGuard {
    pub(super) fn new(service: BudgetService, ticket: HoldTicket, grant: Grant) -> Self {
        Self {
            service,
            ticket,
            grant,
            heartbeat: None,
            settled: false,
        }
    }

    /// Everything needed to settle the hold without this guard (for a
    /// caller that must pass it across a process boundary).
    pub fn ticket(&self) -> &HoldTicket {
        &self.ticket
    }

    /// The call's id: pass it to the provider with the call, so that
    /// reconciliation can ask for this call's usage if the stream drops.
    pub fn call_id(&self) -> CallId {
        self.ticket.call_id()
    }

    /// The amount held.
    pub fn estimate(&self) -> Micros {
        self.ticket.hold.estimate
    }

    /// When the hold becomes reapable (as last extended through this
    /// guard).
    pub fn expires_at(&self) -> Timestamp {
        self.ticket.hold.expires_at
    }

    /// Community headroom left after this hold (0 when over the limit);
    /// `None` on a replayed reserve.
    pub fn remaining(&self) -> Option<Micros> {
        self.grant.remaining
    }

    /// The community limit; `None` on a replayed reserve.
    pub fn limit(&self) -> Option<Micros> {
        self.grant.limit
    }

    /// Whether this reserve brought the period's spend to the warning
    /// threshold (once per period), for notifications.
    pub fn warning(&self) -> bool {
        self.grant.warning
    }

    /// Whether the reserve was a replay of an earlier one with the same key
    /// (the hold is the original).
    pub fn is_replay(&self) -> bool {
        self.grant.replay
    }

    /// Commits what the call used and releases the estimate.
    ///
    /// # Errors
    /// As [`BudgetService::settle`]. On an error the guard is handed to
    /// reconciliation as it drops, unless the error means the settlement is
    /// already kept.
    pub async fn finalize(mut self, usage: Usage) -> Result<Settled, FinalizeError> {
        self.stop_heartbeat();
        let result = self.service.finalize(&self.ticket, usage).await;
        self.settled = match &result {
            Ok(_)
            | Err(
                FinalizeError::Store(_)
                | FinalizeError::CostOutOfRange(_)
                | FinalizeError::SettledOtherwise { .. }
                | FinalizeError::UnknownHold { .. },
            ) => true,
            Err(_) => false,
        };
        result
    }

    /// Releases the estimate without committing a cost: the call never ran.
    ///
    /// # Errors
    /// As [`HoldGuard::finalize`].
    pub async fn cancel(self) -> Result<Settled, FinalizeError> {
        self.finalize(Usage::cost(Micros::ZERO)).await
    }

    /// Pushes the hold's expiry to `now + ttl` (never earlier).
    ///
    /// # Errors
    /// [`ExtendError`].
    pub async fn extend(&mut self, ttl: Ttl) -> Result<ExtendOutcome, ExtendError> {
        let outcome = self
            .service
            .extend(&self.ticket.community, &self.ticket.hold_ref(), ttl)
            .await?;
        if let ExtendOutcome::Extended { expires_at } = outcome {
            self.ticket.hold.expires_at = expires_at;
        }
        Ok(outcome)
    }

    /// Keeps the hold alive for a long stream: extends it to `now + ttl`
    /// every third of `ttl` until the guard is settled or dropped. Stops by
    /// itself once the store says the hold is no longer live. Replaces any
    /// heartbeat started before.
    pub fn keep_alive(&mut self, ttl: Ttl) {
        let token = CancellationToken::new();
        let period = Duration::from_millis(u64::try_from(ttl.as_millis() / 3).unwrap_or(1).max(1));
        let service = self.service.clone();
        let community = self.ticket.community.clone();
        let hold = self.ticket.hold_ref();
        let stop = token.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match service.extend(&community, &hold, ttl).await {
                    Ok(ExtendOutcome::Extended { .. }) => {}
                    Ok(_) | Err(ExtendError::UnknownHold(_)) => return,
                    Err(error) => {
                        tracing::warn!(%community, %error, "heartbeat extend failed; trying again next beat");
                    }
                }
            }
        });
        self.heartbeat = Some(token.drop_guard());
    }

    /// Gives up the guard and keeps the hold: nothing is handed over on
    /// drop, no heartbeat runs. For a caller that settles later by
    /// [`HoldTicket`] (an HTTP client finalizing in a later request); the
    /// hold is then the caller's to settle, or the reaper's.
    pub fn into_ticket(mut self) -> HoldTicket {
        self.stop_heartbeat();
        self.settled = true;
        self.ticket.clone()
    }

    /// Hands the hold to reconciliation now, rather than on drop.
    ///
    /// # Errors
    /// [`HandoverError::NoUsageSource`]: nothing was handed over, and the
    /// guard, dropped, charges the estimate. [`HandoverError::Queue`]: the
    /// hold is left to the reaper.
    pub async fn hand_over(mut self) -> Result<(), HandoverError> {
        self.stop_heartbeat();
        if !self.service.reconciles() {
            return Err(HandoverError::NoUsageSource);
        }
        self.settled = true;
        self.service.hand_over(&self.ticket).await
    }

    fn stop_heartbeat(&mut self) {
        self.heartbeat = None;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if self.settled {
            return;
        }
        let service = self.service.clone();
        let ticket = self.ticket.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if !service.reconciles() {
                        telemetry::count(HANDOVERS, "outcome", "charged_estimate");
                        tracing::warn!(community = %ticket.community, "hold dropped unsettled and no provider to ask: charging its estimate");
                        let estimate = Usage::cost(ticket.hold.estimate);
                        if let Err(error) = service.finalize(&ticket, estimate).await {
                            tracing::error!(community = %ticket.community, %error, "dropped hold not charged; the reaper releases it");
                        }
                    } else if let Err(error) = service.hand_over(&ticket).await {
                        tracing::error!(community = %ticket.community, %error, "dropped hold not handed over; the reaper releases it");
                    }
                });
            }
            Err(_) => {
                telemetry::count(HANDOVERS, "outcome", "no_runtime");
                tracing::error!(
                    community = %self.ticket.community,
                    "hold dropped outside a tokio runtime; not handed over, the reaper releases it"
                );
            }
        }
    }
}
