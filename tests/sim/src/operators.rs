//! What happens around the callers: budget changes and AI switches (alone
//! and racing a write or a config sync pass), the workers' ticks on any
//! replica, time passing with month boundaries and jumps, faults of the
//! store and the database, and a replica crashing and restarting.

use std::time::Duration;

use spendgate::BudgetChangeError;
use spendgate::workers::Job;
use spendgate_domain::{Limits, Micros};
use spendgate_ports::{ConfigProvider, same_use};

use crate::database::DbFault;
use crate::faults::Fault;
use crate::replica::Replica;
use crate::world::{Failure, World, micros};

impl World {
    /// Sets `c`'s limit to `limit` on replica `r`; accounts the answer.
    async fn set_budget(&mut self, c: usize, r: usize, limit: Micros) -> String {
        let community = self.communities[c].clone();
        let answer = self.replicas[r]
            .sg
            .budget()
            .set_budget(&community, Limits::new(limit))
            .await;
        self.account_budget(c, limit, &answer);
        format!(
            "set budget {community} {} on r{r} -> {answer:?}",
            limit.get()
        )
    }

    fn account_budget(&mut self, c: usize, limit: Micros, answer: &Result<(), BudgetChangeError>) {
        match answer {
            Ok(()) => {
                self.config[c].limit = limit;
                self.config[c].store_limit = Some(limit);
            }
            Err(BudgetChangeError::StoreNotUpdated(_) | BudgetChangeError::StoreNotRebuilt(_)) => {
                self.config[c].limit = limit;
                self.config[c].store_limit = None;
            }
            Err(_) => {}
        }
    }

    pub(crate) async fn change_budget(&mut self) -> Result<(), Failure> {
        let c = self.pick(self.shape.communities);
        let r = self.pick(self.replicas.len());
        let limit = micros(self.below(40_000) + 5_000);
        let what = self.set_budget(c, r, limit).await;
        self.note(what);
        Ok(())
    }

    /// An operator's switch of the AI flag, written straight to the row (a
    /// database console): atomic on the row, never through a replica.
    pub(crate) async fn switch_ai(&mut self) {
        let c = self.pick(self.shape.communities);
        let switched = self.toggle_ai_row(c).await;
        if let Some(ai) = switched {
            self.config[c].ai = ai;
        }
        self.note(format!(
            "AI switch of {} -> {switched:?}",
            self.communities[c]
        ));
    }

    /// A budget change racing an AI switch on the same row, the database
    /// slow enough for them to overlap.
    pub(crate) async fn race_budget_and_switch(&mut self) -> Result<(), Failure> {
        let c = self.pick(self.shape.communities);
        let r = self.pick(self.replicas.len());
        let limit = micros(self.below(40_000) + 5_000);
        let delay = u64::try_from(self.below(8) + 1).unwrap_or(1);
        let db = self.durable.db.switch.clone();
        let was = db.fault();
        if was == DbFault::Up {
            db.set(DbFault::Slow);
        }
        let community = self.communities[c].clone();
        let budget = self.replicas[r].sg.budget().clone();
        let (answer, switched) = {
            let change = budget.set_budget(&community, Limits::new(limit));
            let switch = async {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                self.toggle_ai_row(c).await
            };
            tokio::join!(change, switch)
        };
        db.set(was);
        if let Some(ai) = switched {
            self.config[c].ai = ai;
        }
        self.account_budget(c, limit, &answer);
        self.note(format!(
            "race: set budget {community} {} on r{r} -> {answer:?}, AI switch after {delay} ms -> {switched:?}",
            limit.get()
        ));
        Ok(())
    }

    /// The row's AI flag flipped; the new value, or `None` when the
    /// database refused.
    async fn toggle_ai_row(&self, c: usize) -> Option<bool> {
        if self.durable.db.switch.fault() == DbFault::Down {
            return None;
        }
        let config = &self.durable.db.config_truth;
        let mut row = config.community(&self.communities[c]).await.ok()??;
        row.ai_enabled = !row.ai_enabled;
        config.upsert(&row).await.ok()?;
        Some(row.ai_enabled)
    }

    /// A budget change racing a config sync pass that pushes every
    /// community (a replica that just started), the store slow enough for
    /// the pass's writes to land after the change's.
    pub(crate) async fn race_budget_and_sync(&mut self) -> Result<(), Failure> {
        let c = self.pick(self.shape.communities);
        let r1 = self.pick(self.replicas.len());
        let r2 = self.pick(self.replicas.len());
        let limit = micros(self.below(40_000) + 5_000);
        let delay = u64::try_from(self.below(6)).unwrap_or(0);
        let store = self.durable.store.clone();
        let was = store.fault();
        if was == Fault::Up {
            store.set(Fault::Slow);
        }
        let now = self.now();
        let community = self.communities[c].clone();
        let budget = self.replicas[r2].sg.budget().clone();
        let sync = &self.replicas[r1].sync;
        sync.resync_all();
        let (pass, answer) = tokio::join!(sync.tick(now), async {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            budget.set_budget(&community, Limits::new(limit)).await
        });
        if store.fault() == Fault::Slow {
            store.set(was);
        }
        self.account_budget(c, limit, &answer);
        self.note(format!(
            "race: config sync on r{r1} ({} pushed, {} failed) and set budget {community} {} on r{r2} after {delay} ms -> {answer:?}",
            pass.items,
            pass.failures,
            limit.get()
        ));
        Ok(())
    }

