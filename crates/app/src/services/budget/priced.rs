//! Reserving and committing for callers that price calls themselves and
//! have no tiers: the Cycles protocol (`crate::inbound::cycles`). The same
//! gates as [`BudgetService::reserve`] apply (configured, AI enabled, the
//! store's atomic admission), except the tier's model list, which is a
//! spendgate concept such callers cannot name.

use spendgate_domain::{
    Admission, BudgetPolicy, CommunityId, HoldRef, IdempotencyKey, LimitScope, Micros, ModelAlias,
    Period, Reservation, ReserveOutcome, UserId, admit,
};
use spendgate_ports::{CommunityConfig, StoreError};

use super::{
    BudgetService, FinalizeError, KnownHold, ReserveDecision, ReserveError, SettleRequest, Settled,
    StatusError, Usage, check_trace_id, reserve_label,
};
use crate::services::telemetry::{self, RESERVES};

/// What a reserve would answer now, evaluated without holding anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preview {
    /// The estimate fits under every limit.
    Fits {
        /// The community's headroom after the estimate.
        remaining: Micros,
    },
    /// The estimate does not fit.
    Exceeded {
        /// Headroom under the limit that refuses it.
        remaining: Micros,
        /// That limit.
        limit: Micros,
        /// Whether the community limit or the user's cap refuses it.
        scope: LimitScope,
    },
}

impl BudgetService {
    /// The community's configuration when reserves may run on it.
    pub(super) async fn enabled_config(
        &self,
        community: &CommunityId,
    ) -> Result<CommunityConfig, ReserveError> {
        let config = self
            .core()
            .config
            .get(community)
            .await
            .map_err(ReserveError::ConfigUnavailable)?
            .ok_or_else(|| ReserveError::NotConfigured(community.clone()))?;
        if config.ai_enabled {
            Ok(config)
        } else {
            Err(ReserveError::AiDisabled(community.clone()))
        }
    }

    /// Holds an estimate the caller priced itself, with no tier gate.
    ///
    /// # Errors
    /// As [`BudgetService::reserve`], without the tier and pricing
    /// refusals; every error means **deny**.
    #[tracing::instrument(skip_all, err, fields(community = %community, user = %reservation.user, key = %reservation.key))]
    pub async fn reserve_priced(
        &self,
        community: &CommunityId,
        reservation: Reservation,
        trace_id: Option<String>,
    ) -> Result<ReserveDecision, ReserveError> {
        let result = async {
            check_trace_id(trace_id.as_ref()).map_err(ReserveError::InvalidInput)?;
            self.enabled_config(community).await?;
            self.hold(community, reservation, trace_id).await
        }
        .await;
        telemetry::count(RESERVES, "outcome", reserve_label(&result));
        result
    }

    /// Whether `estimate` would be admitted for `user` now, by the same
    /// rule the store applies ([`admit`]), holding nothing. Another call
    /// may take the headroom before a real reserve: this is advice.
    ///
    /// # Errors
    /// The configuration gates of [`BudgetService::reserve_priced`];
    /// [`ReserveError::StoreUnavailable`] when the counters cannot be read.
    pub async fn preview(
        &self,
        community: &CommunityId,
        user: &UserId,
        estimate: Micros,
    ) -> Result<Preview, ReserveError> {
        self.enabled_config(community).await?;
        let report = self
            .status(community, None, Some(user))
            .await
            .map_err(|e| match e {
                StatusError::Store(e @ StoreError::Unavailable(_)) => {
                    ReserveError::StoreUnavailable(e)
                }
                StatusError::Store(e) => ReserveError::Store(e),
                StatusError::Period(message) => ReserveError::InvalidInput(message),
            })?;
        let limits = report
            .limits
            .ok_or_else(|| ReserveError::NotConfigured(community.clone()))?;
        let spend = report.user.unwrap_or_default();
        let admission = admit(
            limits,
            report.committed,
            report.reserved,
            true,
            spend,
            estimate,
            BudgetPolicy::default(),
        )
        .map_err(|e| ReserveError::Store(StoreError::Overflow(e.to_string())))?;
        Ok(match admission {
            Admission::Accepted { used_after, .. } => Preview::Fits {
                remaining: limits.limit.headroom_after(used_after),
            },
            Admission::Denied(ReserveOutcome::BudgetExceeded {
                remaining,
                limit,
                scope,
            }) => Preview::Exceeded {
                remaining,
                limit,
                scope,
            },
            Admission::Denied(other) => {
                return Err(ReserveError::Store(StoreError::Corrupt(format!(
                    "unexpected admission {other:?}"
                ))));
            }
        })
    }

    /// Commits a cost that had no reservation (money already spent): the
    /// settlement path of [`BudgetService::finalize`] on a hold of 0, which
    /// the store commits without a hold and without a limit check,
    /// idempotently per (community, user, key), to the current period.
    ///
    /// # Errors
    /// As [`BudgetService::settle`].
    pub async fn commit_spent(
        &self,
        community: &CommunityId,
        user: UserId,
        key: IdempotencyKey,
        model: ModelAlias,
        actual: Micros,
    ) -> Result<Settled, FinalizeError> {
        let period = Period::containing(self.core().clock.now())
            .map_err(|e| FinalizeError::InvalidInput(e.to_string()))?;
        // No creation time: an event has no hold, and a replay of it must
        // find the first one's usage row, whenever it comes.
        let known = KnownHold {
            model: Some(model),
            period: Some(period),
            ..KnownHold::default()
        };
        self.settle(
            SettleRequest::new(
                community.clone(),
                HoldRef { user, key },
                Usage::cost(actual),
            )
            .with_known(known),
        )
        .await
    }
}
