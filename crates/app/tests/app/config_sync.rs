//! Config sync against configuration changed during its pass (issue 23):
//! a pass that read its snapshot before a budget change and an AI switch
//! turned off puts neither back, on every store (memory, SQLite,
//! PostgreSQL, Redis, Redis Cluster), in the store or in the cache; and a
//! budget change racing an AI switch keeps both.

use std::sync::Arc;

use async_trait::async_trait;
use spendgate::domain::{CommunityId, ConfigVersion, Limits};
use spendgate::ports::{CommunityConfig, ConfigProvider, RepoError};
use spendgate::workers::{ConfigSyncJob, Job};
use spendgate::{ReserveError, ReserveRequest, Spendgate};
use tokio::sync::Notify;

use crate::support::servers::{PgDb, redis_cluster_urls, redis_url};
use crate::support::{community, key, model, usd, user};

/// Which read a [`Held`] configuration holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeldRead {
    /// `active_communities`: a config sync pass, between its snapshot and
    /// its writes.
    Snapshot,
    /// `community`: a budget change, at its read of the row.
    Community,
}

/// The configuration whose held read reads, says so, then waits until
/// released.
struct Held {
    inner: Arc<dyn ConfigProvider>,
    read: HeldRead,
    taken: Notify,
    release: Notify,
}

impl Held {
    fn over(inner: Arc<dyn ConfigProvider>, read: HeldRead) -> Arc<Self> {
        Arc::new(Self {
            inner,
            read,
            taken: Notify::new(),
            release: Notify::new(),
        })
    }

    async fn hold<T>(&self, read: HeldRead, value: T) -> T {
        if read == self.read {
            self.taken.notify_one();
            self.release.notified().await;
        }
        value
    }
}

#[async_trait]
impl ConfigProvider for Held {
    async fn active_communities(&self) -> Result<Vec<CommunityConfig>, RepoError> {
        let snapshot = self.inner.active_communities().await;
        self.hold(HeldRead::Snapshot, snapshot).await
    }

    async fn community(&self, c: &CommunityId) -> Result<Option<CommunityConfig>, RepoError> {
        let row = self.inner.community(c).await;
        self.hold(HeldRead::Community, row).await
    }

    async fn upsert(&self, config: &CommunityConfig) -> Result<ConfigVersion, RepoError> {
        self.inner.upsert(config).await
    }

    async fn set_limits(
        &self,
        c: &CommunityId,
        limits: Limits,
    ) -> Result<ConfigVersion, RepoError> {
        self.inner.set_limits(c, limits).await
    }
}

async fn a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg: Spendgate) {
    let budget = sg.budget();
    let spending = community("sync-budget");
    let switched = community("sync-ai-off");
    for c in [&spending, &switched] {
        budget.set_budget(c, Limits::new(usd(10))).await.unwrap();
    }
    let held = Held::over(sg.ports().config.clone(), HeldRead::Snapshot);
    let job = ConfigSyncJob::new(held.clone(), budget.clone());
    let now = sg.ports().clock.now();
    let pass = tokio::spawn(async move { job.tick(now).await });
    held.taken.notified().await;

    // While the pass holds its snapshot: a lower budget, and AI off.
    budget
        .set_budget(&spending, Limits::new(usd(1)))
        .await
        .unwrap();
    let mut off = sg
        .ports()
        .config
        .community(&switched)
        .await
        .unwrap()
        .unwrap();
    off.ai_enabled = false;
    budget.configure(&off).await.unwrap();

    held.release.notify_one();
    assert_eq!(pass.await.unwrap().failures, 0);

    let status = budget.status(&spending, None, None).await.unwrap();
    assert_eq!(status.limits, Some(Limits::new(usd(1))), "the store");
    let request = ReserveRequest::tokens(
        switched.clone(),
        user("alice"),
        key("k1"),
        model("cheap"),
        1,
        1_200,
        800,
    );
    let refused = budget.reserve(request).await;
    assert!(
        matches!(refused, Err(ReserveError::AiDisabled(_))),
        "the cache: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory_a_stale_sync_pass_changes_nothing_newer() {
    let sg = Spendgate::builder().build().await.unwrap();
    a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_stale_sync_pass_changes_nothing_newer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let sg = Spendgate::builder().database(url).build().await.unwrap();
    a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_stale_sync_pass_changes_nothing_newer() {
    let (_db, url) = PgDb::create().await;
    let sg = Spendgate::builder().database(url).build().await.unwrap();
    a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_stale_sync_pass_changes_nothing_newer() {
    let (_db, url) = PgDb::create().await;
    let sg = Spendgate::builder()
        .redis(redis_url())
        .database(url)
        .build()
        .await
        .unwrap();
    a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_stale_sync_pass_changes_nothing_newer() {
    let (_db, url) = PgDb::create().await;
    let urls = redis_cluster_urls();
    let sg = Spendgate::builder()
        .redis_cluster(urls.clone())
        .database(url)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the Redis Cluster at {urls:?}: {e}"));
    a_pass_with_an_older_snapshot_keeps_the_newer_budget_and_ai_switch(sg).await;
}

/// A budget change and an AI switch turned off at the same time, the
/// switch landing while the budget change has read the row: both stay.
/// (A budget change that wrote back the whole row it read turned AI on
/// again: a lost update.)
async fn a_budget_change_racing_an_ai_switch_keeps_both(sg: Spendgate) {
    let c = community("budget-vs-switch");
    sg.budget()
        .set_budget(&c, Limits::new(usd(10)))
        .await
        .unwrap();
    let ports = sg.ports().clone();
    let held = Held::over(ports.config.clone(), HeldRead::Community);
    let changer = Spendgate::builder()
        .settings(sg.budget().settings())
        .store(ports.store.clone())
        .config(held.clone())
        .tier_overrides(ports.tier_overrides.clone())
        .tier_cache(ports.tier_cache.clone())
        .usage_log(ports.usage_log.clone())
        .finalize_queue(ports.finalize_queue.clone())
        .reconciliation_queue(ports.reconciliation.clone())
        .lease(ports.lease.clone())
        .idempotency(ports.idempotency.clone())
        .build()
        .await
        .unwrap();
    let change = {
        let c = c.clone();
        tokio::spawn(async move { changer.budget().set_budget(&c, Limits::new(usd(1))).await })
    };
    held.taken.notified().await;
    let mut off = ports.config.community(&c).await.unwrap().unwrap();
    off.ai_enabled = false;
    sg.budget().configure(&off).await.unwrap();
    held.release.notify_one();
    change.await.unwrap().unwrap();

    let row = ports.config.community(&c).await.unwrap().unwrap();
    assert!(!row.ai_enabled, "the AI switch was turned back on: {row:?}");
    assert_eq!(row.limits, Limits::new(usd(1)), "the budget change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory_a_budget_change_keeps_a_concurrent_ai_switch() {
    let sg = Spendgate::builder().build().await.unwrap();
    a_budget_change_racing_an_ai_switch_keeps_both(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_budget_change_keeps_a_concurrent_ai_switch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let sg = Spendgate::builder().database(url).build().await.unwrap();
    a_budget_change_racing_an_ai_switch_keeps_both(sg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_budget_change_keeps_a_concurrent_ai_switch() {
    let (_db, url) = PgDb::create().await;
    let sg = Spendgate::builder().database(url).build().await.unwrap();
    a_budget_change_racing_an_ai_switch_keeps_both(sg).await;
}
