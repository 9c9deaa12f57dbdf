//! Settling and handing over a call named by its ids alone: the one path
//! every inbound adapter (native HTTP, Cycles, the command line) and the
//! guard take, so the failure stance holds at each of them.
//!
//! A settlement is never made to depend on reading the hold first. The
//! store is asked to settle (user, key) directly, through the write-ahead
//! path of `settle`: the store answers and that is the outcome; the store
//! cannot answer and the settlement is kept in the finalize queue
//! ([`Settled::Queued`]); the store no longer knows the hold and the cost is
//! committed without a hold, once, to the period the caller says the hold
//! was made in (else the current one). The hold is read only to cost token
//! usage when the caller did not name the model.

use spendgate_domain::{
    CommunityId, FinalizeOutcome, HoldRef, HoldState, Micros, ModelAlias, Period, SettledAs,
    Settlement, TokenCounts,
};
use spendgate_ports::{CostSource, PendingSettlement, StoreError};

use super::{
    BudgetService, FinalizeError, HandoverError, HoldTicket, KnownHold, SettleRequest, Settled,
    Usage, check_trace_id,
};
use crate::services::telemetry::{self, DEGRADED, FINALIZES, StoreTimer};

/// What a settlement's usage comes to.
enum Costed {
    /// The cost to commit, the tokens to log, and the hold facts completed
    /// by any read the costing needed.
    Cost {
        actual: Micros,
        tokens: TokenCounts,
        known: KnownHold,
    },
    /// Token usage of a call already finalized: its model is gone with its
    /// hold, so the first cost is the answer (a replay).
    AlreadyFinalized { actual: Micros },
}

