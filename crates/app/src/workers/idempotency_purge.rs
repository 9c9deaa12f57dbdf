//! Idempotency purge: request records whose `keep_until` passed are
//! deleted, so the store holds only the records a replay may still ask
//! for. How long a record is kept is the caller's choice, made at claim.
//!
//! A pass deletes batch after batch until nothing is due: each delete is
//! bounded (one short statement on a shared database), the pass is not,
//! so the purge keeps up with any inflow the database can delete (a Cycles
//! lifecycle writes three records; see BENCHMARKS.md for the rate on
//! PostgreSQL). It ends when a batch deletes fewer records than its size,
//! when the store fails, or at shutdown (between two batches).

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_domain::Timestamp;
use spendgate_ports::IdempotencyStore;
use tokio_util::sync::CancellationToken;

use super::job::{Job, TickOutcome};

/// How much one purge statement deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyPurgeSettings {
    /// Records per [`IdempotencyStore::purge`] call: 1,000, so one delete
    /// stays short on a shared database (on SQLite it holds the one write
    /// lock every budget write needs).
    pub batch: u32,
}

impl Default for IdempotencyPurgeSettings {
    fn default() -> Self {
        Self { batch: 1_000 }
    }
}

/// Purges expired idempotency records a batch at a time: calls
/// `purge(now, batch)` until a call deletes fewer than `batch` records (no
/// more are due) or the job is stopped. A failing call ends the pass with
/// one failure; the next pass goes on.
pub struct IdempotencyPurgeJob {
    store: Arc<dyn IdempotencyStore>,
    settings: IdempotencyPurgeSettings,
    stop: CancellationToken,
}

impl IdempotencyPurgeJob {
    /// A purge of `store` with these settings, never stopped mid-pass.
    pub fn new(store: Arc<dyn IdempotencyStore>, settings: IdempotencyPurgeSettings) -> Self {
        Self {
            store,
            settings,
            stop: CancellationToken::new(),
        }
    }

    /// The same purge ending its pass after the current batch once `stop`
    /// fires (the workers' shutdown), however much is still due.
    #[must_use]
    pub fn stopped_by(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }
}

#[async_trait]
impl Job for IdempotencyPurgeJob {
    fn name(&self) -> &'static str {
        "idempotency_purge"
    }

    async fn tick(&self, now: Timestamp) -> TickOutcome {
        let batch = self.settings.batch.max(1);
        let mut outcome = TickOutcome::default();
        while !self.stop.is_cancelled() {
            match self.store.purge(now, batch).await {
                Ok(purged) => {
                    outcome.items = outcome.items.saturating_add(purged);
                    if purged < u64::from(batch) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "idempotency purge: store unavailable");
                    outcome.failures += 1;
                    break;
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use spendgate_ports::{MockIdempotencyStore, RepoError};

    use super::*;

    fn t() -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000).unwrap()
    }

    fn job(store: MockIdempotencyStore, batch: u32) -> IdempotencyPurgeJob {
        IdempotencyPurgeJob::new(Arc::new(store), IdempotencyPurgeSettings { batch })
    }

    #[tokio::test]
    async fn a_pass_purges_full_batches_until_a_short_one() {
        let mut store = MockIdempotencyStore::new();
        let mut answers = [10, 10, 3].into_iter();
        store
            .expect_purge()
            .withf(|now, limit| *now == t() && *limit == 10)
            .times(3)
            .returning(move |_, _| Ok(answers.next().unwrap()));
        assert_eq!(
            job(store, 10).tick(t()).await,
            TickOutcome {
                items: 23,
                failures: 0
            }
        );
    }

    #[tokio::test]
    async fn a_backlog_past_the_old_per_pass_cap_is_purged_in_one_pass() {
        // 150 full batches of 1,000 (the old cap stopped a pass at 100,000),
        // then a short one.
        let mut store = MockIdempotencyStore::new();
        let mut calls = 0_u32;
        store.expect_purge().times(151).returning(move |_, _| {
            calls += 1;
            Ok(if calls <= 150 { 1_000 } else { 7 })
        });
        let outcome = job(store, 1_000).tick(t()).await;
        assert_eq!(outcome.items, 150_007);
    }

    #[tokio::test]
    async fn a_stopped_job_ends_its_pass_after_the_current_batch() {
        let stop = CancellationToken::new();
        let fired = stop.clone();
        let mut calls = 0_u32;
        let mut store = MockIdempotencyStore::new();
        store.expect_purge().times(2).returning(move |_, _| {
            calls += 1;
            if calls == 2 {
                fired.cancel();
            }
            Ok(10)
        });
        let outcome = job(store, 10).stopped_by(stop).tick(t()).await;
        assert_eq!(outcome.items, 20);
    }

    #[tokio::test]
    async fn an_unavailable_store_ends_the_pass_with_one_failure() {
        let mut store = MockIdempotencyStore::new();
        let mut answers = [Ok(10), Err(RepoError::Unavailable("down".into()))].into_iter();
        store
            .expect_purge()
            .times(2)
            .returning(move |_, _| answers.next().unwrap());
        assert_eq!(
            job(store, 10).tick(t()).await,
            TickOutcome {
                items: 10,
                failures: 1
            }
        );
    }

    #[tokio::test]
    async fn nothing_due_is_one_call() {
        let mut store = MockIdempotencyStore::new();
        store.expect_purge().times(1).returning(|_, _| Ok(0));
        assert_eq!(job(store, 1_000).tick(t()).await, TickOutcome::default());
    }
}
