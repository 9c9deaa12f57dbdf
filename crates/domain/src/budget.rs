//! The two-counter budget model of one community, as plain functions.
//!
//! This is the oracle: the in-memory store runs it behind a lock, and every
//! other store is checked against it, step by step, by the contract suite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hold::{
    Hold, HoldRef, HoldState, Marker, Reservation, SettledAs, Settlement, UnheldCommit,
};
use crate::id::UserId;
use crate::money::{Micros, MoneyError};
use crate::period::{Period, PeriodError};
use crate::time::{TimeError, Timestamp, Ttl};
use crate::version::ConfigVersion;

/// A community's spend limit per period, and an optional cap per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most that `committed + reserved` may reach through reservations.
    pub limit: Micros,
    /// Most that one user's `committed + reserved` may reach; none by default.
    pub per_user_cap: Option<Micros>,
}

impl Limits {
    /// A community limit without a per-user cap.
    pub const fn new(limit: Micros) -> Self {
        Self {
            limit,
            per_user_cap: None,
        }
    }

    /// The same limits with a per-user cap.
    #[must_use]
    pub const fn with_per_user_cap(mut self, cap: Micros) -> Self {
        self.per_user_cap = Some(cap);
        self
    }
}

/// Knobs every store of a deployment must share with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetPolicy {
    warning_percent: u8,
    marker_ttl: Ttl,
}

impl Default for BudgetPolicy {
    /// Warning at 80 %; markers kept 24 h.
    fn default() -> Self {
        Self {
            warning_percent: 80,
            marker_ttl: Ttl::DAY,
        }
    }
}

/// Why a policy was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The warning threshold lies outside 1–100 %.
    #[error("warning threshold {0}% is outside 1..=100")]
    WarningPercent(u8),
}

impl BudgetPolicy {
    /// A policy with another warning threshold.
    ///
    /// # Errors
    /// [`PolicyError::WarningPercent`] outside 1–100.
    pub fn with_warning_percent(mut self, percent: u8) -> Result<Self, PolicyError> {
        if !(1..=100).contains(&percent) {
            return Err(PolicyError::WarningPercent(percent));
        }
        self.warning_percent = percent;
        Ok(self)
    }

    /// A policy keeping settled markers for `ttl`. It must exceed the
    /// longest hold TTL plus the reconciliation window, or a late finalize
    /// may find no marker and no tombstone.
    #[must_use]
    pub fn with_marker_ttl(mut self, ttl: Ttl) -> Self {
        self.marker_ttl = ttl;
        self
    }

    /// The warning threshold in percent of the limit.
    pub const fn warning_percent(self) -> u8 {
        self.warning_percent
    }

    /// How long settled markers (and reaped tombstones) are kept.
    pub const fn marker_ttl(self) -> Ttl {
        self.marker_ttl
    }

    /// Whether `used` has reached the warning threshold of `limit`.
    pub fn crosses_warning(self, used: Micros, limit: Micros) -> bool {
        i128::from(used.get()) * 100 >= i128::from(self.warning_percent) * i128::from(limit.get())
    }
}

/// One user's sums inside a community and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserSpend {
    /// Actual costs of the user's finished calls.
    pub committed: Micros,
    /// Estimates of the user's live holds.
    pub reserved: Micros,
}

impl UserSpend {
    fn is_zero(self) -> bool {
        self.committed == Micros::ZERO && self.reserved == Micros::ZERO
    }
}

/// The counters of one community and period: its totals (one type for
/// them, [`PeriodSums`], whatever keeps them) and the per-user sums.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeriodCounters {
    /// The period's totals.
    #[serde(flatten)]
    pub totals: PeriodSums,
    /// Per-user sums; users whose sums are both zero are absent.
    pub users: BTreeMap<UserId, UserSpend>,
}

/// Which limit turned a reservation down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// The community's limit.
    Community,
    /// The user's cap inside the community.
    User,
}

/// Result of [`CommunityBudget::reserve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReserveOutcome {
    /// The estimate is held.
    Reserved {
        /// Community headroom left after this hold (0 when over the limit).
        remaining: Micros,
        /// The community limit.
        limit: Micros,
        /// True once per period: this hold brought spend to the warning
        /// threshold.
        warning: bool,
        /// When the hold becomes reapable.
        expires_at: Timestamp,
    },
    /// A replay: the key already holds this reservation; nothing changed.
    AlreadyReserved {
        /// The original hold.
        hold: Hold,
    },
    /// A replay after the call was settled (finalized, cancelled or
    /// reaped); nothing changed and the call must not run again.
    AlreadySettled,
    /// Denied: the estimate does not fit; nothing changed.
    BudgetExceeded {
        /// Headroom under the limit that denied it.
        remaining: Micros,
        /// That limit.
        limit: Micros,
        /// Whether the community limit or the user's cap denied it.
        scope: LimitScope,
    },
}

