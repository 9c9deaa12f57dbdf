//! Config sync: limits and pricing from the database into the store and the
//! hot path's configuration cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{CommunityConfig, ConfigProvider};

use super::job::{Job, TickOutcome};
use crate::services::budget::BudgetService;

/// Pushes every enabled community's limits into the store (which may have
/// lost them, as after a Redis restart) and its whole configuration into
/// the service's cache. Only what changed since this job's last successful
/// push is written to the store; the first pass writes everything.
///
/// Limits go through [`BudgetService`]'s push, which rebuilds the current
/// period from the usage log first wherever the store holds no limits (it
/// lost its data): so a replica started after a Redis restart does not
/// hand limits to counters that forgot the period's spend. A community
/// whose limits the store lost while this job had them marked as pushed
/// (a reserve was refused as not configured) is pushed again, with that
/// rebuild, by the next pass.
///
/// A pass writes what it read at its start, so a budget change or an AI
/// switch made meanwhile (on any replica) is newer than its snapshot.
/// Each value carries its row's [`ConfigVersion`](spendgate_domain::ConfigVersion),
/// and the store ([`BudgetStore::set_limits`](spendgate_ports::BudgetStore::set_limits)) and the cache keep the
/// newer of what they hold and what the pass brings: a stale snapshot
/// changes nothing.
pub struct ConfigSyncJob {
    config: Arc<dyn ConfigProvider>,
    budget: BudgetService,
    synced: Mutex<HashMap<CommunityId, CommunityConfig>>,
}

impl ConfigSyncJob {
    /// A sync from `config` into `budget`'s store and cache.
    pub fn new(config: Arc<dyn ConfigProvider>, budget: BudgetService) -> Self {
        Self {
            config,
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
            match self
                .budget
                .push_limits(&config.community, config.limits, config.version)
                .await
            {
                Ok(rebuilt) => {
                    if let Some(report) = rebuilt {
                        tracing::warn!(
                            community = %config.community,
                            before = %report.before,
                            after = %report.after,
                            "config sync: the store held no limits for the community; its period was rebuilt from the usage log before they were pushed"
                        );
                    }
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