    /// Time passes with the workers running: a finalize replay ticks at
    /// least once an hour of it.
    pub(crate) async fn advance(&mut self, ms: i64) -> Result<(), Failure> {
        let mut left = ms;
        while left > 0 {
            let slice = left.min(3_600_000);
            left -= slice;
            let now = self
                .durable
                .clock
                .advance(slice)
                .map_err(|e| self.fail("setup", e.to_string()))?;
            let r = self.pick(self.replicas.len());
            let outcome = self.replicas[r].replay.tick(now).await;
            self.note(format!(
                "clock +{slice} ms -> {}; replay on r{r}: {} items, {} failures",
                now.as_millis(),
                outcome.items,
                outcome.failures
            ));
        }
        Ok(())
    }

    /// One tick of one worker on one replica.
    pub(crate) async fn worker(&mut self) {
        let r = self.pick(self.replicas.len());
        let which = self.below(100);
        let now = self.now();
        let replica = &self.replicas[r];
        let (name, outcome) = match which {
            0..=29 => ("reaper", replica.reaper.tick(now).await),
            30..=59 => ("replay", replica.replay.tick(now).await),
            60..=74 => ("config sync", replica.sync.tick(now).await),
            75..=89 => ("reconciliation", replica.reconcile.tick(now).await),
            90..=94 => ("drift", replica.drift.tick(now).await),
            _ => ("idempotency purge", replica.purge.tick(now).await),
        };
        self.note(format!(
            "{name} tick on r{r}: {} items, {} failures",
            outcome.items, outcome.failures
        ));
    }

    pub(crate) fn change_store_fault(&mut self) {
        let fault = match self.below(4) {
            0 => Fault::Down,
            1 => Fault::LoseNextReply,
            2 => Fault::Slow,
            _ => Fault::Up,
        };
        self.durable.store.set(fault);
        self.note(format!("store -> {fault:?}"));
    }

    pub(crate) fn change_db_fault(&mut self) {
        let fault = match self.below(3) {
            0 => DbFault::Down,
            1 => DbFault::Slow,
            _ => DbFault::Up,
        };
        self.durable.db.switch.set(fault);
        self.note(format!("database -> {fault:?}"));
    }

    /// Settlements replica `r` accepted while the database was down and
    /// that are still only in its memory (no usage row, no durable queue
    /// entry): lost with it, as the fallback queue documents.
    async fn lose_with(&mut self, r: usize) -> Result<(), Failure> {
        let risks = std::mem::take(&mut self.risks);
        let queued = self
            .durable
            .db
            .queue_truth
            .items()
            .map_err(|e| self.fail("read", e.to_string()))?;
        for risk in risks {
            if risk.replica != r {
                self.risks.push(risk);
                continue;
            }
            let (c, hold, created_at) = &risk.call;
            let community = &self.communities[*c];
            let logged = spendgate_ports::UsageLog::logged_use(
                self.durable.db.usage_truth.as_ref(),
                community,
                hold,
                *created_at,
            )
            .await
            .map_err(|e| self.fail("read", e.to_string()))?;
            let kept = queued.iter().any(|q| {
                q.item.community == *community
                    && q.item.settlement.user == hold.user
                    && q.item.settlement.key == hold.key
                    && same_use(q.item.hold_created_at, Some(*created_at))
            });
            if logged.is_none() && !kept {
                self.ledger.crashed(&risk.call, risk.period, risk.actual);
                self.note(format!(
                    "lost with r{r}: {community} {} {} {} (accepted while the database was down)",
                    hold.user,
                    hold.key,
                    risk.actual.get()
                ));
            }
        }
        Ok(())
    }

    /// The store restarts without persistence: every hold, marker,
    /// counter and limit is gone.
    pub(crate) async fn lose_the_store(&mut self) {
        if self.durable.store.lose_everything() {
            self.lost = true;
            self.ever_lost = true;
            self.ledger.store_lost();
            for config in &mut self.config {
                config.store_limit = None;
            }
            self.note("the store lost all its data".into());
        }
    }

    /// The operator's repair after a loss: each period's counters are
    /// rebuilt from the usage log (the current period's limits come back
    /// by themselves: a reserve refused as not configured has config sync
    /// rebuild the period and push them). Done when every rebuild
    /// succeeded.
    ///
    /// As the rebuild's documentation asks, every replica has run a
    /// replay pass first: a settlement a replica keeps in memory while
    /// the database was down is invisible to a rebuild elsewhere until
    /// that replica wrote it to the database.
    pub(crate) async fn rebuild(&mut self) {
        let now = self.now();
        for replica in &self.replicas {
            replica.replay.tick(now).await;
        }
        let mut failed = None;
        let periods: Vec<_> = self.periods.iter().copied().collect();
        for community in &self.communities {
            for period in &periods {
                let rebuilt = self.replicas[0]
                    .sg
                    .budget()
                    .rebuild(community, Some(*period))
                    .await;
                if let Err(error) = rebuilt {
                    failed.get_or_insert(error.to_string());
                }
            }
        }
        match failed {
            None => {
                self.lost = false;
                self.note("operator rebuild -> done".into());
            }
            Some(error) => self.note(format!("operator rebuild -> {error}; retried later")),
        }
    }

    /// A replica is killed (everything in its memory is gone: the
    /// fallback queue, caches, its workers' state) and started again from
    /// the durable ports. Its embedded callers go on by ids.
    pub(crate) async fn crash_and_restart(&mut self) -> Result<(), Failure> {
        let r = self.pick(self.replicas.len());
        for live in &mut self.live {
            if live.replica == r
                && let Some(guard) = live.guard.take()
            {
                guard.into_ticket();
            }
        }
        self.lose_with(r).await?;
        let fresh = Replica::start(&self.durable)
            .await
            .map_err(|e| self.fail("setup", e))?;
        self.replicas[r] = fresh;
        self.note(format!("replica r{r} crashed and restarted"));
        Ok(())
    }
}
