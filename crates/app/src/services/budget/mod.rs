//! The budget service: estimate, reserve, settle and report, over the
//! ports. What the TypeScript original calls the budget manager.
//!
//! A call is bracketed by [`BudgetService::reserve`], which answers a
//! [`HoldGuard`], and the guard's `finalize` or `cancel`. Refusals come
//! before any budget is held, in this order: a bad request, an invalid tier
//! (checked before any override is read), no configuration or AI disabled,
//! a model the tier may not use, a call that cannot be priced. The store
//! then decides; if it cannot answer, the reserve is denied (law 6).
//! Settling never blocks on a store outage and never loses the cost: see
//! the `settle` module for the write-ahead path through the finalize queue.

mod by_ids;
mod dead_letter;
mod error;
mod fallback_queue;
mod guard;
mod limits;
mod lost_limits;
mod outcome;
mod priced;
mod rebuild;
mod reconcile;
mod request;
mod settle;

use std::sync::Arc;

use spendgate_domain::{
    CommunityId, HoldRef, HoldState, Micros, ModelAlias, Period, PriceTable, Reservation,
    ReserveOutcome, Tier, TokenCounts, Ttl, UserId,
};
use spendgate_ports::{
    BudgetStore, Clock, CommunityConfig, FinalizeQueue, Handover, PageSize, ReconciliationQueue,
    RepoError, StoreError, UsageLog, UsersCursor, UsersPage,
};

pub use error::{
    BudgetChangeError, EstimateError, ExtendError, FinalizeError, HandoverError, RebuildError,
    ReconcileError, ReserveError, StatusError,
};
pub use guard::HoldGuard;
pub use outcome::{BudgetReport, ReserveDecision, Settled};
pub use priced::Preview;
pub use rebuild::RebuildReport;
pub use request::{
    CostBasis, HoldTicket, KnownHold, MAX_TRACE_ID_LEN, ReserveRequest, SettleRequest, Usage,
};
pub use settle::{Backoff, ReplayReport};

use super::community_config::ConfigCache;
use super::telemetry::{self, HANDOVERS, RESERVES, StoreTimer};
use super::tiers::{TierAccess, TierRefusal};

/// Timings of the budget service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Lifetime of a hold unless the request names one.
    pub hold_ttl: Ttl,
    /// How long a settlement written ahead of its store call stays leased
    /// to the caller before the replay worker may take it.
    pub in_flight_lease: Ttl,
    /// How a settlement that failed is retried.
    pub retry: Backoff,
    /// How long after a hand-over reconciliation first asks the provider.
    pub handover_delay: Ttl,
    /// The most settlements kept in process memory while the finalize
    /// queue's database cannot answer; past it a settlement the store
    /// cannot take either is [`FinalizeError::NotKept`].
    pub fallback_queue_capacity: usize,
}

/// The default of [`BudgetSettings::fallback_queue_capacity`].
pub const DEFAULT_FALLBACK_QUEUE_CAPACITY: usize = 100_000;

impl Default for BudgetSettings {
    /// Holds of 5 min, a 30 s in-flight lease, retries from 1 s doubling
    /// to 1 h, reconciliation 30 s after a hand-over, 100,000 settlements
    /// at most in memory during a database outage.
    fn default() -> Self {
        let secs = |s: u32| Ttl::from_secs(s).unwrap_or(Ttl::DAY);
        Self {
            hold_ttl: secs(300),
            in_flight_lease: secs(30),
            retry: Backoff::default(),
            handover_delay: secs(30),
            fallback_queue_capacity: DEFAULT_FALLBACK_QUEUE_CAPACITY,
        }
    }
}

/// The ports and settings the service runs on.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) config: Arc<ConfigCache>,
    pub(crate) tiers: Arc<TierAccess>,
    pub(crate) usage_log: Arc<dyn UsageLog>,
    pub(crate) finalize_queue: Arc<FinalizeQueue>,
    pub(crate) reconciliation: Arc<ReconciliationQueue>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) prices: PriceTable,
    pub(crate) settings: BudgetSettings,
    /// How long the store keeps a settled call's marker (the deployment's
    /// [`spendgate_domain::BudgetPolicy`]).
    pub(crate) marker_ttl: Ttl,
    /// Whether a provider usage source is configured: without one nothing
    /// reconciles a handed-over hold.
    pub(crate) reconciles: bool,
    /// Communities whose reserves found the store without limits, for
    /// config sync to repair.
    pub(crate) lost_limits: lost_limits::LostLimits,
}

/// Estimates, reserves, settles and reports budgets. Cheap to clone: every
/// clone shares the same ports.
#[derive(Clone)]
pub struct BudgetService {
    core: Arc<Core>,
}

impl std::fmt::Debug for BudgetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetService")
            .field("settings", &self.core.settings)
            .finish_non_exhaustive()
    }
}

