//! Settling a handed-over hold without its caller: with the cost the
//! provider reported for the call, once the answer is checked to be about
//! that call, or, when the provider never reported it, with its estimate.

use spendgate_ports::{CostSource, ProviderUsage};

use spendgate_domain::TokenCounts;

use super::{BudgetService, FinalizeError, HoldTicket, ReconcileError, Settled, settle};
use crate::services::telemetry::{self, RECONCILIATION_REFUSED};

impl BudgetService {
    /// Settles a handed-over hold with what the provider reported for its
    /// call (usage log source `reconciliation`; a late finalize if the
    /// hold was reaped meanwhile). The reconciliation job calls this.
    ///
    /// # Errors
    /// [`ReconcileError::ModelMismatch`] (counted in
    /// [`RECONCILIATION_REFUSED`], nothing written) when the provider names
    /// another model than the hold's; [`ReconcileError::Finalize`] as
    /// [`BudgetService::finalize`].
    #[tracing::instrument(
        skip_all,
        err,
        fields(community = %ticket.community, user = %ticket.hold.user, key = %ticket.hold.key)
    )]
    pub async fn reconcile(
        &self,
        ticket: &HoldTicket,
        usage: &ProviderUsage,
    ) -> Result<Settled, ReconcileError> {
        if usage.model != ticket.hold.model.as_str() {
            telemetry::count(RECONCILIATION_REFUSED, "reason", "model_mismatch");
            return Err(ReconcileError::ModelMismatch {
                expected: ticket.hold.model.clone(),
                reported: usage.model.clone(),
            });
        }
        let mut pending = settle::pending(ticket, usage.cost, usage.tokens);
        pending.source = CostSource::Reconciliation;
        Ok(self.settle_pending(pending).await?)
    }

    /// Charges a handed-over hold its estimate, for a call the provider
    /// never reported: the stream ran, so it cost money, and what was held
    /// for it is the best figure there is (usage log source
    /// `reconciliation`, no tokens; a late finalize if the hold was reaped
    /// meanwhile, nothing when it was settled already).
    ///
    /// # Errors
    /// As [`BudgetService::finalize`].
    #[tracing::instrument(
        skip_all,
        err,
        fields(community = %ticket.community, user = %ticket.hold.user, key = %ticket.hold.key)
    )]
    pub async fn charge_estimate(&self, ticket: &HoldTicket) -> Result<Settled, FinalizeError> {
        let mut pending = settle::pending(ticket, ticket.hold.estimate, TokenCounts::default());
        pending.source = CostSource::Reconciliation;
        self.settle_pending(pending).await
    }
}
