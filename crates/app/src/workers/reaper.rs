//! The reaper: releases holds whose TTL passed, community by community.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{BudgetStore, ConfigProvider};
use tokio::task::JoinSet;

use super::job::{Job, TickOutcome};

/// How the reaper finds and reaps communities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaperSettings {
    /// Communities asked of the store's due index at a time: 1,000.
    pub batch: usize,
    /// Every how many passes the reaper also walks every enabled community
    /// (the first pass always does): 60, hourly at the default interval.
    /// A safety net for an index that missed a community (the Redis index
    /// write after a reserve can fail alone); 0 never sweeps.
    pub full_sweep_every: u64,
    /// Communities reaped at once: 4. A reap is a few round trips on the
    /// store; overlapping them keeps a pass over 1,000 due communities on
    /// PostgreSQL within seconds.
    pub concurrency: usize,
}

impl Default for ReaperSettings {
    fn default() -> Self {
        Self {
            batch: 1_000,
            full_sweep_every: 60,
            concurrency: 4,
        }
    }
}

/// At most this many index batches per pass, so a pass ends even if the
/// index keeps naming new communities as fast as they are reaped.
const MAX_BATCHES_PER_PASS: usize = 1_000;

/// Releases expired holds of every community that has any, found through
/// the store's due index ([`BudgetStore::due_communities`]), so a pass
/// costs O(due communities), not O(configured). One community's error is
/// counted and retried next pass, never stops the pass.
pub struct ReaperJob {
    store: Arc<dyn BudgetStore>,
    config: Arc<dyn ConfigProvider>,
    settings: ReaperSettings,
    passes: AtomicU64,
}

impl ReaperJob {
    /// A reaper over `store`, sweeping the communities `config` enables
    /// now and then; default [`ReaperSettings`].
    pub fn new(store: Arc<dyn BudgetStore>, config: Arc<dyn ConfigProvider>) -> Self {
        Self::with_settings(store, config, ReaperSettings::default())
    }

    /// A reaper with explicit settings.
    pub fn with_settings(
        store: Arc<dyn BudgetStore>,
        config: Arc<dyn ConfigProvider>,
        settings: ReaperSettings,
    ) -> Self {
        Self {
            store,
            config,
            settings,
            passes: AtomicU64::new(0),
        }
    }

    /// Reaps `communities`, [`ReaperSettings::concurrency`] at a time,
    /// counting each one's holds or failure.
    async fn reap_all(
        &self,
        communities: Vec<CommunityId>,
        now: Timestamp,
        outcome: &mut TickOutcome,
    ) {
        let mut pending = communities.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < self.settings.concurrency.max(1) {
                let Some(community) = pending.next() else {
                    break;
                };
                let store = self.store.clone();
                running.spawn(async move {
                    let result = store.reap(&community, now).await;
                    (community, result)
                });
            }
            let Some(joined) = running.join_next().await else {
                return;
            };
            match joined {
                Ok((_, Ok(reaped))) => outcome.items = outcome.items.saturating_add(reaped.count),
                Ok((community, Err(error))) => {
                    tracing::warn!(%community, %error, "reaper: community failed");
                    outcome.failures += 1;
                }
                Err(error) => {
                    tracing::error!(%error, "reaper: a reap task panicked or was cancelled");
                    outcome.failures += 1;
                }
            }
        }
    }

    /// Reaps what the due index names, batch after batch, each community
    /// at most once per pass.
    async fn indexed_pass(
        &self,
        now: Timestamp,
        visited: &mut HashSet<CommunityId>,
        outcome: &mut TickOutcome,
    ) {
        let batch = self.settings.batch.max(1);
        for _ in 0..MAX_BATCHES_PER_PASS {
            let due = match self.store.due_communities(now, batch).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "reaper: due index unavailable");
                    outcome.failures += 1;
                    return;
                }
            };
            let full = due.len() >= batch;
            let fresh: Vec<CommunityId> = due
                .into_iter()
                .filter(|c| visited.insert(c.clone()))
                .collect();
            if fresh.is_empty() {
                return;
            }
            self.reap_all(fresh, now, outcome).await;
            if !full {
                return;
            }
        }
    }

    /// Reaps every enabled community the indexed pass did not visit.
    async fn full_sweep(
        &self,
        now: Timestamp,
        visited: &HashSet<CommunityId>,
        outcome: &mut TickOutcome,
    ) {
        let communities = match self.config.active_communities().await {
            Ok(communities) => communities,
            Err(error) => {
                tracing::warn!(%error, "reaper: communities unavailable for the full sweep");
                outcome.failures += 1;
                return;
            }
        };
        let unvisited = communities
            .into_iter()
            .map(|config| config.community)
            .filter(|c| !visited.contains(c))
            .collect();
        self.reap_all(unvisited, now, outcome).await;
    }
}