fn check_trace_id(trace_id: Option<&String>) -> Result<(), String> {
    match trace_id {
        Some(t) if t.len() > MAX_TRACE_ID_LEN => Err(format!(
            "trace id of {} bytes exceeds {MAX_TRACE_ID_LEN}",
            t.len()
        )),
        _ => Ok(()),
    }
}

impl BudgetService {
    /// The service over `core`; the finalize queue gets a memory fallback
    /// for while it cannot answer.
    pub(crate) fn new(mut core: Core) -> Self {
        core.finalize_queue = Arc::new(fallback_queue::FallbackQueue::new(
            core.finalize_queue,
            core.settings.fallback_queue_capacity,
        ));
        Self {
            core: Arc::new(core),
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The settings the service runs with.
    pub fn settings(&self) -> BudgetSettings {
        self.core.settings
    }

    /// The price table with the community's overrides.
    async fn prices_for(&self, community: &CommunityId) -> Result<PriceTable, RepoError> {
        let config = self.core.config.get(community).await?;
        Ok(match config {
            Some(config) => self
                .core
                .prices
                .clone()
                .with_overrides(&config.pricing_overrides),
            None => self.core.prices.clone(),
        })
    }

    /// What a call would be held for: the community's prices, one rounding
    /// per request, the tool-use multiplier when `tool_use`.
    ///
    /// # Errors
    /// [`EstimateError::Pricing`] for an unknown model or an overflowing
    /// estimate; [`EstimateError::ConfigUnavailable`].
    #[tracing::instrument(skip_all, err, fields(community = %community, model = %model))]
    pub async fn estimate(
        &self,
        community: &CommunityId,
        model: &ModelAlias,
        prompt: u64,
        max_completion: u64,
        tool_use: bool,
    ) -> Result<Micros, EstimateError> {
        let prices = self
            .prices_for(community)
            .await
            .map_err(EstimateError::ConfigUnavailable)?;
        let tokens = TokenCounts {
            prompt,
            completion: max_completion,
        };
        prices
            .estimate(model, tokens, tool_use)
            .map_err(EstimateError::Pricing)
    }

    /// Checks the request, estimates it and holds the estimate.
    ///
    /// # Errors
    /// A [`ReserveError`] for every refusal; each means **deny**, and none
    /// holds budget. A store that cannot answer is
    /// [`ReserveError::StoreUnavailable`], never an allow.
    #[tracing::instrument(
        skip_all,
        err,
        fields(community = %request.community, user = %request.user, key = %request.key, model = %request.model)
    )]
    pub async fn reserve(&self, request: ReserveRequest) -> Result<ReserveDecision, ReserveError> {
        let result = self.reserve_checked(request).await;
        telemetry::count(RESERVES, "outcome", reserve_label(&result));
        result
    }

    async fn reserve_checked(
        &self,
        request: ReserveRequest,
    ) -> Result<ReserveDecision, ReserveError> {
        check_trace_id(request.trace_id.as_ref()).map_err(ReserveError::InvalidInput)?;
        Tier::new(request.tier).map_err(ReserveError::InvalidTier)?;
        let community = &request.community;
        let config = self.enabled_config(community).await?;
        self.core
            .tiers
            .check_model(community, request.tier, &request.model)
            .await
            .map_err(|refusal| match refusal {
                TierRefusal::InvalidTier(e) => ReserveError::InvalidTier(e),
                TierRefusal::ModelNotAllowed { model, level } => {
                    ReserveError::ModelNotAllowed { model, level }
                }
            })?;
        let estimate = match request.cost {
            CostBasis::Tokens {
                prompt,
                max_completion,
                tool_use,
            } => self
                .core
                .prices
                .clone()
                .with_overrides(&config.pricing_overrides)
                .estimate(
                    &request.model,
                    TokenCounts {
                        prompt,
                        completion: max_completion,
                    },
                    tool_use,
                )
                .map_err(ReserveError::Pricing)?,
            CostBasis::Estimate { amount } => amount,
        };
        let reservation = Reservation {
            user: request.user,
            key: request.key,
            estimate,
            model: request.model,
            ttl: request.ttl.unwrap_or(self.core.settings.hold_ttl),
        };
        self.hold(community, reservation, request.trace_id).await
    }