/// Result of [`CommunityBudget::extend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExtendOutcome {
    /// The hold is live until `expires_at` (never earlier than before).
    Extended {
        /// The hold's expiry now.
        expires_at: Timestamp,
    },
    /// The hold has expired or was settled; nothing changed.
    NotLive,
}

/// What a finalize committed, with enough of the hold to write a complete
/// usage row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The committed cost.
    pub actual: Micros,
    /// The estimate that was held.
    pub estimate: Micros,
    /// How far `committed + reserved` of the hold's period stands past the
    /// limit after this finalize (0 when within).
    pub overshoot: Micros,
    /// The hold's period: the counters that changed.
    pub period: Period,
    /// The model alias of the hold.
    pub model: crate::id::ModelAlias,
    /// When the hold was made.
    pub created_at: Timestamp,
}

impl Receipt {
    /// The receipt of committing `actual` against `hold`.
    pub fn for_hold(hold: &Hold, actual: Micros, overshoot: Micros) -> Self {
        Self {
            actual,
            estimate: hold.estimate,
            overshoot,
            period: hold.period,
            model: hold.model.clone(),
            created_at: hold.created_at,
        }
    }
}

/// Result of [`CommunityBudget::finalize`] and [`CommunityBudget::cancel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinalizeOutcome {
    /// The hold was live: its estimate is released and the cost committed.
    Finalized(Receipt),
    /// The hold had been reaped: the cost is committed, nothing released.
    LateFinalized(Receipt),
    /// A replay: the call was already finalized with `actual`; nothing
    /// changed.
    AlreadyFinalized {
        /// The cost committed the first time.
        actual: Micros,
    },
    /// [`CommunityBudget::commit_unheld`] found no hold, marker or
    /// tombstone: the cost is committed to the given period, nothing is
    /// released (the receipt's estimate is 0), and a marker now answers
    /// replays.
    CommittedWithoutHold(Receipt),
}

/// Result of [`CommunityBudget::reap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reaped {
    /// Holds released.
    pub count: u64,
    /// Sum of their estimates.
    pub reclaimed: Micros,
}

/// Why an operation was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// No limit was ever set for the community: reserve denies.
    #[error("community has no budget configured")]
    NotConfigured,
    /// No hold, marker or tombstone exists for (user, key).
    #[error("no reservation for user {user} and key {key}")]
    UnknownHold {
        /// The user given.
        user: String,
        /// The key given.
        key: String,
    },
    /// A counter would overflow or go negative.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// A timestamp or TTL is out of range.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// The timestamp lies outside the supported periods.
    #[error(transparent)]
    Period(#[from] PeriodError),
}

/// What a reservation does to a period's sums, decided by [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The estimate does not fit; the outcome to return, nothing to write.
    Denied(ReserveOutcome),
    /// The estimate fits: the sums to write.
    Accepted {
        /// The period's `committed + reserved` after the hold.
        used_after: Micros,
        /// The period's `reserved` after the hold.
        reserved: Micros,
        /// The user's sums after the hold.
        user: UserSpend,
        /// Whether this hold fires the period's warning.
        warning: bool,
    },
}

