//! The settlement path: exactly once in the store, exactly once in the
//! usage log, nothing lost on a crash or an outage (laws 3 and 5).
//!
//! 1. The settlement is written to the finalize queue first, leased to
//!    this caller for the in-flight lease (write-ahead). The queue holds
//!    one entry per call: a caller that finds one there (a retry racing
//!    the first attempt, or a settlement already queued) still asks the
//!    store, which is idempotent, but leaves steps 3 and 4 to the entry's
//!    owner or the replay, so each settlement's usage row has one writer.
//!    A key used again after the store forgot it is another call, with
//!    an entry of its own beside any entry of its earlier use.
//! 2. A settlement made the marker retention or longer after its hold
//!    first checks that the store's record of the key is its own use
//!    (the key may have been forgotten and held again since); then the
//!    store finalizes it. If the store knows nothing of the key (its
//!    data was lost, or the marker expired), the usage log is asked whether
//!    the cost was already logged; if not, the store commits it without a
//!    hold, to the period the reservation was made in (or, when nobody
//!    knows that any more, the period the settlement was asked in). A
//!    release (a cost of 0) of an unknown hold writes nothing.
//! 3. The usage row is appended, idempotent per (community, user, key,
//!    hold_created_at): each use of a key is logged once, and a key used
//!    again after the store forgot it is logged again. A replay the store
//!    answers `AlreadyFinalized` first looks for the row of that settlement
//!    (logged within the marker's retention), so a row is never written
//!    twice under two creation times.
//! 4. The queue entry is completed.
//!
//! When the queue's database cannot answer, the entry is kept in process
//! memory instead (see `fallback_queue`), so a database outage loses
//! nothing; a crash during one can.
//!
//! A crash anywhere leaves the entry in the queue; after its lease the
//! replay ([`super::BudgetService::replay_settlements`]) runs steps 2–4
//! again, and every step is idempotent, so the store commits once and the
//! log holds one row. A store outage at step 2 leaves the entry due after a
//! backoff and the caller gets [`Settled::Queued`].

use spendgate_domain::{
    FinalizeOutcome, HoldRef, HoldState, Micros, SettledAs, Timestamp, TokenCounts, Ttl,
    UnheldCommit,
};
use spendgate_ports::{CostSource, PendingSettlement, RepoError, StoreError, UsageRecord};

use super::{BudgetService, FinalizeError, HoldTicket, Settled};
use crate::services::telemetry::{self, DEGRADED, FINALIZES, QUEUED_SETTLEMENTS, StoreTimer};

/// Exponential backoff: the n-th failure (1-based) waits `base × 2^(n-1)`,
/// at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base_ms: i64,
    max_ms: i64,
}

