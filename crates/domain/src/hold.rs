//! Holds: the estimates of calls still in flight, and what remains of them
//! once they are settled.

use serde::{Deserialize, Serialize};

use crate::budget::BudgetError;
use crate::id::{IdempotencyKey, ModelAlias, UserId};
use crate::money::Micros;
use crate::period::Period;
use crate::time::{Timestamp, Ttl};

/// The idempotency scope of a hold inside its community: (user, key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HoldRef {
    /// Who made the call.
    pub user: UserId,
    /// The caller's idempotency key for the call.
    pub key: IdempotencyKey,
}

/// A live reservation: an estimate counted in `reserved` until it is
/// finalized, cancelled or reaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Who made the call.
    pub user: UserId,
    /// The call's idempotency key.
    pub key: IdempotencyKey,
    /// What was reserved.
    pub estimate: Micros,
    /// The model alias the estimate was priced for.
    pub model: ModelAlias,
    /// The period whose counters this hold belongs to, whatever the clock
    /// says when it is settled (law 4).
    pub period: Period,
    /// When the hold was made.
    pub created_at: Timestamp,
    /// From this instant on the reaper may release the hold.
    pub expires_at: Timestamp,
}

impl Hold {
    /// The hold's (user, key).
    pub fn hold_ref(&self) -> HoldRef {
        HoldRef {
            user: self.user.clone(),
            key: self.key.clone(),
        }
    }

    /// A hold is live strictly before its expiry millisecond.
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// A request to reserve an estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Who makes the call.
    pub user: UserId,
    /// The call's idempotency key.
    pub key: IdempotencyKey,
    /// The amount to hold.
    pub estimate: Micros,
    /// The model alias the estimate was priced for.
    pub model: ModelAlias,
    /// How long the hold lives unless extended or settled.
    pub ttl: Ttl,
}

impl Reservation {
    /// The period a hold made at `now` belongs to, and when it expires.
    /// A store may work these out before its atomic step, but refuses on
    /// their error only after the replay and configuration answers, as
    /// [`CommunityBudget::reserve`](crate::CommunityBudget::reserve) does.
    ///
    /// # Errors
    /// [`BudgetError`] when `now` has no period or `now + ttl` passes
    /// [`Timestamp::MAX`].
    pub fn timing(&self, now: Timestamp) -> Result<(Period, Timestamp), BudgetError> {
        Ok((Period::containing(now)?, now.plus(self.ttl)?))
    }
}

/// A request to finalize a call with its actual cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Who made the call.
    pub user: UserId,
    /// The call's idempotency key.
    pub key: IdempotencyKey,
    /// What the call really cost.
    pub actual: Micros,
}

/// A cost to commit for a call the store holds nothing about: its hold and
/// marker are gone (a Redis restart without persistence, or a finalize
/// replayed after marker retention), but the money was spent and must count
/// (law 5) in the period the reservation was made in (law 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnheldCommit {
    /// Who made the call.
    pub user: UserId,
    /// The call's idempotency key.
    pub key: IdempotencyKey,
    /// What the call really cost.
    pub actual: Micros,
    /// The period the reservation was made in.
    pub period: Period,
    /// The model alias the call ran on.
    pub model: ModelAlias,
}

impl UnheldCommit {
    /// The (user, key, actual) of this commit, as a finalize would send it.
    pub fn settlement(&self) -> Settlement {
        Settlement {
            user: self.user.clone(),
            key: self.key.clone(),
            actual: self.actual,
        }
    }

    /// The hold this commit stands for: nothing held (estimate 0) in
    /// `period`, made and expired at `now`. Committing against it with
    /// `releases_hold = false` is the whole effect of a commit without a
    /// hold.
    pub fn as_hold(&self, now: Timestamp) -> Hold {
        Hold {
            user: self.user.clone(),
            key: self.key.clone(),
            estimate: Micros::ZERO,
            model: self.model.clone(),
            period: self.period,
            created_at: now,
            expires_at: now,
        }
    }
}

/// How a settled call ended, kept as a marker so replays stay idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettledAs {
    /// Finalized (or cancelled) with this actual cost.
    Finalized {
        /// The committed cost.
        actual: Micros,
    },
    /// Released by the reaper; a late finalize may still commit its cost.
    Reaped {
        /// The hold as it was when reaped.
        hold: Hold,
    },
}

/// What a store knows of one (user, key) at an instant: what a caller
/// holding only the call's ids (an HTTP client, a recovering process) needs
/// to settle it or to answer "what happened to this call?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoldState {
    /// An unsettled hold (possibly past its expiry, not yet reaped).
    Held {
        /// The hold as the store keeps it.
        hold: Hold,
    },
    /// Settled; the marker says how.
    Settled {
        /// How the call ended.
        settled: SettledAs,
    },
    /// Nothing kept: never reserved, or settled longer ago than markers
    /// are kept.
    Unknown,
}

impl HoldState {
    /// The hold a cost can still be committed against: an unsettled one,
    /// or a reaped one (its finalize is a late finalize that commits).
    ///
    /// # Errors
    /// `self` back when the call was finalized or is unknown.
    pub fn into_payable(self) -> Result<Hold, HoldState> {
        match self {
            HoldState::Held { hold }
            | HoldState::Settled {
                settled: SettledAs::Reaped { hold },
            } => Ok(hold),
            other => Err(other),
        }
    }
}

/// A settled call's marker, kept until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// How the call was settled.
    pub settled: SettledAs,
    /// The marker counts as absent from this instant on.
    pub expires_at: Timestamp,
}
