//! The simulator's own account of what the callers were told: money per
//! (community, period) and the state of every call, from which the laws
//! say what the store and the usage log must hold.

use std::collections::BTreeMap;

use spendgate::{FinalizeError, Settled};
use spendgate_domain::{FinalizeOutcome, HoldRef, Micros, Period, Timestamp};
use spendgate_ports::StoreError;

/// One call: its community, its (user, key) and when its hold was made
/// (a key reused later is another call).
pub(crate) type CallKey = (usize, HoldRef, Timestamp);

/// Money per (community, period), by what the callers were told.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Money {
    /// Answered as committed by the store.
    pub(crate) committed: i64,
    /// Answered as queued (or handed over): committed once a worker
    /// applies it.
    pub(crate) queued: i64,
    /// Costs that may or may not have been committed: a settlement
    /// answered "not kept, retry" whose lost attempt may have applied, a
    /// dropped guard's hand-over.
    pub(crate) uncertain: i64,
    /// Costs refused at their first settlement and parked for an operator
    /// (the store no longer knew the call the marker retention after its
    /// hold): never accepted, but among the dead letters.
    pub(crate) parked_unaccepted: i64,
    /// Accepted costs whose settlement lived only in a replica's memory
    /// (the database was down) when that replica crashed: the loss the
    /// fallback queue documents, which the drift monitor reports. In the
    /// counters or not, never in the usage log unless a retry wrote it.
    pub(crate) crashed: i64,
}

/// Where a call stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Committed(i64),
    Queued(i64),
    Uncertain(i64),
    Parked,
}

/// What the caller does next after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing: the call is settled (or refused for good).
    Done,
    /// Settle it again later: nothing kept it.
    Retry,
}

/// The ledger.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    money: BTreeMap<(usize, Period), Money>,
    calls: BTreeMap<CallKey, Call>,
    /// How many times the store lost its data.
    losses: u32,
    /// For each call answered as committed, `losses` when it was.
    committed_at: BTreeMap<CallKey, u32>,
}

impl Ledger {
    /// The money of (community, period).
    pub(crate) fn money(&self, community: usize, period: Period) -> Money {
        self.money
            .get(&(community, period))
            .copied()
            .unwrap_or_default()
    }

    fn entry(&mut self, community: usize, period: Period) -> &mut Money {
        self.money.entry((community, period)).or_default()
    }

    /// A cost that may or may not be committed (a dropped guard).
    pub(crate) fn uncertain(&mut self, call: &CallKey, period: Period, cost: Micros) {
        self.settle_into(call, period, Call::Uncertain(cost.get()), cost.get());
    }

    /// A cost accepted for a worker to commit (a hand-over the provider
    /// will answer).
    pub(crate) fn queued(&mut self, call: &CallKey, period: Period, cost: Micros) {
        self.settle_into(call, period, Call::Queued(cost.get()), cost.get());
    }

    /// An accepted cost lost with a crashed replica's memory.
    pub(crate) fn crashed(&mut self, call: &CallKey, period: Period, cost: Micros) {
        self.entry(call.0, period).crashed += cost.get();
    }

    /// The store lost its data: a call committed before may be committed
    /// again without its hold (once: the usage log holds no row of it).
    pub(crate) fn store_lost(&mut self) {
        self.losses += 1;
    }

    /// Whether `call` was answered as committed or queued.
    pub(crate) fn accepted(&self, call: &CallKey) -> bool {
        matches!(
            self.calls.get(call),
            Some(Call::Committed(_) | Call::Queued(_))
        )
    }

    /// Every call of `community` answered as committed or queued, with
    /// its amount.
    pub(crate) fn accepted_calls(&self, community: usize) -> Vec<(CallKey, i64)> {
        self.calls
            .iter()
            .filter(|((c, _, _), _)| *c == community)
            .filter_map(|(call, state)| match state {
                Call::Committed(amount) | Call::Queued(amount) => Some((call.clone(), *amount)),
                Call::Uncertain(_) | Call::Parked => None,
            })
            .collect()
    }