impl Default for Backoff {
    /// One second, doubling, at most one hour.
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 3_600_000,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base`, never longer than `max`.
    pub fn new(base: Ttl, max: Ttl) -> Self {
        Self {
            base_ms: base.as_millis(),
            max_ms: max.as_millis().max(base.as_millis()),
        }
    }

    /// The wait after the `failures`-th failure, in milliseconds.
    pub fn delay_ms(self, failures: u32) -> i64 {
        let exponent = failures.saturating_sub(1).min(62);
        self.base_ms
            .saturating_mul(1_i64 << exponent)
            .min(self.max_ms)
    }

    /// When to try again after the `failures`-th failure at `now`.
    pub fn due_after(self, failures: u32, now: Timestamp) -> Timestamp {
        now.plus_millis(self.delay_ms(failures))
            .unwrap_or(Timestamp::MAX)
    }

    /// The longest wait.
    pub fn max_due(self, now: Timestamp) -> Timestamp {
        now.plus_millis(self.max_ms).unwrap_or(Timestamp::MAX)
    }
}

/// What one replay pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Entries claimed.
    pub claimed: u64,
    /// Entries applied to the store and the log, and removed.
    pub completed: u64,
    /// Entries left for a later pass (store or log unavailable).
    pub retried: u64,
    /// Entries the store refused: parked as dead letters when retrying
    /// cannot help (counter out of range, invalid input, corrupt data),
    /// else left queued at the longest backoff.
    pub refused: u64,
}

/// One attempt at steps 2–3.
enum Attempt {
    /// A release of a hold the store does not know: nothing to do.
    Nothing,
    /// The store has the settlement; `logged` says whether the usage row is
    /// there too.
    Committed {
        outcome: FinalizeOutcome,
        logged: bool,
    },
    /// Something could not answer; try again later.
    Unavailable(String),
    /// The store refused; retrying will not help.
    Refused(StoreError),
    /// The store does not know the call (or knows only another use of its
    /// key, or a marker of no known use), so long after the hold was made
    /// that the marker of an earlier attempt may have expired: an attempt
    /// whose reply was lost may have committed it, and nothing left can
    /// tell. Committing again could count it twice.
    Ambiguous,
}

/// The queue entry for settling `ticket` with `actual`.
pub(super) fn pending(
    ticket: &HoldTicket,
    actual: Micros,
    tokens: TokenCounts,
) -> PendingSettlement {
    PendingSettlement {
        community: ticket.community.clone(),
        settlement: spendgate_domain::Settlement {
            user: ticket.hold.user.clone(),
            key: ticket.hold.key.clone(),
            actual,
        },
        period: ticket.hold.period,
        model: ticket.hold.model.clone(),
        estimate: ticket.hold.estimate,
        tokens,
        trace_id: ticket.trace_id.clone(),
        source: CostSource::Finalize,
        hold_created_at: Some(ticket.hold.created_at),
    }
}

pub(super) fn hold_ref(pending: &PendingSettlement) -> HoldRef {
    HoldRef {
        user: pending.settlement.user.clone(),
        key: pending.settlement.key.clone(),
    }
}

fn finalize_label(outcome: &FinalizeOutcome) -> &'static str {
    match outcome {
        FinalizeOutcome::Finalized(_) => "finalized",
        FinalizeOutcome::LateFinalized(_) => "late_finalized",
        FinalizeOutcome::CommittedWithoutHold(_) => "committed_without_hold",
        FinalizeOutcome::AlreadyFinalized { .. } => "already_finalized",
        _ => "other",
    }
}

impl BudgetService {
    /// Steps 1–4 for a new settlement.
    pub(super) async fn settle_pending(
        &self,
        pending: PendingSettlement,
    ) -> Result<Settled, FinalizeError> {
        let core = self.core();
        let now = core.clock.now();
        let lease_end = now.plus(core.settings.in_flight_lease).unwrap_or(now);
        let journal = core.finalize_queue.enqueue(&pending, lease_end).await;
        if let Err(error) = &journal {
            tracing::warn!(%error, "finalize queue unavailable; settling without write-ahead");
            telemetry::count(DEGRADED, "what", "finalize_queue");
        }
        // One queue entry per call: a caller that finds one already there
        // (a retry while the first attempt is still in flight or queued)
        // leaves its care to that entry's owner, usage row included, so a
        // row is only ever written by one writer per settlement.
        let journaled = matches!(journal, Ok(true));
        let owner = !matches!(journal, Ok(false));
        match self.attempt(&pending, now, owner).await {
            Attempt::Nothing => {
                if journaled {
                    self.after_commit(&pending, true, 0, now).await;
                }
                telemetry::count(FINALIZES, "outcome", "unknown_hold");
                Err(FinalizeError::UnknownHold {
                    user: pending.settlement.user.to_string(),
                    key: pending.settlement.key.to_string(),
                })
            }
            Attempt::Committed { outcome, logged } => {
                if journaled {
                    self.after_commit(&pending, logged, 0, now).await;
                }
                telemetry::count(FINALIZES, "outcome", finalize_label(&outcome));
                Ok(Settled::Committed { outcome })
            }
            Attempt::Unavailable(reason) => match journal {
                Ok(_) => {
                    if journaled {
                        self.retry(&pending, &reason, core.settings.retry.due_after(1, now))
                            .await;
                    }
                    telemetry::count(QUEUED_SETTLEMENTS, "reason", "store_unavailable");
                    telemetry::count(FINALIZES, "outcome", "queued");
                    Ok(Settled::Queued {
                        actual: pending.settlement.actual,
                    })
                }
                Err(queue_error) => {
                    telemetry::count(FINALIZES, "outcome", "not_kept");
                    tracing::error!(%reason, "store and finalize queue both unavailable; settlement not kept");
                    Err(FinalizeError::NotKept(queue_error))
                }
            },
            Attempt::Refused(error) => {
                telemetry::count(FINALIZES, "outcome", "refused");
                Err(self.refused(&pending, error, journaled, now).await)
            }
            Attempt::Ambiguous => {
                telemetry::count(FINALIZES, "outcome", "ambiguous");
                if journaled {
                    self.ambiguous(&pending, now).await;
                }
                Err(FinalizeError::Store(StoreError::UnknownHold {
                    user: pending.settlement.user.to_string(),
                    key: pending.settlement.key.to_string(),
                }))
            }
        }
    }

    /// Applies every settlement of the finalize queue that is due at the
    /// clock's `now` (at most `limit`): the finalize replay job's one pass.
    ///
    /// # Errors
    /// [`RepoError`] when the queue cannot be read; entries that fail are
    /// counted in the report and retried after a backoff, not errors.
    #[tracing::instrument(skip_all, err, fields(limit))]
    pub async fn replay_settlements(&self, limit: u32) -> Result<ReplayReport, RepoError> {
        let core = self.core();
        let now = core.clock.now();
        let claimed = core
            .finalize_queue
            .claim_due(now, limit, core.settings.in_flight_lease)
            .await?;
        let mut report = ReplayReport {
            claimed: u64::try_from(claimed.len()).unwrap_or(u64::MAX),
            ..ReplayReport::default()
        };
        for entry in claimed {
            let failures = entry.attempts.saturating_add(1);
            match self.attempt(&entry.item, now, true).await {
                Attempt::Nothing => {
                    telemetry::count(FINALIZES, "outcome", "unknown_hold");
                    if self
                        .after_commit(&entry.item, true, entry.attempts, now)
                        .await
                    {
                        report.completed += 1;
                    } else {
                        report.retried += 1;
                    }
                }
                Attempt::Committed { outcome, logged } => {
                    telemetry::count(FINALIZES, "outcome", finalize_label(&outcome));
                    if self
                        .after_commit(&entry.item, logged, entry.attempts, now)
                        .await
                    {
                        report.completed += 1;
                    } else {
                        report.retried += 1;
                    }
                }
                Attempt::Unavailable(reason) => {
                    self.retry(
                        &entry.item,
                        &reason,
                        core.settings.retry.due_after(failures, now),
                    )
                    .await;
                    report.retried += 1;
                }
                Attempt::Refused(error) => {
                    self.refused(&entry.item, error, true, now).await;
                    report.refused += 1;
                }
                Attempt::Ambiguous => {
                    self.ambiguous(&entry.item, now).await;
                    report.refused += 1;
                }
            }
        }
        Ok(report)
    }

    /// Step 4, or a retry when the usage row is still missing. Returns
    /// whether the entry is done.
    async fn after_commit(
        &self,
        pending: &PendingSettlement,
        logged: bool,
        attempts: u32,
        now: Timestamp,
    ) -> bool {
        let core = self.core();
        if !logged {
            telemetry::count(QUEUED_SETTLEMENTS, "reason", "usage_log_unavailable");
            let due = core
                .settings
                .retry
                .due_after(attempts.saturating_add(1), now);
            self.retry(pending, "usage log unavailable", due).await;
            return false;
        }
        match core
            .finalize_queue
            .complete(
                &pending.community,
                &hold_ref(pending),
                pending.hold_created_at,
            )
            .await
        {
            Ok(_) => true,
            Err(error) => {
                // The replay finds the entry after its lease and completes
                // it; every step it repeats is idempotent.
                tracing::warn!(%error, "finalize queue entry not completed; the replay will");
                telemetry::count(DEGRADED, "what", "finalize_queue_complete");
                false
            }
        }
    }

    pub(super) async fn retry(&self, pending: &PendingSettlement, reason: &str, due: Timestamp) {
        let core = self.core();
        if let Err(error) = core
            .finalize_queue
            .retry_at(
                &pending.community,
                &hold_ref(pending),
                pending.hold_created_at,
                reason,
                due,
            )
            .await
        {
            // The entry keeps its lease and becomes due when it ends.
            tracing::warn!(%error, "finalize queue entry not rescheduled; it is due after its lease");
        }
    }

    /// Steps 2–3 once; step 3 only when `log` (the caller owns the
    /// settlement's queue entry, or there is none).
    async fn attempt(&self, pending: &PendingSettlement, now: Timestamp, log: bool) -> Attempt {
        let core = self.core();
        let community = &pending.community;
        if let Some(answer) = self.check_use(pending, now).await {
            return answer;
        }
        let finalized = {
            let _timer = StoreTimer::start("finalize");
            core.store
                .finalize(community, &pending.settlement, now)
                .await
        };
        let outcome = match finalized {
            Ok(outcome) => outcome,
            Err(StoreError::UnknownHold { .. }) if pending.settlement.actual == Micros::ZERO => {
                return Attempt::Nothing;
            }
            Err(StoreError::UnknownHold { .. }) => {
                // Without the hold's creation time every use of the key is
                // asked about: counting a cost twice is worse than the one
                // case this misses (a key used again, then lost by the
                // store, settled by a caller who forgot when it reserved).
                match self.logged(pending, Timestamp::EPOCH).await {
                    Ok(Some(record)) => {
                        // Committed and logged before the store lost its
                        // marker: committing again would count it twice.
                        return Attempt::Committed {
                            outcome: FinalizeOutcome::AlreadyFinalized {
                                actual: record.cost,
                            },
                            logged: true,
                        };
                    }
                    Ok(None) => {}
                    Err(error) => {
                        return Attempt::Unavailable(format!(
                            "usage log unavailable while checking an unknown hold: {error}"
                        ));
                    }
                }
                // A caller that found the call's entry already queued
                // leaves the decision to that entry's owner.
                if !log {
                    return Attempt::Unavailable(
                        "an earlier settlement of this call is queued".into(),
                    );
                }
                // An earlier attempt (this one's, or another caller's) may
                // have committed it with its reply lost and written no
                // usage row; once its marker may have expired (the marker
                // retention after the hold was made, the earliest any
                // attempt ran), the store's "unknown" no longer says it
                // did not.
                if pending.hold_created_at.is_some_and(|created| {
                    now.as_millis()
                        >= created
                            .as_millis()
                            .saturating_add(core.marker_ttl.as_millis())
                }) {
                    return Attempt::Ambiguous;
                }
                let commit = UnheldCommit {
                    user: pending.settlement.user.clone(),
                    key: pending.settlement.key.clone(),
                    actual: pending.settlement.actual,
                    period: pending.period,
                    model: pending.model.clone(),
                };
                let _timer = StoreTimer::start("commit_unheld");
                match core.store.commit_unheld(community, &commit, now).await {
                    Ok(outcome) => outcome,
                    Err(StoreError::Unavailable(reason)) => return Attempt::Unavailable(reason),
                    Err(error) => return Attempt::Refused(error),
                }
            }
            Err(StoreError::Unavailable(reason)) => return Attempt::Unavailable(reason),
            Err(error) => return Attempt::Refused(error),
        };
        let logged = log && self.log(pending, &outcome, now).await;
        Attempt::Committed { outcome, logged }
    }

    /// Step 3: the usage row of a committed settlement.
    async fn log(
        &self,
        pending: &PendingSettlement,
        outcome: &FinalizeOutcome,
        now: Timestamp,
    ) -> bool {
        let source = |store_source: CostSource| match pending.source {
            CostSource::Reconciliation => CostSource::Reconciliation,
            _ => store_source,
        };
        let known_use = pending.hold_created_at;
        let (cost, estimate, period, model, source, hold_created_at) = match outcome {
            FinalizeOutcome::Finalized(r) => (
                r.actual,
                r.estimate,
                r.period,
                r.model.clone(),
                source(CostSource::Finalize),
                r.created_at,
            ),
            FinalizeOutcome::LateFinalized(r) => (
                r.actual,
                r.estimate,
                r.period,
                r.model.clone(),
                source(CostSource::LateFinalize),
                r.created_at,
            ),
            FinalizeOutcome::CommittedWithoutHold(r) => (
                r.actual,
                pending.estimate,
                r.period,
                r.model.clone(),
                source(CostSource::LateFinalize),
                known_use.unwrap_or(r.created_at),
            ),
            FinalizeOutcome::AlreadyFinalized { actual } => {
                match self.logged_since_marker(pending, now).await {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "usage log unavailable; the replay writes the row");
                        telemetry::count(DEGRADED, "what", "usage_log");
                        return false;
                    }
                }
                (
                    *actual,
                    pending.estimate,
                    pending.period,
                    pending.model.clone(),
                    pending.source,
                    known_use.unwrap_or(now),
                )
            }
            other => {
                tracing::error!(?other, "unexpected finalize outcome; usage row not written");
                return false;
            }
        };
        let record = UsageRecord {
            community: pending.community.clone(),
            user: pending.settlement.user.clone(),
            key: pending.settlement.key.clone(),
            hold_created_at,
            model,
            tokens: pending.tokens,
            cost,
            estimate,
            trace_id: pending.trace_id.clone(),
            source,
            period,
            created_at: now,
        };
        match self
            .core()
            .usage_log
            .append(std::slice::from_ref(&record))
            .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "usage log unavailable; the replay writes the row");
                telemetry::count(DEGRADED, "what", "usage_log");
                false
            }
        }
    }
}

impl BudgetService {
    /// Whether the settlement the store answered `AlreadyFinalized` for has
    /// its usage row. Its marker lives [`Core::marker_ttl`] from the
    /// commit, so that settlement was committed, and its row logged, after
    /// `now - marker_ttl`; an earlier row of the same key is an earlier use
    /// (whose marker had to expire before the key could be held again).
    ///
    /// [`Core::marker_ttl`]: super::Core
    async fn logged_since_marker(
        &self,
        pending: &PendingSettlement,
        now: Timestamp,
    ) -> Result<bool, spendgate_ports::RepoError> {
        let core = self.core();
        let marker_born = now
            .plus_millis(-core.marker_ttl.as_millis())
            .unwrap_or(Timestamp::EPOCH);
        Ok(self.logged(pending, marker_born).await?.is_some())
    }

    /// The usage row of `pending`'s use of its key: exactly that use's
    /// when the caller knew it, else the latest row logged at or after
    /// `since`.
    async fn logged(
        &self,
        pending: &PendingSettlement,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, spendgate_ports::RepoError> {
        let core = self.core();
        let hold = hold_ref(pending);
        match pending.hold_created_at {
            Some(created) => {
                core.usage_log
                    .logged_use(&pending.community, &hold, created)
                    .await
            }
            None => {
                core.usage_log
                    .logged(&pending.community, &hold, since)
                    .await
            }
        }
    }

    /// Whether the store's record of the call's key may be another use's,
    /// answered before the store is asked to settle it.
    ///
    /// Within the marker retention after the hold was made the store keeps
    /// this use (its hold, tombstone or marker lives at least that long),
    /// so the key cannot have been held again (a store that lost its data
    /// takes no reserve of the community until it is rebuilt, and a
    /// rebuild waits for the community's queued settlements). Later it may have been: the
    /// marker expired, a caller reused the key, and a finalize would settle
    /// that use's hold or answer with its marker. So a settlement that old
    /// whose use is known is looked up first, and goes on to the finalize
    /// only when the store holds nothing of the key or holds this use (a
    /// hold or tombstone made at its creation time). Otherwise the usage
    /// log decides: this use's row means it is done; no row means nothing
    /// left can tell whether it was committed ([`Attempt::Ambiguous`]). A
    /// finalized marker says nothing of which use it is, so it goes the
    /// same way. The look-up and the finalize are two calls: the record
    /// cannot change use between them without this use being settled and
    /// its marker expiring in between.
    async fn check_use(&self, pending: &PendingSettlement, now: Timestamp) -> Option<Attempt> {
        let core = self.core();
        let created = pending.hold_created_at?;
        let kept_until = created
            .as_millis()
            .saturating_add(core.marker_ttl.as_millis());
        if now.as_millis() < kept_until {
            return None;
        }
        let state = {
            let _timer = StoreTimer::start("lookup");
            core.store
                .lookup(&pending.community, &hold_ref(pending), now)
                .await
        };
        match state {
            Ok(HoldState::Unknown) => return None,
            Ok(
                HoldState::Held { hold }
                | HoldState::Settled {
                    settled: SettledAs::Reaped { hold },
                },
            ) if hold.created_at == created => return None,
            Ok(_) => {}
            Err(StoreError::Unavailable(reason)) => return Some(Attempt::Unavailable(reason)),
            Err(error) => return Some(Attempt::Refused(error)),
        }
        match self.logged(pending, Timestamp::EPOCH).await {
            Ok(Some(record)) => Some(Attempt::Committed {
                outcome: FinalizeOutcome::AlreadyFinalized {
                    actual: record.cost,
                },
                logged: true,
            }),
            Ok(None) => Some(Attempt::Ambiguous),
            Err(error) => Some(Attempt::Unavailable(format!(
                "usage log unavailable while checking which use of the key the store holds: {error}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_its_base_and_stops_at_its_max() {
        let backoff = Backoff::new(
            Ttl::from_millis(10_000).unwrap(),
            Ttl::from_millis(60_000).unwrap(),
        );
        assert_eq!(backoff.delay_ms(1), 10_000);
        assert_eq!(backoff.delay_ms(2), 20_000);
        assert_eq!(backoff.delay_ms(3), 40_000);
        assert_eq!(backoff.delay_ms(4), 60_000);
        assert_eq!(backoff.delay_ms(u32::MAX), 60_000);
    }
}