impl BudgetService {
    /// Settles the call (community, user, key) with what it used: finalize,
    /// or cancel with a cost of 0. Exactly once, whatever the store's state:
    ///
    /// * the store answers: its outcome ([`Settled::Committed`]: finalized,
    ///   late finalized after a reap, or a replay of the same settlement);
    /// * the store cannot answer: the settlement is written ahead durably
    ///   and applied by the finalize replay when it can
    ///   ([`Settled::Queued`]);
    /// * the store lost the hold: the cost is committed without a hold to
    ///   the period of [`KnownHold::period`] (else the current one), unless
    ///   the usage log shows it was committed before.
    ///
    /// # Errors
    /// * [`FinalizeError::SettledOtherwise`]: the call was already settled
    ///   with another cost; nothing changed.
    /// * [`FinalizeError::UnknownHold`]: a cost of 0 for a call the store
    ///   does not know; nothing to release, nothing written.
    /// * [`FinalizeError::ModelUnknown`], [`FinalizeError::ModelUnavailable`],
    ///   [`FinalizeError::Pricing`]: token usage that cannot be costed;
    ///   nothing written.
    /// * [`FinalizeError::InvalidInput`], [`FinalizeError::Store`] (refused
    ///   by the store), [`FinalizeError::NotKept`] (neither the store nor
    ///   the finalize queue took it: retry).
    #[tracing::instrument(
        skip_all,
        err,
        fields(community = %request.community, user = %request.hold.user, key = %request.hold.key)
    )]
    pub async fn settle(&self, request: SettleRequest) -> Result<Settled, FinalizeError> {
        check_trace_id(request.trace_id.as_ref()).map_err(FinalizeError::InvalidInput)?;
        let (actual, tokens, known) = match self.cost(&request).await? {
            Costed::Cost {
                actual,
                tokens,
                known,
            } => (actual, tokens, known),
            Costed::AlreadyFinalized { actual } => {
                telemetry::count(FINALIZES, "outcome", "already_finalized");
                return Ok(Settled::Committed {
                    outcome: FinalizeOutcome::AlreadyFinalized { actual },
                });
            }
        };
        let period = match known.period {
            Some(period) => period,
            None => Period::containing(self.core().clock.now())
                .map_err(|e| FinalizeError::InvalidInput(e.to_string()))?,
        };
        let pending = PendingSettlement {
            community: request.community,
            settlement: Settlement {
                user: request.hold.user,
                key: request.hold.key,
                actual,
            },
            period,
            model: known.model.unwrap_or_else(ModelAlias::unknown),
            estimate: known.estimate.unwrap_or(Micros::ZERO),
            tokens,
            trace_id: request.trace_id,
            source: CostSource::Finalize,
            hold_created_at: known.created_at,
        };
        let settled = self.settle_pending(pending).await?;
        if let Settled::Committed {
            outcome: FinalizeOutcome::AlreadyFinalized { actual: first },
        } = settled
            && first != actual
        {
            return Err(FinalizeError::SettledOtherwise {
                first,
                asked: actual,
            });
        }
        Ok(settled)
    }

    /// The cost of `request`'s usage. Token usage is costed with the
    /// community's prices for the call's model: the caller's word on it,
    /// else the hold's, read from the store.
    async fn cost(&self, request: &SettleRequest) -> Result<Costed, FinalizeError> {
        let mut known = request.known.clone();
        let (actual, tokens) = match request.usage {
            Usage::Cost { actual, tokens } => (actual, tokens.unwrap_or_default()),
            Usage::Tokens { tokens } => {
                let model = match known.model.clone() {
                    Some(model) => model,
                    None => match self.read_hold(&request.community, &request.hold).await? {
                        HoldState::Held { hold }
                        | HoldState::Settled {
                            settled: SettledAs::Reaped { hold },
                        } => {
                            let model = hold.model.clone();
                            known = KnownHold::from(&hold);
                            model
                        }
                        HoldState::Settled {
                            settled: SettledAs::Finalized { actual },
                        } => return Ok(Costed::AlreadyFinalized { actual }),
                        HoldState::Unknown => return Err(FinalizeError::ModelUnknown),
                    },
                };
                let prices = match self.prices_for(&request.community).await {
                    Ok(prices) => prices,
                    Err(error) => {
                        tracing::warn!(%error, "community pricing unavailable; costing with the default table");
                        telemetry::count(DEGRADED, "what", "pricing_defaults");
                        self.core().prices.clone()
                    }
                };
                let actual = prices
                    .estimate(&model, tokens, false)
                    .map_err(FinalizeError::Pricing)?;
                known.model = Some(model);
                (actual, tokens)
            }
        };
        Ok(Costed::Cost {
            actual,
            tokens,
            known,
        })
    }

    /// The store's record of a call, read to cost its tokens.
    async fn read_hold(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
    ) -> Result<HoldState, FinalizeError> {
        let core = self.core();
        let _timer = StoreTimer::start("lookup");
        core.store
            .lookup(community, hold, core.clock.now())
            .await
            .map_err(FinalizeError::ModelUnavailable)
    }

    /// Hands the call (community, user, key) to reconciliation, which asks
    /// the provider what it cost and finalizes with that. The hold is read
    /// first: reconciliation needs its estimate, model and period.
    ///
    /// # Errors
    /// [`HandoverError::NoUsageSource`] (checked before anything is read),
    /// [`HandoverError::UnknownHold`], [`HandoverError::AlreadySettled`],
    /// [`HandoverError::StoreUnavailable`] (nothing queued: retry),
    /// [`HandoverError::Store`], [`HandoverError::Queue`].
    #[tracing::instrument(skip_all, err, fields(community = %community, user = %hold.user, key = %hold.key))]
    pub async fn hand_over_by_ids(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        trace_id: Option<String>,
    ) -> Result<(), HandoverError> {
        if !self.reconciles() {
            telemetry::count(telemetry::HANDOVERS, "outcome", "no_usage_source");
            return Err(HandoverError::NoUsageSource);
        }
        let core = self.core();
        let state = {
            let _timer = StoreTimer::start("lookup");
            core.store.lookup(community, hold, core.clock.now()).await
        };
        let state = match state {
            Ok(state) => state,
            Err(error @ StoreError::Unavailable(_)) => {
                return Err(HandoverError::StoreUnavailable(error));
            }
            Err(error) => return Err(HandoverError::Store(error)),
        };
        match state.into_payable() {
            Ok(held) => {
                self.hand_over(&HoldTicket {
                    community: community.clone(),
                    hold: held,
                    trace_id,
                })
                .await
            }
            Err(HoldState::Settled {
                settled: SettledAs::Finalized { actual },
            }) => Err(HandoverError::AlreadySettled { actual }),
            Err(_) => Err(HandoverError::UnknownHold {
                user: hold.user.to_string(),
                key: hold.key.to_string(),
            }),
        }
    }
}
