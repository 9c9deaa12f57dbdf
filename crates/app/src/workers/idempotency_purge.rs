//! Idempotency purge: request records whose `keep_until` passed are
//! deleted, so the store holds only the records a replay may still ask
//! for. How long a record is kept is the caller's choice, made at claim.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_domain::Timestamp;
use spendgate_ports::IdempotencyStore;

use super::job::{Job, TickOutcome};

/// How much a purge pass deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyPurgeSettings {
    /// Records per [`IdempotencyStore::purge`] call: 1,000, so one delete
    /// stays short on a shared database.
    pub batch: u32,
    /// Most records one pass deletes: 100,000. A backlog larger than this
    /// (after an outage) is worked off over the next passes, so a pass
    /// always ends.
    pub max_per_pass: u64,
}

impl Default for IdempotencyPurgeSettings {
    fn default() -> Self {
        Self {
            batch: 1_000,
            max_per_pass: 100_000,
        }
    }
}

/// Purges expired idempotency records a batch at a time: calls
/// `purge(now, batch)` until a call deletes fewer than `batch` records (no
/// more are due) or the pass reached its cap. A failing call ends the pass
/// with one failure; the next pass goes on.
pub struct IdempotencyPurgeJob {
    store: Arc<dyn IdempotencyStore>,
    settings: IdempotencyPurgeSettings,
}

impl IdempotencyPurgeJob {
    /// A purge of `store` with these settings.
    pub fn new(store: Arc<dyn IdempotencyStore>, settings: IdempotencyPurgeSettings) -> Self {
        Self { store, settings }
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
        while outcome.items < self.settings.max_per_pass {
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

    fn job(store: MockIdempotencyStore, batch: u32, max_per_pass: u64) -> IdempotencyPurgeJob {
        IdempotencyPurgeJob::new(
            Arc::new(store),
            IdempotencyPurgeSettings {
                batch,
                max_per_pass,
            },
        )
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
            job(store, 10, 1_000).tick(t()).await,
            TickOutcome {
                items: 23,
                failures: 0
            }
        );
    }

    #[tokio::test]
    async fn a_pass_stops_at_its_cap() {
        let mut store = MockIdempotencyStore::new();
        store.expect_purge().times(3).returning(|_, _| Ok(10));
        assert_eq!(job(store, 10, 25).tick(t()).await.items, 30);
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
            job(store, 10, 1_000).tick(t()).await,
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
        assert_eq!(
            job(store, 1_000, 100_000).tick(t()).await,
            TickOutcome::default()
        );
    }
}