/// The admission rule of `reserve` (law 1), as a pure function of one
/// period's sums: `committed + reserved + estimate <= limit`, then the
/// user's cap, then the once-per-period warning. The model and every store
/// that evaluates the rule outside Redis call this, so the rule lives once.
///
/// # Errors
/// [`MoneyError`] if a stored sum is already out of range (drift).
pub fn admit(
    limits: Limits,
    committed: Micros,
    reserved: Micros,
    warned: bool,
    user: UserSpend,
    estimate: Micros,
    policy: BudgetPolicy,
) -> Result<Admission, MoneyError> {
    let fits = |used: Micros, limit: Micros| {
        i128::from(used.get()) + i128::from(estimate.get()) <= i128::from(limit.get())
    };
    let used = committed.checked_add(reserved)?;
    if !fits(used, limits.limit) {
        return Ok(Admission::Denied(ReserveOutcome::BudgetExceeded {
            remaining: limits.limit.headroom_after(used),
            limit: limits.limit,
            scope: LimitScope::Community,
        }));
    }
    if let Some(cap) = limits.per_user_cap {
        let user_used = user.committed.checked_add(user.reserved)?;
        if !fits(user_used, cap) {
            return Ok(Admission::Denied(ReserveOutcome::BudgetExceeded {
                remaining: cap.headroom_after(user_used),
                limit: cap,
                scope: LimitScope::User,
            }));
        }
    }
    // Both sums stay at or under a limit that fits, so these cannot fail
    // once the checks above passed; they are checked all the same.
    let used_after = used.checked_add(estimate)?;
    Ok(Admission::Accepted {
        used_after,
        reserved: reserved.checked_add(estimate)?,
        user: UserSpend {
            reserved: user.reserved.checked_add(estimate)?,
            ..user
        },
        warning: !warned && policy.crosses_warning(used_after, limits.limit),
    })
}

/// A period's totals, without the per-user sums: what a store keeps in
/// one row (or hash field) per community and period, and what a
/// settlement changes besides the user's sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeriodSums {
    /// Actual cost of finished calls.
    pub committed: Micros,
    /// Sum of the estimates of unreaped holds.
    pub reserved: Micros,
    /// How many holds are not yet settled.
    pub holds: u64,
    /// Whether the warning already fired this period (a settlement leaves
    /// it as it is).
    pub warned: bool,
}

impl PeriodSums {
    /// How far `committed + reserved` stands past `limit` (0 when within).
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when `committed + reserved` leaves the range:
    /// a finalize that would get there is refused whole.
    pub fn overshoot(self, limit: Micros) -> Result<Micros, MoneyError> {
        let used = self.committed.checked_add(self.reserved)?;
        if used > limit {
            used.checked_sub(limit)
        } else {
            Ok(Micros::ZERO)
        }
    }
}

/// The settlement rule (laws 2–4) as a pure function, shared by the model
/// and every store that evaluates it outside Redis: commits `actual` to the
/// hold's period and user and, when the hold is still counted
/// (`releases_hold`: false only for a late finalize of a reaped hold),
/// releases its estimate and one hold. Reaping is a settlement of 0.
///
/// # Errors
/// [`MoneyError`] when a sum would overflow or go negative (drift); the
/// caller writes nothing.
pub fn apply_settlement(
    sums: PeriodSums,
    user: UserSpend,
    hold: &Hold,
    actual: Micros,
    releases_hold: bool,
) -> Result<(PeriodSums, UserSpend), MoneyError> {
    let released = if releases_hold {
        hold.estimate
    } else {
        Micros::ZERO
    };
    let holds = if releases_hold {
        sums.holds
            .checked_sub(1)
            .ok_or_else(|| MoneyError::Negative("hold count".into()))?
    } else {
        sums.holds
    };
    Ok((
        PeriodSums {
            committed: sums.committed.checked_add(actual)?,
            reserved: sums.reserved.checked_sub(released)?,
            holds,
            warned: sums.warned,
        },
        UserSpend {
            committed: user.committed.checked_add(actual)?,
            reserved: user.reserved.checked_sub(released)?,
        },
    ))
}

/// Everything one community's budget holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommunityBudget {
    limits: Option<Limits>,
    limits_version: ConfigVersion,
    periods: BTreeMap<Period, PeriodCounters>,
    holds: BTreeMap<HoldRef, Hold>,
    markers: BTreeMap<HoldRef, Marker>,
}

fn add_user(
    users: &mut BTreeMap<UserId, UserSpend>,
    user: &UserId,
    change: impl FnOnce(UserSpend) -> Result<UserSpend, MoneyError>,
) -> Result<(), MoneyError> {
    let next = change(users.get(user).copied().unwrap_or_default())?;
    if next.is_zero() {
        users.remove(user);
    } else {
        users.insert(user.clone(), next);
    }
    Ok(())
}

impl CommunityBudget {
    /// The configured limits, if any.
    pub fn limits(&self) -> Option<Limits> {
        self.limits
    }

