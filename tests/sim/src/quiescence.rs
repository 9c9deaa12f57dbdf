//! The end of a run: faults healed, callers' retries made, every worker
//! of every replica run until nothing is left to do; then law 5 (every
//! accepted cost committed exactly once, in the counters and the usage
//! log, no hold left) and the configuration the writers were told.

use std::collections::BTreeMap;

use spendgate::workers::Job;
use spendgate_domain::{Micros, Period};
use spendgate_ports::WorkQueue;

use crate::database::DbFault;
use crate::faults::Fault;
use crate::world::{Failure, World};

impl World {
    async fn queues_empty(&self) -> Result<bool, Failure> {
        let read = |e: spendgate_ports::RepoError| self.fail("read", e.to_string());
        let finalize = self.durable.db.queue_truth.len().await.map_err(read)?;
        let handovers = self
            .durable
            .db
            .reconciliation_truth
            .len()
            .await
            .map_err(read)?;
        Ok(finalize == 0 && handovers == 0)
    }

    async fn run_out(&mut self) -> Result<(), Failure> {
        for _ in 0..100 {
            self.advance(60_000).await?;
            let now = self.now();
            for replica in &self.replicas {
                replica.replay.tick(now).await;
                replica.reconcile.tick(now).await;
                replica.sync.tick(now).await;
            }
            if self.queues_empty().await? {
                break;
            }
        }
        Ok(())
    }

    pub(crate) async fn quiesce(&mut self) -> Result<(), Failure> {
        self.durable.store.set(Fault::Up);
        self.durable.db.switch.set(DbFault::Up);
        self.note("store and database -> Up (quiescence)".into());
        // Callers told "not kept" retry until it is; the others walk away
        // from their holds (the reaper releases them).
        let mut left = std::mem::take(&mut self.live);
        for live in &mut left {
            if let Some(guard) = live.guard.take() {
                guard.into_ticket();
            }
        }
        for live in left {
            if live.retry.is_some() {
                self.live.push(live);
                self.settle().await?;
            }
        }
        self.live.clear();
        self.run_out().await?;
        self.advance(25 * 3_600_000).await?;
        let now = self.now();
        for replica in &self.replicas {
            replica.reaper.tick(now).await;
            replica.sync.resync_all();
            replica.sync.tick(now).await;
        }
        self.run_out().await?;
        if self.ever_lost {
            self.rebuild().await;
            if self.lost {
                return Err(self.fail("law 5", "the rebuild failed at quiescence".into()));
            }
        }
        for config in &mut self.config {
            if config.ai {
                config.store_limit = Some(config.limit);
            }
        }
        self.check().await?;
        self.check_money().await
    }

    /// The calls of community `c` answered as accepted that have no usage
    /// row or another cost in it, for a failure's detail.
    async fn unlogged(&self, c: usize) -> Result<String, Failure> {
        let mut missing = Vec::new();
        for ((_, hold, created_at), amount) in self.ledger.accepted_calls(c) {
            let row = spendgate_ports::UsageLog::logged_use(
                self.durable.db.usage_truth.as_ref(),
                &self.communities[c],
                &hold,
                created_at,
            )
            .await
            .map_err(|e| self.fail("read", e.to_string()))?;
            match row {
                None => missing.push(format!("{} {} {amount}", hold.user, hold.key)),
                Some(row) if row.cost.get() != amount => missing.push(format!(
                    "{} {} {amount} (logged {})",
                    hold.user,
                    hold.key,
                    row.cost.get()
                )),
                Some(_) => {}
            }
        }
        Ok(missing.join(", "))
    }

    /// Law 5 per (community, period).
    async fn check_money(&self) -> Result<(), Failure> {
        // Settlements parked for an operator: the store no longer knew
        // them long after an attempt that may have applied.
        let mut parked: BTreeMap<(usize, Period), i64> = BTreeMap::new();
        let mut parked_accepted: BTreeMap<(usize, Period), i64> = BTreeMap::new();
        let letters = self
            .durable
            .db
            .queue_truth
            .dead_letters(10_000)
            .await
            .map_err(|e| self.fail("read", e.to_string()))?;
        for letter in letters {
            let c = self
                .communities
                .iter()
                .position(|c| *c == letter.item.community)
                .ok_or_else(|| self.fail("law 7", "a dead letter of no community".into()))?;
            *parked.entry((c, letter.item.period)).or_default() +=
                letter.item.settlement.actual.get();
            let hold = spendgate_domain::HoldRef {
                user: letter.item.settlement.user.clone(),
                key: letter.item.settlement.key.clone(),
            };
            *parked_accepted.entry((c, letter.item.period)).or_default() += self
                .ledger
                .accepted_amount(c, &hold, letter.item.hold_created_at);
        }
        for (c, community) in self.communities.iter().enumerate() {
            for period in &self.periods {
                let status = self.counters(community, *period).await?;
                let logged = spendgate_ports::UsageLog::total_cost(
                    self.durable.db.usage_truth.as_ref(),
                    community,
                    *period,
                )
                .await
                .map_err(|e| self.fail("read", e.to_string()))?
                .get();
                let money = self.ledger.money(c, *period);
                let parked_all = parked.get(&(c, *period)).copied().unwrap_or(0);
                let parked_accepted = parked_accepted.get(&(c, *period)).copied().unwrap_or(0);
                let want = money.committed + money.queued - parked_accepted;
                let got = status.committed.get();
                // Every accepted cost is logged once (a parked one, or one
                // lost with a crashed replica's memory, not at all); a
                // dropped guard's may be; the counters hold what is
                // logged, and a parked or lost settlement once or not at
                // all.
                if logged < want - money.crashed
                    || logged > want + money.uncertain
                    || got < logged
                    || got > logged + parked_all + money.crashed
                {
                    let unlogged = self.unlogged(c).await?;
                    return Err(self.fail(
                        "law 5",
                        format!(
                            "{community} {period}: store committed {got}, usage log {logged}, accepted {} (+{} uncertain), parked {parked_all}, lost with a crash {}; accepted and not logged as accepted: {unlogged}",
                            money.committed + money.queued,
                            money.uncertain,
                            money.crashed
                        ),
                    ));
                }
                if status.holds != 0 || status.reserved != Micros::ZERO {
                    return Err(self.fail(
                        "law 5",
                        format!(
                            "{community} {period}: {} holds ({} reserved) left at quiescence",
                            status.holds,
                            status.reserved.get()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
