//! Config sync: limits and pricing from the database into the store and the
//! hot path's configuration cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{BudgetStore, CommunityConfig, ConfigProvider};

use super::job::{Job, TickOutcome};
use crate::services::budget::BudgetService;

/// Pushes every enabled community's limits into the store (which may have
/// lost them, as after a Redis restart) and its whole configuration into
/// the service's cache. Only what changed since this job's last successful
/// push is written to the store; the first pass writes everything.
///
/// A community whose limits the store turned out to have lost (a reserve
/// was refused as not configured although this job had pushed them: the
/// store lost its data) is repaired by the next pass: its current period
/// is rebuilt from the usage log first, then its limits are pushed again.
///
/// A pass writes what it read at its start, so a budget change or an AI
/// switch made meanwhile (on any replica) is newer than its snapshot.
/// Each value carries its row's [`ConfigVersion`](spendgate_domain::ConfigVersion),
/// and the store ([`BudgetStore::set_limits`]) and the cache keep the
/// newer of what they hold and what the pass brings: a stale snapshot
/// changes nothing.
pub struct ConfigSyncJob {
    config: Arc<dyn ConfigProvider>,
    store: Arc<dyn BudgetStore>,
    budget: BudgetService,
    synced: Mutex<HashMap<CommunityId, CommunityConfig>>,
}

impl ConfigSyncJob {
    /// A sync from `config` into `store` and `budget`'s cache.
    pub fn new(
        config: Arc<dyn ConfigProvider>,
        store: Arc<dyn BudgetStore>,
        budget: BudgetService,
    ) -> Self {
        Self {
            config,
            store,
            budget,
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what was pushed, so the next pass writes every community
    /// again (after the store lost its data).
    pub fn resync_all(&self) {
        if let Ok(mut synced) = self.synced.lock() {
            synced.clear();
        }
    }

    fn unchanged(&self, config: &CommunityConfig) -> bool {
        self.synced
            .lock()
            .is_ok_and(|s| s.get(&config.community) == Some(config))
    }

    fn mark(&self, config: CommunityConfig) {
        if let Ok(mut synced) = self.synced.lock() {
            synced.insert(config.community.clone(), config);
        }
    }
}

#[async_trait]
impl Job for ConfigSyncJob {
    fn name(&self) -> &'static str {
        "config_sync"
    }

    fn singleton(&self) -> bool {
        // Every replica keeps its own cache warm; the store write is
        // idempotent.
        false
    }

    async fn tick(&self, _now: Timestamp) -> TickOutcome {
        let communities = match self.config.active_communities().await {
            Ok(communities) => communities,
            Err(error) => {
                tracing::warn!(%error, "config sync: configuration unavailable");
                return TickOutcome {
                    items: 0,
                    failures: 1,
                };
            }
        };
        let lost = self.budget.take_lost_limits();
        let mut outcome = TickOutcome::default();
        for config in communities {
            self.budget.remember_config(&config);
            let unchanged = self.unchanged(&config);
            let repair = unchanged && lost.contains(&config.community);
            if unchanged && !repair {
                continue;
            }
            if repair {
                match self.budget.rebuild(&config.community, None).await {
                    Ok(report) => tracing::warn!(
                        community = %config.community,
                        before = %report.before,
                        after = %report.after,
                        "config sync: the store had lost the community's limits; its period was rebuilt from the usage log before they are pushed again"
                    ),
                    Err(error) => {
                        tracing::warn!(community = %config.community, %error, "config sync: the store lost the community's limits and its period could not be rebuilt yet");
                        self.budget.note_lost_limits(&config.community);
                        outcome.failures += 1;
                        continue;
                    }
                }
            }
            match self
                .store
                .set_limits(&config.community, config.limits, config.version)
                .await
            {
                Ok(()) => {
                    outcome.items += 1;
                    self.mark(config);
                }
                Err(error) => {
                    tracing::warn!(community = %config.community, %error, "config sync: limits not pushed");
                    if repair {
                        self.budget.note_lost_limits(&config.community);
                    }
                    outcome.failures += 1;
                }
            }
        }
        outcome
    }
}