#[async_trait]
impl Job for ReaperJob {
    fn name(&self) -> &'static str {
        "reaper"
    }

    async fn tick(&self, now: Timestamp) -> TickOutcome {
        let pass = self.passes.fetch_add(1, Ordering::Relaxed);
        let mut outcome = TickOutcome::default();
        let mut visited = HashSet::new();
        self.indexed_pass(now, &mut visited, &mut outcome).await;
        let every = self.settings.full_sweep_every;
        if every > 0 && pass.is_multiple_of(every) {
            self.full_sweep(now, &visited, &mut outcome).await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use spendgate_domain::{CommunityId, ConfigVersion, Limits, Micros, Reaped, Timestamp};
    use spendgate_ports::{CommunityConfig, MockBudgetStore, MockConfigProvider, StoreError};

    use super::*;

    fn id(name: &str) -> CommunityId {
        CommunityId::parse(name).unwrap()
    }

    fn t() -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000).unwrap()
    }

    fn enabled(name: &str) -> CommunityConfig {
        CommunityConfig {
            community: id(name),
            ai_enabled: true,
            limits: Limits::new(Micros::from_usd(1)),
            pricing_overrides: Default::default(),
            version: ConfigVersion::ZERO,
        }
    }

    fn no_config() -> MockConfigProvider {
        let mut config = MockConfigProvider::new();
        config.expect_active_communities().never();
        config
    }

    fn settings(batch: usize, full_sweep_every: u64) -> ReaperSettings {
        ReaperSettings {
            batch,
            full_sweep_every,
            concurrency: 2,
        }
    }

    #[tokio::test]
    async fn a_pass_reaps_only_what_the_due_index_names() {
        let mut store = MockBudgetStore::new();
        store
            .expect_due_communities()
            .times(1)
            .returning(|_, _| Ok(vec![id("a"), id("b")]));
        store.expect_reap().times(2).returning(|_, _| {
            Ok(Reaped {
                count: 2,
                reclaimed: Micros::ZERO,
            })
        });
        let job = ReaperJob::with_settings(Arc::new(store), Arc::new(no_config()), settings(10, 0));
        assert_eq!(
            job.tick(t()).await,
            TickOutcome {
                items: 4,
                failures: 0
            }
        );
    }

    #[tokio::test]
    async fn a_full_batch_asks_again_until_nothing_new_and_a_failing_community_is_visited_once() {
        let mut store = MockBudgetStore::new();
        let mut calls = 0;
        store
            .expect_due_communities()
            .times(3)
            .returning(move |_, _| {
                calls += 1;
                Ok(if calls == 1 {
                    vec![id("a"), id("b")]
                } else {
                    vec![id("a"), id("c")]
                })
            });
        store.expect_reap().times(3).returning(|c, _| {
            if c.as_str() == "a" {
                Err(StoreError::Unavailable("injected".into()))
            } else {
                Ok(Reaped {
                    count: 1,
                    reclaimed: Micros::ZERO,
                })
            }
        });
        let job = ReaperJob::with_settings(Arc::new(store), Arc::new(no_config()), settings(2, 0));
        assert_eq!(
            job.tick(t()).await,
            TickOutcome {
                items: 2,
                failures: 1
            }
        );
    }

    #[tokio::test]
    async fn the_first_pass_sweeps_every_enabled_community_the_index_missed() {
        let mut store = MockBudgetStore::new();
        store
            .expect_due_communities()
            .times(2)
            .returning(|_, _| Ok(vec![id("a")]));
        store.expect_reap().times(4).returning(|_, _| {
            Ok(Reaped {
                count: 1,
                reclaimed: Micros::ZERO,
            })
        });
        let mut config = MockConfigProvider::new();
        config
            .expect_active_communities()
            .times(1)
            .returning(|| Ok(vec![enabled("a"), enabled("b"), enabled("c")]));
        let job = ReaperJob::with_settings(Arc::new(store), Arc::new(config), settings(10, 2));
        assert_eq!(
            job.tick(t()).await.items,
            3,
            "a by the index, b and c by the sweep"
        );
        assert_eq!(job.tick(t()).await.items, 1, "second pass: index only");
    }

    #[tokio::test]
    async fn an_unavailable_index_is_one_failure_and_the_sweep_still_runs() {
        let mut store = MockBudgetStore::new();
        store
            .expect_due_communities()
            .returning(|_, _| Err(StoreError::Unavailable("down".into())));
        store.expect_reap().times(1).returning(|_, _| {
            Ok(Reaped {
                count: 1,
                reclaimed: Micros::ZERO,
            })
        });
        let mut config = MockConfigProvider::new();
        config
            .expect_active_communities()
            .returning(|| Ok(vec![enabled("a")]));
        let job = ReaperJob::with_settings(Arc::new(store), Arc::new(config), settings(10, 1));
        assert_eq!(
            job.tick(t()).await,
            TickOutcome {
                items: 1,
                failures: 1
            }
        );
    }
}