    /// Sets (or replaces) the limits, unless the budget holds limits of a
    /// newer configuration: limits of `version` apply when `version` is at
    /// least that of the limits held (the same version again applies), and
    /// an older one changes nothing, so a writer that read its limits
    /// before a newer write cannot undo it. Returns whether they applied.
    /// Live holds stay; a lowered limit only affects later reservations.
    pub fn set_limits(&mut self, limits: Limits, version: ConfigVersion) -> bool {
        if version < self.limits_version {
            return false;
        }
        self.limits = Some(limits);
        self.limits_version = version;
        true
    }

    /// The counters of a period (zero when nothing happened in it).
    pub fn counters(&self, period: Period) -> PeriodCounters {
        self.periods.get(&period).cloned().unwrap_or_default()
    }

    /// Every unreaped hold.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// The settled marker of (user, key), if it has not expired at `now`.
    pub fn marker(&self, hold: &HoldRef, now: Timestamp) -> Option<&Marker> {
        self.markers.get(hold).filter(|m| now < m.expires_at)
    }

    /// Holds `reservation.estimate` if it fits under the limit and the
    /// user's cap, atomically with the check.
    ///
    /// # Errors
    /// [`BudgetError::NotConfigured`] when no limit is set;
    /// [`BudgetError::Time`] / [`BudgetError::Period`] when `now + ttl`
    /// leaves the supported range. Nothing changes on error.
    pub fn reserve(
        &mut self,
        reservation: &Reservation,
        now: Timestamp,
        policy: BudgetPolicy,
    ) -> Result<ReserveOutcome, BudgetError> {
        let hold_ref = HoldRef {
            user: reservation.user.clone(),
            key: reservation.key.clone(),
        };
        if let Some(hold) = self.holds.get(&hold_ref) {
            return Ok(ReserveOutcome::AlreadyReserved { hold: hold.clone() });
        }
        if self.marker(&hold_ref, now).is_some() {
            return Ok(ReserveOutcome::AlreadySettled);
        }
        let limits = self.limits.ok_or(BudgetError::NotConfigured)?;
        let (period, expires_at) = reservation.timing(now)?;
        let mut counters = self.counters(period);
        let spend = counters
            .users
            .get(&reservation.user)
            .copied()
            .unwrap_or_default();
        let (used_after, reserved, spend, warning) = match admit(
            limits,
            counters.totals.committed,
            counters.totals.reserved,
            counters.totals.warned,
            spend,
            reservation.estimate,
            policy,
        )? {
            Admission::Denied(outcome) => return Ok(outcome),
            Admission::Accepted {
                used_after,
                reserved,
                user,
                warning,
            } => (used_after, reserved, user, warning),
        };
        counters.totals.reserved = reserved;
        counters.totals.holds += 1;
        add_user(&mut counters.users, &reservation.user, |_| Ok(spend))?;
        counters.totals.warned |= warning;
        self.periods.insert(period, counters);
        self.holds.insert(
            hold_ref,
            Hold {
                user: reservation.user.clone(),
                key: reservation.key.clone(),
                estimate: reservation.estimate,
                model: reservation.model.clone(),
                period,
                created_at: now,
                expires_at,
            },
        );
        Ok(ReserveOutcome::Reserved {
            remaining: limits.limit.headroom_after(used_after),
            limit: limits.limit,
            warning,
            expires_at,
        })
    }

