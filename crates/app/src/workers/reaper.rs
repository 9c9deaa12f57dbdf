//! The reaper: releases holds whose TTL passed, community by community.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate_domain::Timestamp;
use spendgate_ports::{BudgetStore, ConfigProvider};

use super::job::{Job, TickOutcome};

/// Releases expired holds of every enabled community; one community's
/// error is counted and retried next pass, never stops the pass.
///
/// It walks the enabled communities from configuration; a store index of
/// communities with due holds (so a pass costs O(due), not O(configured))
/// is still to come.
pub struct ReaperJob {
    store: Arc<dyn BudgetStore>,
    config: Arc<dyn ConfigProvider>,
}

impl ReaperJob {
    /// A reaper over `store`, for the communities `config` enables.
    pub fn new(store: Arc<dyn BudgetStore>, config: Arc<dyn ConfigProvider>) -> Self {
        Self { store, config }
    }
}

#[async_trait]
impl Job for ReaperJob {
    fn name(&self) -> &'static str {
        "reaper"
    }

    async fn tick(&self, now: Timestamp) -> TickOutcome {
        let communities = match self.config.active_communities().await {
            Ok(communities) => communities,
            Err(error) => {
                tracing::warn!(%error, "reaper: communities unavailable");
                return TickOutcome {
                    items: 0,
                    failures: 1,
                };
            }
        };
        let mut outcome = TickOutcome::default();
        for config in communities {
            match self.store.reap(&config.community, now).await {
                Ok(reaped) => outcome.items = outcome.items.saturating_add(reaped.count),
                Err(error) => {
                    tracing::warn!(community = %config.community, %error, "reaper: community failed");
                    outcome.failures += 1;
                }
            }
        }
        outcome
    }
}