    /// The store's half of a reserve, once every gate has passed: holds
    /// `reservation` and answers the guard, or why nothing is held.
    async fn hold(
        &self,
        community: &CommunityId,
        reservation: Reservation,
        trace_id: Option<String>,
    ) -> Result<ReserveDecision, ReserveError> {
        let estimate = reservation.estimate;
        let now = self.core.clock.now();
        let period =
            Period::containing(now).map_err(|e| ReserveError::InvalidInput(e.to_string()))?;
        let outcome = {
            let _timer = StoreTimer::start("reserve");
            self.core.store.reserve(community, &reservation, now).await
        };
        let ticket = |hold| HoldTicket {
            community: community.clone(),
            hold,
            trace_id: trace_id.clone(),
        };
        match outcome {
            Ok(ReserveOutcome::Reserved {
                remaining,
                limit,
                warning,
                expires_at,
            }) => {
                let hold = spendgate_domain::Hold {
                    user: reservation.user,
                    key: reservation.key,
                    estimate,
                    model: reservation.model,
                    period,
                    created_at: now,
                    expires_at,
                };
                let grant = guard::Grant {
                    remaining: Some(remaining),
                    limit: Some(limit),
                    warning,
                    replay: false,
                };
                Ok(ReserveDecision::Reserved(HoldGuard::new(
                    self.clone(),
                    ticket(hold),
                    grant,
                )))
            }
            Ok(ReserveOutcome::AlreadyReserved { hold }) => {
                let grant = guard::Grant {
                    remaining: None,
                    limit: None,
                    warning: false,
                    replay: true,
                };
                Ok(ReserveDecision::Reserved(HoldGuard::new(
                    self.clone(),
                    ticket(hold),
                    grant,
                )))
            }
            Ok(ReserveOutcome::AlreadySettled) => Ok(ReserveDecision::AlreadySettled),
            Ok(ReserveOutcome::BudgetExceeded {
                remaining,
                limit,
                scope,
            }) => Ok(ReserveDecision::BudgetExceeded {
                remaining,
                limit,
                scope,
                estimate,
            }),
            Ok(other) => Err(ReserveError::Store(StoreError::Corrupt(format!(
                "unexpected reserve outcome {other:?}"
            )))),
            Err(StoreError::NotConfigured(c)) => {
                self.core.lost_limits.note(&c);
                Err(ReserveError::NotConfigured(c))
            }
            Err(e @ StoreError::Unavailable(_)) => Err(ReserveError::StoreUnavailable(e)),
            Err(StoreError::InvalidInput(message)) => Err(ReserveError::InvalidInput(message)),
            Err(other) => Err(ReserveError::Store(other)),
        }
    }

    /// Settles a hold with what the call used, for a caller holding the
    /// ticket rather than the guard (the guard's `finalize` calls this): a
    /// [`BudgetService::settle`] that knows the hold.
    ///
    /// # Errors
    /// As [`BudgetService::settle`].
    pub async fn finalize(
        &self,
        ticket: &HoldTicket,
        usage: Usage,
    ) -> Result<Settled, FinalizeError> {
        self.settle(ticket.settlement(usage)).await
    }

    /// Records configuration read elsewhere (config sync) so the hot path
    /// uses it without asking the database, unless the cache already holds
    /// a newer version of it.
    pub(crate) fn remember_config(&self, config: &CommunityConfig) {
        self.core
            .config
            .put(&config.community, Some(config.clone()));
    }

    /// Releases a hold without committing a cost: the call never ran.
    ///
    /// # Errors
    /// As [`BudgetService::settle`].
    pub async fn cancel(&self, ticket: &HoldTicket) -> Result<Settled, FinalizeError> {
        self.finalize(ticket, Usage::cost(Micros::ZERO)).await
    }

