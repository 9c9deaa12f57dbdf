//! What the budget service answers.

use serde::{Deserialize, Serialize};
use spendgate_domain::{
    CommunityId, FinalizeOutcome, LimitScope, Limits, Micros, Period, UserSpend,
};

use super::guard::HoldGuard;

/// The answer to a reserve that was evaluated against the budget.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReserveDecision {
    /// The estimate is held: make the call, then settle the guard.
    Reserved(HoldGuard),
    /// The estimate does not fit: do not make the call. Nothing is held.
    BudgetExceeded {
        /// Headroom under the limit that refused it.
        remaining: Micros,
        /// That limit.
        limit: Micros,
        /// Whether the community limit or the user's cap refused it.
        scope: LimitScope,
        /// What the call was estimated at.
        estimate: Micros,
    },
    /// The key was already settled (finalized, cancelled or reaped): the
    /// call must not run again.
    AlreadySettled,
}

/// How a finalize or cancel ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Settled {
    /// The store applied it (finalized, late, without a hold, or a replay).
    Committed {
        /// The store's answer.
        outcome: FinalizeOutcome,
    },
    /// The store could not answer: the settlement is kept in the finalize
    /// queue and a worker applies it, exactly once, when the store is back.
    Queued {
        /// The cost that will be committed.
        actual: Micros,
    },
}

/// A community's budget for one period, as a status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// The community.
    pub community: CommunityId,
    /// The period shown.
    pub period: Period,
    /// Its limits; `None` when the store has none.
    pub limits: Option<Limits>,
    /// Actual cost of finished calls.
    pub committed: Micros,
    /// Estimates of calls in flight.
    pub reserved: Micros,
    /// What new reservations may still take: the limit minus committed and
    /// reserved, floored at zero.
    pub remaining: Micros,
    /// How far committed stands past the limit (0 when within): spend the
    /// floor on `remaining` would otherwise hide.
    pub overspend: Micros,
    /// Holds not yet settled.
    pub holds: u64,
    /// Whether the warning fired this period.
    pub warned: bool,
    /// The sums of the user asked for (zeros when it has none); `None`
    /// when none was. Every user's sums are listed page by page
    /// ([`BudgetService::users`](super::BudgetService::users)).
    pub user: Option<UserSpend>,
}