    /// What the caller of (community, hold) made at `created_at` (any use
    /// of the key when unknown) was told was accepted: 0 if nothing.
    pub(crate) fn accepted_amount(
        &self,
        community: usize,
        hold: &HoldRef,
        created_at: Option<Timestamp>,
    ) -> i64 {
        self.calls
            .iter()
            .filter(|((c, h, at), _)| {
                *c == community && h == hold && created_at.is_none_or(|t| t == *at)
            })
            .map(|(_, state)| match state {
                Call::Committed(amount) | Call::Queued(amount) => *amount,
                Call::Uncertain(_) | Call::Parked => 0,
            })
            .sum()
    }

    fn settle_into(&mut self, call: &CallKey, period: Period, into: Call, amount: i64) {
        let community = call.0;
        let previous = self.calls.get(call).copied();
        if matches!(into, Call::Committed(_)) {
            self.committed_at.insert(call.clone(), self.losses);
        }
        let money = self.entry(community, period);
        if let Some(Call::Uncertain(was)) = previous {
            money.uncertain -= was;
        }
        match into {
            Call::Committed(_) => money.committed += amount,
            Call::Queued(_) => money.queued += amount,
            Call::Parked => money.parked_unaccepted += amount,
            Call::Uncertain(_) => money.uncertain += amount,
        }
        self.calls.insert(call.clone(), into);
    }

    /// Accounts a settlement's answer: `period` is the hold's, `actual`
    /// what was asked. Returns what the caller does next, or the law the
    /// answer breaks.
    pub(crate) fn answer(
        &mut self,
        call: &CallKey,
        period: Period,
        actual: Micros,
        answer: &Result<Settled, FinalizeError>,
    ) -> Result<Next, (&'static str, String)> {
        let previous = self.calls.get(call).copied();
        let open = matches!(previous, None | Some(Call::Uncertain(_)));
        match answer {
            Ok(Settled::Committed { outcome }) => match outcome {
                FinalizeOutcome::Finalized(r)
                | FinalizeOutcome::LateFinalized(r)
                | FinalizeOutcome::CommittedWithoutHold(r) => {
                    if r.period != period {
                        return Err(("law 4", format!("committed to {} not {period}", r.period)));
                    }
                    if matches!(previous, Some(Call::Committed(_))) {
                        let lost_since = self
                            .committed_at
                            .get(call)
                            .is_some_and(|at| *at < self.losses);
                        if !(lost_since
                            && matches!(outcome, FinalizeOutcome::CommittedWithoutHold(_)))
                        {
                            return Err((
                                "law 3",
                                "a call answered as committed a second time".into(),
                            ));
                        }
                    }
                    self.committed_at.insert(call.clone(), self.losses);
                    if open {
                        self.settle_into(
                            call,
                            period,
                            Call::Committed(r.actual.get()),
                            r.actual.get(),
                        );
                    }
                    Ok(Next::Done)
                }
                FinalizeOutcome::AlreadyFinalized { actual: first } => {
                    if previous.is_none() {
                        return Err((
                            "law 3",
                            "a first settlement answered as already finalized".into(),
                        ));
                    }
                    if open {
                        self.settle_into(call, period, Call::Committed(first.get()), first.get());
                    }
                    Ok(Next::Done)
                }
                other => Err(("answer", format!("{other:?}"))),
            },
            Ok(Settled::Queued { actual }) => {
                if open {
                    self.settle_into(call, period, Call::Queued(actual.get()), actual.get());
                }
                Ok(Next::Done)
            }
            Ok(other) => Err(("answer", format!("{other:?}"))),
            Err(FinalizeError::UnknownHold { .. }) if actual == Micros::ZERO => Ok(Next::Done),
            Err(FinalizeError::UnknownHold { .. }) => Err((
                "law 5",
                format!(
                    "a cost of {} refused as an unknown hold: lost",
                    actual.get()
                ),
            )),
            Err(FinalizeError::Store(StoreError::UnknownHold { .. })) => {
                if open {
                    self.settle_into(call, period, Call::Parked, actual.get());
                }
                Ok(Next::Done)
            }
            Err(FinalizeError::NotKept(_)) => {
                if previous.is_none() {
                    self.settle_into(call, period, Call::Uncertain(actual.get()), actual.get());
                }
                Ok(if open { Next::Retry } else { Next::Done })
            }
            Err(FinalizeError::Store(error)) => Err((
                "law 5",
                format!("a settlement refused for a store fault ({error}): not kept"),
            )),
            Err(error) => Err(("answer", error.to_string())),
        }
    }
}