    /// Pushes a live hold's expiry to `now + ttl` (never earlier).
    ///
    /// # Errors
    /// [`ExtendError`].
    #[tracing::instrument(skip_all, err, fields(community = %community, user = %hold.user, key = %hold.key))]
    pub async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
    ) -> Result<spendgate_domain::ExtendOutcome, ExtendError> {
        let now = self.core.clock.now();
        let _timer = StoreTimer::start("extend");
        Ok(self.core.store.extend(community, hold, ttl, now).await?)
    }

    /// Hands a hold whose call may have cost money, but whose cost is not
    /// known, to reconciliation: it asks the provider later by the call's
    /// id and finalizes with the real cost; when the provider never
    /// reports the call, it charges the estimate (or, if so configured,
    /// leaves the hold to the reaper).
    ///
    /// # Errors
    /// [`HandoverError::NoUsageSource`] when no provider is configured
    /// (nothing would ever reconcile it); [`HandoverError::Queue`]. Either
    /// way the hold is left as it is.
    #[tracing::instrument(skip_all, err, fields(community = %ticket.community, user = %ticket.hold.user, key = %ticket.hold.key))]
    pub async fn hand_over(&self, ticket: &HoldTicket) -> Result<(), HandoverError> {
        if !self.core.reconciles {
            telemetry::count(HANDOVERS, "outcome", "no_usage_source");
            return Err(HandoverError::NoUsageSource);
        }
        let now = self.core.clock.now();
        let due = now.plus(self.core.settings.handover_delay).unwrap_or(now);
        let handover = Handover {
            community: ticket.community.clone(),
            hold: ticket.hold.clone(),
            trace_id: ticket.trace_id.clone(),
            handed_at: now,
        };
        let result = self
            .core
            .reconciliation
            .enqueue(&handover, due)
            .await
            .map(|_| ())
            .map_err(HandoverError::Queue);
        telemetry::count(
            HANDOVERS,
            "outcome",
            if result.is_ok() { "queued" } else { "failed" },
        );
        result
    }

    /// Whether handed-over holds are reconciled (a provider usage source is
    /// configured).
    pub fn reconciles(&self) -> bool {
        self.core.reconciles
    }

    /// What the store keeps for (user, key) now: the unsettled hold, how it
    /// was settled (until marker retention ends), or nothing. A read: a
    /// caller that settles by ids calls [`BudgetService::settle`], which
    /// does not depend on it.
    ///
    /// # Errors
    /// [`StatusError::Store`].
    #[tracing::instrument(skip_all, err, fields(community = %community, user = %hold.user, key = %hold.key))]
    pub async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
    ) -> Result<HoldState, StatusError> {
        let now = self.core.clock.now();
        let _timer = StoreTimer::start("lookup");
        self.core
            .store
            .lookup(community, hold, now)
            .await
            .map_err(StatusError::Store)
    }

    /// `period`, or the current one when `None`.
    fn period_or_current(&self, period: Option<Period>) -> Result<Period, StatusError> {
        match period {
            Some(p) => Ok(p),
            None => Period::containing(self.core.clock.now())
                .map_err(|e| StatusError::Period(e.to_string())),
        }
    }

    /// The community's budget for `period` (the current one when `None`)
    /// and, when `user` is given, that user's sums: one read of O(1) in
    /// the period's users.
    ///
    /// # Errors
    /// [`StatusError`].
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    pub async fn status(
        &self,
        community: &CommunityId,
        period: Option<Period>,
        user: Option<&UserId>,
    ) -> Result<BudgetReport, StatusError> {
        let period = self.period_or_current(period)?;
        let status = {
            let _timer = StoreTimer::start("status");
            self.core
                .store
                .status_with_user(community, period, user)
                .await
                .map_err(StatusError::Store)?
        };
        let used = status
            .committed
            .checked_add(status.reserved)
            .map_err(|e| StatusError::Store(StoreError::Overflow(e.to_string())))?;
        let (remaining, overspend) = match status.limits {
            Some(limits) => (
                limits.limit.headroom_after(used),
                status
                    .committed
                    .checked_sub(limits.limit)
                    .unwrap_or(Micros::ZERO),
            ),
            None => (Micros::ZERO, Micros::ZERO),
        };
        Ok(BudgetReport {
            community: community.clone(),
            period,
            limits: status.limits,
            committed: status.committed,
            reserved: status.reserved,
            remaining,
            overspend,
            holds: status.holds,
            warned: status.warned,
            user: status.user,
        })
    }

    /// One page of the users of `period` (the current one when `None`)
    /// with their sums, at most `size`, resuming after `cursor`: the
    /// listing costs O(page) a call, whatever the period holds.
    ///
    /// # Errors
    /// [`StatusError`]; a cursor the store did not issue is
    /// [`StoreError::InvalidInput`].
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    pub async fn users(
        &self,
        community: &CommunityId,
        period: Option<Period>,
        cursor: Option<&UsersCursor>,
        size: PageSize,
    ) -> Result<(Period, UsersPage), StatusError> {
        let period = self.period_or_current(period)?;
        let _timer = StoreTimer::start("users");
        let page = self
            .core
            .store
            .users(community, period, cursor, size)
            .await
            .map_err(StatusError::Store)?;
        Ok((period, page))
    }
}

fn reserve_label(result: &Result<ReserveDecision, ReserveError>) -> &'static str {
    match result {
        Ok(ReserveDecision::Reserved(guard)) if guard.is_replay() => "replayed",
        Ok(ReserveDecision::Reserved(_)) => "reserved",
        Ok(ReserveDecision::BudgetExceeded { .. }) => "budget_exceeded",
        Ok(ReserveDecision::AlreadySettled) => "already_settled",
        Err(ReserveError::AiDisabled(_)) => "ai_disabled",
        Err(ReserveError::InvalidTier(_)) => "invalid_tier",
        Err(ReserveError::ModelNotAllowed { .. }) => "model_not_allowed",
        Err(ReserveError::Pricing(_)) => "unpriced",
        Err(ReserveError::NotConfigured(_)) => "not_configured",
        Err(ReserveError::InvalidInput(_)) => "invalid_input",
        Err(ReserveError::ConfigUnavailable(_) | ReserveError::StoreUnavailable(_)) => {
            "unavailable"
        }
        Err(_) => "error",
    }
}
