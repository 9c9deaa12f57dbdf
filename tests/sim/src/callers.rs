//! The simulated callers: lifecycles through the guard (embedded
//! callers) and through the settle-by-ids operation (HTTP, Cycles and CLI
//! callers), with retries, replays, races on one call, heartbeats,
//! hand-overs, dropped guards and keys reused after the store forgot them.

use spendgate::{
    FinalizeError, HoldGuard, KnownHold, ReserveDecision, SettleRequest, Settled, Usage,
};
use spendgate_domain::{
    HoldState, IdempotencyKey, Micros, ModelAlias, Reservation, TokenCounts, Ttl, UserId,
};
use spendgate_ports::ProviderUsage;

use crate::database::DbFault;
use crate::faults::Fault;
use crate::ledger::Next;
use crate::mutant::Mutant;
use crate::world::{Done, Failure, Live, Risk, World, micros};

/// A day and an hour: past the marker retention, so a key may be reused.
const REUSE_AFTER_MS: i64 = 25 * 3_600_000;

impl World {
    /// A settled call of (community, user) whose key may be reused: its
    /// cost was accepted and the store has forgotten the key (its marker
    /// expired, or the store lost its data), whatever the queues still
    /// hold of it: a settlement of that use still waiting there is exactly
    /// what a new use of the key must not be confused with.
    async fn reusable(&self, community: usize, user: usize) -> Result<Option<usize>, Failure> {
        let now = self.now();
        for (at, d) in self.settled.iter().enumerate() {
            if d.community != community
                || d.user != user
                || now.as_millis() - d.at.as_millis() < REUSE_AFTER_MS
                || !self.ledger.accepted(&d.call())
            {
                continue;
            }
            let state = self
                .durable
                .store
                .truth()
                .lookup(&self.communities[community], &d.hold, now)
                .await
                .map_err(|e| self.fail("read", e.to_string()))?;
            if state == HoldState::Unknown {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    pub(crate) async fn reserve(&mut self) -> Result<(), Failure> {
        let c = self.pick(self.shape.communities);
        let u = self.pick(self.shape.users);
        let r = self.pick(self.replicas.len());
        let reuse = self.chance(15);
        let embedded = self.chance(50);
        let limit = self.config[c].limit.get();
        let estimate = if self.chance(10) {
            0
        } else {
            self.below(limit / 4) + 1
        };
        let ttl_ms = self.below(540_000) + 60_000;
        if self.masked(c, u) {
            return Ok(());
        }
        let reused = if reuse {
            self.reusable(c, u).await?
        } else {
            None
        };
        let key = match reused {
            Some(at) => self.settled[at].hold.key.to_string(),
            None => {
                self.next_key += 1;
                format!("k{}", self.next_key)
            }
        };
        let setup = |e: String| self.fail("setup", e);
        let reservation = Reservation {
            user: UserId::parse(format!("u{u}")).map_err(|e| setup(e.to_string()))?,
            key: IdempotencyKey::parse(&key).map_err(|e| setup(e.to_string()))?,
            estimate: micros(estimate),
            model: ModelAlias::parse("cheap").map_err(|e| setup(e.to_string()))?,
            ttl: Ttl::from_millis(ttl_ms).map_err(|e| setup(e.to_string()))?,
        };
        // The caller moves on to the key's new use: the old one is never
        // settled again.
        if let Some(at) = reused {
            self.settled.swap_remove(at);
        }
        let fault = self.durable.store.fault();
        let community = self.communities[c].clone();
        let answer = self.replicas[r]
            .sg
            .budget()
            .reserve_priced(&community, reservation, None)
            .await;
        let what = format!(
            "reserve {community} u{u} {key}{} {estimate} on r{r} (store {fault:?})",
            if reused.is_some() { " (reused)" } else { "" }
        );
        match answer {
            Ok(ReserveDecision::Reserved(guard)) => {
                let hold = guard.ticket().hold.clone();
                self.note(format!("{what} -> held in {}", hold.period));
                if fault == Fault::Down {
                    return Err(self.fail(
                        "law 6",
                        format!("{what}: accepted while its store was down"),
                    ));
                }
                self.periods.insert(hold.period);
                let status = self.counters(&community, hold.period).await?;
                let used = status.committed.get() + status.reserved.get();
                let enforced = status.limits.map_or(0, |l| l.limit.get());
                if used > enforced {
                    return Err(self.fail(
                        "law 1",
                        format!("{what}: committed + reserved = {used} > limit {enforced}"),
                    ));
                }
                // After a loss the store's counters are only as good as
                // their rebuild: a reserve admitted over a period whose
                // logged spend the store does not count is admitted as if
                // that money had not been spent.
                if self.ever_lost {
                    let logged = self.logged(&community, hold.period).await?;
                    if status.committed.get() < logged {
                        return Err(self.fail(
                            "law 1",
                            format!(
                                "{what}: the store counts committed {} of a period whose usage log holds {logged}",
                                status.committed.get()
                            ),
                        ));
                    }
                }
                self.live.push(Live {
                    community: c,
                    user: u,
                    hold: hold.hold_ref(),
                    known: KnownHold::from(&hold),
                    period: hold.period,
                    created_at: hold.created_at,
                    replica: r,
                    retry: None,
                    call_id: guard.call_id(),
                    guard: if embedded {
                        Some(guard)
                    } else {
                        guard.into_ticket();
                        None
                    },
                });
            }
            Ok(ReserveDecision::BudgetExceeded { .. }) => self.note(format!("{what} -> exceeded")),
            Ok(ReserveDecision::AlreadySettled) if reused.is_some() => {
                self.note(format!("{what} -> already settled"));
            }
            Ok(other) => {
                return Err(self.fail("answer", format!("{what}: a new key answered {other:?}")));
            }
            Err(e) => self.note(format!("{what} -> refused: {e}")),
        }
        Ok(())
    }

    fn cost_for(&mut self, estimate: i64) -> i64 {
        match self.below(100) {
            0..=39 => estimate,
            40..=59 => self.below(estimate + 1),
            60..=74 => estimate + self.below(estimate + 1) + 1,
            _ => 0,
        }
    }

    /// A settlement by ids on replica `r`, as an inbound adapter makes it
    /// (or, under [`Mutant::LookupFirst`], as they made it before).
    async fn settle_by_ids(
        &self,
        r: usize,
        live_hold: &spendgate_domain::HoldRef,
        known: &KnownHold,
        c: usize,
        actual: Micros,
    ) -> Result<Settled, FinalizeError> {
        let community = &self.communities[c];
        let budget = self.replicas[r].sg.budget();
        if self.shape.mutant == Some(Mutant::LookupFirst) {
            let store = &self.replicas[r].sg.ports().store;
            match store.lookup(community, live_hold, self.now()).await {
                Err(error) => return Err(FinalizeError::Store(error)),
                Ok(HoldState::Unknown) => {
                    return Err(FinalizeError::UnknownHold {
                        user: live_hold.user.to_string(),
                        key: live_hold.key.to_string(),
                    });
                }
                Ok(_) => {}
            }
        }
        let request = SettleRequest::new(community.clone(), live_hold.clone(), Usage::cost(actual))
            .with_known(known.clone());
        budget.settle(request).await
    }

    /// Accounts a settlement of `live` and keeps the call for a retry
    /// (answered "not kept") or for replays.
    fn account(
        &mut self,
        mut live: Live,
        actual: Micros,
        answer: &Result<Settled, FinalizeError>,
        served: Served,
        what: &str,
    ) -> Result<(), Failure> {
        let was = self.ledger.accepted(&live.call());
        let next = self
            .ledger
            .answer(&live.call(), live.period, actual, answer)
            .map_err(|(law, detail)| self.fail(law, format!("{what}: {detail}")))?;
        self.at_risk(&live.call(), live.period, actual, was, served);
        self.note(format!("{what} -> {}", brief(answer)));
        match next {
            Next::Retry => {
                live.retry = Some(actual);
                self.live.push(live);
            }
            Next::Done => {
                if !self.settled.iter().any(|d| d.call() == live.call()) {
                    self.settled.push(Done {
                        community: live.community,
                        user: live.user,
                        hold: live.hold,
                        known: live.known,
                        period: live.period,
                        created_at: live.created_at,
                        actual,
                        at: self.now(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records a settlement a replica accepted while the database was
    /// down ([`Risk`]).
    fn at_risk(
        &mut self,
        call: &crate::ledger::CallKey,
        period: spendgate_domain::Period,
        actual: Micros,
        was_accepted: bool,
        served: Served,
    ) {
        if served.db_down && !was_accepted && self.ledger.accepted(call) {
            self.risks.push(Risk {
                call: call.clone(),
                period,
                actual,
                replica: served.replica,
            });
        }
    }

    fn served(&self, replica: usize) -> Served {
        Served {
            replica,
            db_down: self.durable.db.switch.fault() == DbFault::Down,
        }
    }

    /// A live hold to settle, with its estimate and the cost it is
    /// settled with (the one a "not kept" answer left it to retry with).
    fn take_live(&mut self) -> Option<(Live, i64, Micros)> {
        if self.live.is_empty() {
            return None;
        }
        let at = self.pick(self.live.len());
        let live = self.live.swap_remove(at);
        let estimate = live.known.estimate.map_or(0, Micros::get);
        let drawn = micros(self.cost_for(estimate));
        let actual = live.retry.unwrap_or(drawn);
        Some((live, estimate, actual))
    }

    pub(crate) async fn settle(&mut self) -> Result<(), Failure> {
        let Some((mut live, estimate, actual)) = self.take_live() else {
            return Ok(());
        };
        let r = self.pick(self.replicas.len());
        let through_guard = self.chance(70);
        let fault = self.durable.store.fault();
        let mut served = self.served(r);
        let (answer, how) = match live.guard.take() {
            Some(guard) if through_guard => {
                served.replica = live.replica;
                let answer = if actual == Micros::ZERO {
                    guard.cancel().await
                } else {
                    guard.finalize(Usage::cost(actual)).await
                };
                (answer, "guard")
            }
            guard => {
                if let Some(guard) = guard {
                    guard.into_ticket();
                }
                let answer = self
                    .settle_by_ids(r, &live.hold, &live.known, live.community, actual)
                    .await;
                (answer, "by ids")
            }
        };
        let what = format!(
            "settle {} {} {} {} {how} on r{r} (est {estimate}, store {fault:?})",
            self.communities[live.community],
            live.hold.user,
            live.hold.key,
            actual.get()
        );
        self.account(live, actual, &answer, served, &what)
    }

    /// Two settlements of one call at once (a client retrying while its
    /// first try is in flight), on two replicas.
    pub(crate) async fn race_settle(&mut self) -> Result<(), Failure> {
        let Some((mut live, _, actual)) = self.take_live() else {
            return Ok(());
        };
        let (r1, r2) = (
            self.pick(self.replicas.len()),
            self.pick(self.replicas.len()),
        );
        if let Some(guard) = live.guard.take() {
            guard.into_ticket();
        }
        let fault = self.durable.store.fault();
        let served = self.served(r1);
        let (a, b) = tokio::join!(
            self.settle_by_ids(r1, &live.hold, &live.known, live.community, actual),
            self.settle_by_ids(r2, &live.hold, &live.known, live.community, actual),
        );
        let what = format!(
            "race settle {} {} {} {} on r{r1} and r{r2} (store {fault:?})",
            self.communities[live.community],
            live.hold.user,
            live.hold.key,
            actual.get()
        );
        // The ledger reads the answers in the order they must have
        // happened: a commit before the queueing or the replay it implies.
        let mut answers = [a, b];
        answers.sort_by_key(order);
        let [first, second] = answers;
        let call = live.call();
        let period = live.period;
        let was = self.ledger.accepted(&call);
        self.ledger
            .answer(&call, period, actual, &first)
            .map_err(|(law, detail)| self.fail(law, format!("{what} (first): {detail}")))?;
        // Either replica may hold it in memory: count it against the first.
        self.at_risk(&call, period, actual, was, served);
        self.note(format!("{what} -> first {}", brief(&first)));
        self.account(live, actual, &second, served, &format!("{what} (second)"))
    }

    pub(crate) async fn replay_a_settlement(&mut self) -> Result<(), Failure> {
        if self.settled.is_empty() {
            return Ok(());
        }
        let at = self.pick(self.settled.len());
        let r = self.pick(self.replicas.len());
        let done = self.settled[at].clone();
        let served = self.served(r);
        let was = self.ledger.accepted(&done.call());
        let answer = self
            .settle_by_ids(r, &done.hold, &done.known, done.community, done.actual)
            .await;
        let what = format!(
            "replay {} {} {} {} on r{r}",
            self.communities[done.community],
            done.hold.user,
            done.hold.key,
            done.actual.get()
        );
        self.ledger
            .answer(&done.call(), done.period, done.actual, &answer)
            .map_err(|(law, detail)| self.fail(law, format!("{what}: {detail}")))?;
        self.at_risk(&done.call(), done.period, done.actual, was, served);
        self.note(format!("{what} -> {}", brief(&answer)));
        Ok(())
    }

    fn guarded(&mut self) -> Option<usize> {
        let guarded: Vec<usize> = (0..self.live.len())
            .filter(|i| self.live[*i].guard.is_some())
            .collect();
        if guarded.is_empty() {
            return None;
        }
        let at = self.pick(guarded.len());
        Some(guarded[at])
    }

    pub(crate) async fn heartbeat(&mut self) {
        let ttl_ms = self.below(540_000) + 60_000;
        let Some(at) = self.guarded() else { return };
        let Ok(ttl) = Ttl::from_millis(ttl_ms) else {
            return;
        };
        let what = format!(
            "heartbeat {} {}",
            self.live[at].hold.user, self.live[at].hold.key
        );
        let answer = match self.live[at].guard.as_mut() {
            Some(guard) => Some(guard.extend(ttl).await),
            None => None,
        };
        self.note(format!("{what} -> {answer:?}"));
    }

    /// What the provider will say the call cost: `None` when it never
    /// heard of it (reconciliation then charges the estimate).
    fn provider_reports(&mut self, live: &Live, estimate: i64) -> Result<Micros, Failure> {
        let cost = micros(self.cost_for(estimate));
        if self.chance(30) {
            return Ok(micros(estimate));
        }
        let call = live.call_id.clone();
        self.durable
            .provider
            .record(
                call,
                ProviderUsage {
                    cost,
                    model: "cheap".into(),
                    tokens: TokenCounts::default(),
                    completed_at: self.now(),
                },
            )
            .map_err(|e| self.fail("setup", e.to_string()))?;
        Ok(cost)
    }

    /// An embedded caller's hold leaving the caller's hands (handed over
    /// or dropped): the hold, its guard, its estimate and what the
    /// provider will say it cost.
    fn take_guarded(&mut self) -> Result<Option<(Live, HoldGuard, i64, Micros)>, Failure> {
        let Some(at) = self.guarded() else {
            return Ok(None);
        };
        let mut live = self.live.swap_remove(at);
        let estimate = live.known.estimate.map_or(0, Micros::get);
        let cost = self.provider_reports(&live, estimate)?;
        Ok(live.guard.take().map(|guard| (live, guard, estimate, cost)))
    }

    pub(crate) async fn hand_over(&mut self) -> Result<(), Failure> {
        let Some((live, guard, estimate, cost)) = self.take_guarded()? else {
            return Ok(());
        };
        let answer = guard.hand_over().await;
        let what = format!(
            "hand over {} {} {} (provider: {})",
            self.communities[live.community],
            live.hold.user,
            live.hold.key,
            cost.get()
        );
        if answer.is_ok() {
            self.ledger.queued(&live.call(), live.period, cost);
        } else {
            self.ledger
                .uncertain(&live.call(), live.period, cost.max(micros(estimate)));
        }
        self.note(format!("{what} -> {answer:?}"));
        Ok(())
    }

    pub(crate) async fn drop_guard(&mut self) -> Result<(), Failure> {
        let Some((live, guard, estimate, cost)) = self.take_guarded()? else {
            return Ok(());
        };
        self.ledger
            .uncertain(&live.call(), live.period, cost.max(micros(estimate)));
        drop(guard);
        self.note(format!(
            "drop the guard of {} {} {} (provider: {})",
            self.communities[live.community],
            live.hold.user,
            live.hold.key,
            cost.get()
        ));
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// Which replica served a settlement, and whether the database was down.
#[derive(Debug, Clone, Copy)]
struct Served {
    replica: usize,
    db_down: bool,
}

/// The order a ledger reads two answers of one call in.
fn order(answer: &Result<Settled, FinalizeError>) -> u8 {
    use spendgate_domain::FinalizeOutcome as O;
    match answer {
        Ok(Settled::Committed {
            outcome: O::Finalized(_) | O::LateFinalized(_) | O::CommittedWithoutHold(_),
        }) => 0,
        Ok(Settled::Queued { .. }) => 1,
        Ok(_) => 2,
        Err(_) => 3,
    }
}

/// An answer in a few words, for the trace.
fn brief(answer: &Result<Settled, FinalizeError>) -> String {
    match answer {
        Ok(Settled::Committed { outcome }) => format!("{outcome:?}"),
        Ok(other) => format!("{other:?}"),
        Err(error) => format!("error: {error}"),
    }
}