    /// Pushes a live hold's expiry out to `now + ttl` (never earlier than it
    /// was). Replays are harmless.
    ///
    /// # Errors
    /// [`BudgetError::UnknownHold`] when neither a hold nor a marker exists;
    /// [`BudgetError::Time`] when `now + ttl` overflows.
    pub fn extend(
        &mut self,
        hold_ref: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, BudgetError> {
        let wanted = now.plus(ttl)?;
        let settled = self.marker(hold_ref, now).is_some();
        match self.holds.get_mut(hold_ref) {
            Some(hold) if hold.is_live_at(now) => {
                hold.expires_at = hold.expires_at.max(wanted);
                Ok(ExtendOutcome::Extended {
                    expires_at: hold.expires_at,
                })
            }
            Some(_) => Ok(ExtendOutcome::NotLive),
            None if settled => Ok(ExtendOutcome::NotLive),
            None => Err(unknown(hold_ref)),
        }
    }

    /// Commits `actual` to the hold's period and releases its estimate; on a
    /// reaped hold, commits only (late finalize); on a finalized one, changes
    /// nothing.
    ///
    /// # Errors
    /// [`BudgetError::UnknownHold`] when neither a hold nor an unexpired
    /// marker exists; [`BudgetError::Money`] when a counter would overflow.
    /// Nothing changes on error.
    pub fn finalize(
        &mut self,
        settlement: &Settlement,
        now: Timestamp,
        policy: BudgetPolicy,
    ) -> Result<FinalizeOutcome, BudgetError> {
        let hold_ref = HoldRef {
            user: settlement.user.clone(),
            key: settlement.key.clone(),
        };
        let marker_expires = now.plus(policy.marker_ttl())?;
        if let Some(hold) = self.holds.get(&hold_ref).cloned() {
            let receipt = self.commit(&hold, settlement.actual, true)?;
            self.holds.remove(&hold_ref);
            self.mark_finalized(hold_ref, settlement.actual, marker_expires);
            return Ok(FinalizeOutcome::Finalized(receipt));
        }
        match self.marker(&hold_ref, now).map(|m| &m.settled) {
            Some(SettledAs::Finalized { actual }) => {
                Ok(FinalizeOutcome::AlreadyFinalized { actual: *actual })
            }
            Some(SettledAs::Reaped { hold }) => {
                let hold = hold.clone();
                let receipt = self.commit(&hold, settlement.actual, false)?;
                self.mark_finalized(hold_ref, settlement.actual, marker_expires);
                Ok(FinalizeOutcome::LateFinalized(receipt))
            }
            None => Err(unknown(&hold_ref)),
        }
    }

    /// A finalize with an actual cost of zero.
    ///
    /// # Errors
    /// As [`CommunityBudget::finalize`].
    pub fn cancel(
        &mut self,
        hold_ref: &HoldRef,
        now: Timestamp,
        policy: BudgetPolicy,
    ) -> Result<FinalizeOutcome, BudgetError> {
        let settlement = Settlement {
            user: hold_ref.user.clone(),
            key: hold_ref.key.clone(),
            actual: Micros::ZERO,
        };
        self.finalize(&settlement, now, policy)
    }

    /// Commits a cost whose hold the store may no longer know. Where a hold,
    /// a marker or a tombstone exists for (user, key) it is exactly
    /// [`CommunityBudget::finalize`] (the hold's own period wins over
    /// `commit.period`); otherwise `actual` is committed to `commit.period`
    /// (no limit check: the money is spent) and a finalized marker is kept,
    /// so a replay is `AlreadyFinalized`. Limits need not be configured.
    ///
    /// # Errors
    /// [`BudgetError::Money`] when a counter would overflow;
    /// [`BudgetError::Time`] when the marker expiry overflows. Nothing
    /// changes on error.
    pub fn commit_unheld(
        &mut self,
        commit: &UnheldCommit,
        now: Timestamp,
        policy: BudgetPolicy,
    ) -> Result<FinalizeOutcome, BudgetError> {
        let hold_ref = HoldRef {
            user: commit.user.clone(),
            key: commit.key.clone(),
        };
        if self.holds.contains_key(&hold_ref) || self.marker(&hold_ref, now).is_some() {
            return self.finalize(&commit.settlement(), now, policy);
        }
        let marker_expires = now.plus(policy.marker_ttl())?;
        let unheld = commit.as_hold(now);
        let receipt = self.commit(&unheld, commit.actual, false)?;
        self.mark_finalized(hold_ref, commit.actual, marker_expires);
        Ok(FinalizeOutcome::CommittedWithoutHold(receipt))
    }

    /// What is kept for (user, key) at `now`: the hold, its unexpired
    /// marker, or nothing.
    pub fn lookup(&self, hold_ref: &HoldRef, now: Timestamp) -> HoldState {
        if let Some(hold) = self.holds.get(hold_ref) {
            return HoldState::Held { hold: hold.clone() };
        }
        match self.marker(hold_ref, now) {
            Some(marker) => HoldState::Settled {
                settled: marker.settled.clone(),
            },
            None => HoldState::Unknown,
        }
    }

    /// Sets `period`'s committed sums to `committed`, user by user (users
    /// absent from it get 0), and the community's to their total, keeping
    /// reserved, holds, the warning flag, limits and markers. For
    /// rebuilding a period from the usage log after a store lost its data.
    ///
    /// # Errors
    /// [`BudgetError::Money`] when the total leaves the micro-USD range;
    /// nothing changes.
    pub fn restore_committed(
        &mut self,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), BudgetError> {
        let mut counters = self.counters(period);
        counters.totals.committed = committed
            .values()
            .try_fold(Micros::ZERO, |sum, c| sum.checked_add(*c))?;
        for spend in counters.users.values_mut() {
            spend.committed = Micros::ZERO;
        }
        for (user, cost) in committed {
            counters.users.entry(user.clone()).or_default().committed = *cost;
        }
        counters.users.retain(|_, spend| !spend.is_zero());
        self.periods.insert(period, counters);
        Ok(())
    }

    /// Releases every hold whose expiry is at or before `now`, leaving a
    /// tombstone for late finalizes, and drops markers expired at `now`.
    ///
    /// # Errors
    /// [`BudgetError::Money`] if a counter is found smaller than the holds
    /// it must cover (drift; nothing changes); [`BudgetError::Time`] when
    /// the tombstone expiry overflows.
    pub fn reap(&mut self, now: Timestamp, policy: BudgetPolicy) -> Result<Reaped, BudgetError> {
        let tombstone_expires = now.plus(policy.marker_ttl())?;
        let expired: Vec<HoldRef> = self
            .holds
            .iter()
            .filter(|(_, h)| !h.is_live_at(now))
            .map(|(r, _)| r.clone())
            .collect();
        // Stage every touched period so that drift leaves the state untouched.
        let mut staged: BTreeMap<Period, PeriodCounters> = BTreeMap::new();
        let mut reaped = Reaped::default();
        for hold in expired.iter().filter_map(|r| self.holds.get(r)) {
            let counters = staged
                .entry(hold.period)
                .or_insert_with(|| self.counters(hold.period));
            release(counters, hold, Micros::ZERO, true)?;
            reaped.count += 1;
            reaped.reclaimed = reaped.reclaimed.checked_add(hold.estimate)?;
        }
        self.periods.extend(staged);
        self.markers.retain(|_, m| now < m.expires_at);
        for hold_ref in expired {
            if let Some(hold) = self.holds.remove(&hold_ref) {
                self.markers.insert(
                    hold_ref,
                    Marker {
                        settled: SettledAs::Reaped { hold },
                        expires_at: tombstone_expires,
                    },
                );
            }
        }
        Ok(reaped)
    }

    /// Checks law 2 on this community: each period's `reserved` (overall
    /// and per user) and hold count equal the sums over its unreaped holds.
    ///
    /// # Errors
    /// A description of the first mismatch.
    pub fn check_conservation(&self) -> Result<(), String> {
        let mut expected: BTreeMap<Period, PeriodCounters> = BTreeMap::new();
        for hold in self.holds.values() {
            let c = expected.entry(hold.period).or_default();
            c.totals.reserved = c
                .totals
                .reserved
                .checked_add(hold.estimate)
                .map_err(|e| e.to_string())?;
            c.totals.holds += 1;
            let u = c.users.entry(hold.user.clone()).or_default();
            u.reserved = u
                .reserved
                .checked_add(hold.estimate)
                .map_err(|e| e.to_string())?;
        }
        for (period, counters) in &self.periods {
            let want = expected.remove(period).unwrap_or_default();
            let (got, want_totals) = (counters.totals, want.totals);
            if got.reserved != want_totals.reserved || got.holds != want_totals.holds {
                return Err(format!(
                    "{period}: reserved {} over {} holds, live holds sum to {} over {}",
                    got.reserved.get(),
                    got.holds,
                    want_totals.reserved.get(),
                    want_totals.holds
                ));
            }
            for (user, spend) in &counters.users {
                let want_user = want.users.get(user).map_or(Micros::ZERO, |u| u.reserved);
                if spend.reserved != want_user {
                    return Err(format!("{period}: user {user} reserved drifted"));
                }
            }
        }
        match expected.into_keys().next() {
            Some(period) => Err(format!("{period}: holds without counters")),
            None => Ok(()),
        }
    }

    /// Commits `actual` to the hold's period (releasing its estimate when
    /// `releases_hold`), checking every sum before writing any.
    fn commit(
        &mut self,
        hold: &Hold,
        actual: Micros,
        releases_hold: bool,
    ) -> Result<Receipt, BudgetError> {
        let mut counters = self.counters(hold.period);
        release(&mut counters, hold, actual, releases_hold)?;
        let limit = self.limits.map_or(Micros::ZERO, |l| l.limit);
        let overshoot = counters.totals.overshoot(limit)?;
        self.periods.insert(hold.period, counters);
        Ok(Receipt::for_hold(hold, actual, overshoot))
    }

    fn mark_finalized(&mut self, hold_ref: HoldRef, actual: Micros, expires_at: Timestamp) {
        self.markers.insert(
            hold_ref,
            Marker {
                settled: SettledAs::Finalized { actual },
                expires_at,
            },
        );
    }
}

/// Applies one settlement to the model's counters through
/// [`apply_settlement`].
fn release(
    counters: &mut PeriodCounters,
    hold: &Hold,
    actual: Micros,
    releases_hold: bool,
) -> Result<(), MoneyError> {
    let user = counters.users.get(&hold.user).copied().unwrap_or_default();
    let (totals, user) = apply_settlement(counters.totals, user, hold, actual, releases_hold)?;
    counters.totals = totals;
    add_user(&mut counters.users, &hold.user, |_| Ok(user))
}

fn unknown(hold_ref: &HoldRef) -> BudgetError {
    BudgetError::UnknownHold {
        user: hold_ref.user.to_string(),
        key: hold_ref.key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{IdempotencyKey, ModelAlias};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn reservation(user: &str, key: &str, estimate: i64) -> Reservation {
        Reservation {
            user: UserId::parse(user).unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            estimate: Micros::new(estimate).unwrap(),
            model: ModelAlias::parse("cheap").unwrap(),
            ttl: Ttl::from_millis(1000).unwrap(),
        }
    }

    #[test]
    fn warning_threshold_outside_one_to_a_hundred_is_rejected() {
        let policy = BudgetPolicy::default();
        assert_eq!(
            policy.with_warning_percent(0),
            Err(PolicyError::WarningPercent(0))
        );
        assert_eq!(
            policy.with_warning_percent(101),
            Err(PolicyError::WarningPercent(101))
        );
        assert_eq!(
            policy.with_warning_percent(50).unwrap().warning_percent(),
            50
        );
    }

    #[test]
    fn warning_threshold_is_inclusive() {
        let policy = BudgetPolicy::default();
        let m = |v| Micros::new(v).unwrap();
        assert!(!policy.crosses_warning(m(799), m(1000)));
        assert!(policy.crosses_warning(m(800), m(1000)));
        assert!(policy.crosses_warning(Micros::MAX, Micros::MAX));
    }

    #[test]
    fn limits_of_an_older_version_change_nothing() {
        let mut budget = CommunityBudget::default();
        let v = |n| ConfigVersion::new(n).unwrap();
        let limit = |n| Limits::new(Micros::new(n).unwrap());
        assert!(budget.set_limits(limit(1_000), v(5)));
        assert!(!budget.set_limits(limit(9_000), v(4)));
        assert_eq!(budget.limits(), Some(limit(1_000)));
        assert!(
            budget.set_limits(limit(2_000), v(5)),
            "the same version applies"
        );
        assert!(budget.set_limits(limit(3_000), v(6)));
        assert_eq!(budget.limits(), Some(limit(3_000)));
    }

    #[test]
    fn conservation_check_reports_drift() {
        let mut budget = CommunityBudget::default();
        budget.set_limits(Limits::new(Micros::new(1000).unwrap()), ConfigVersion::ZERO);
        let policy = BudgetPolicy::default();
        budget
            .reserve(&reservation("u", "k", 10), at(0), policy)
            .unwrap();
        assert_eq!(budget.check_conservation(), Ok(()));
        let period = Period::containing(at(0)).unwrap();
        if let Some(counters) = budget.periods.get_mut(&period) {
            counters.totals.reserved = Micros::new(11).unwrap();
        }
        assert!(budget.check_conservation().is_err());
    }

    #[test]
    fn reap_refuses_drifted_counters_without_changing_anything() {
        let mut budget = CommunityBudget::default();
        budget.set_limits(Limits::new(Micros::new(1000).unwrap()), ConfigVersion::ZERO);
        let policy = BudgetPolicy::default();
        budget
            .reserve(&reservation("u", "k", 10), at(0), policy)
            .unwrap();
        let period = Period::containing(at(0)).unwrap();
        if let Some(counters) = budget.periods.get_mut(&period) {
            counters.totals.reserved = Micros::new(3).unwrap();
        }
        let before = budget.clone();
        assert!(matches!(
            budget.reap(at(5000), policy),
            Err(BudgetError::Money(MoneyError::Negative(_)))
        ));
        assert_eq!(budget, before);
    }
}
