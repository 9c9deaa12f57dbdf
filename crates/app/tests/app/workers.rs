//! The background jobs, one pass at a time (`tick`), and the runner: loops,
//! leases across replicas, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use spendgate::domain::{CommunityId, Limits, Micros, Timestamp, TokenCounts, Ttl};
use spendgate::ports::{Clock, CostSource, ProviderUsage};
use spendgate::workers::{
    ConfigSyncJob, DriftJob, FinalizeReplayJob, GiveUp, Job, LeaseConfig, ReaperJob,
    ReconciliationJob, ReconciliationSettings, Schedule, TickOutcome, WorkerHandle,
};
use spendgate::{ReserveError, Usage};
use spendgate_adapter_memory::{ManualClock, MemoryLease};

use crate::support::{Env, m, memory};

fn now(env: &Env) -> Timestamp {
    env.clock.now()
}

fn reaper(env: &Env) -> ReaperJob {
    let ports = env.sg.ports();
    ReaperJob::new(ports.store.clone(), ports.config.clone())
}

#[tokio::test]
async fn reaper_releases_expired_holds_and_one_failing_community_does_not_stop_the_pass() {
    let env = memory().await;
    let a = env.community("reap-a", 10).await;
    let b = env.community("reap-b", 10).await;
    let ttl = Ttl::from_millis(1_000).unwrap();
    let held_a = env.reserve(env.request(&a, "k1").with_ttl(ttl)).await;
    let held_b = env.reserve(env.request(&b, "k1").with_ttl(ttl)).await;
    env.advance_ms(1_000);
    env.faults.fail_reaps_of(Some(a.clone()));
    let outcome = reaper(&env).tick(now(&env)).await;
    assert_eq!(
        outcome,
        TickOutcome {
            items: 1,
            failures: 1
        }
    );
    assert_eq!(
        env.sg.budget().status(&b, None, None).await.unwrap().holds,
        0
    );
    env.faults.fail_reaps_of(None);
    let outcome = reaper(&env).tick(now(&env)).await;
    assert_eq!(
        outcome,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    assert_eq!(
        env.sg.budget().status(&a, None, None).await.unwrap().holds,
        0
    );
    // Settled guards: nothing is handed over.
    held_a.hand_over().await.unwrap();
    held_b.hand_over().await.unwrap();
}

/// A community of 10 USD that spent 4 USD; then the store loses its data.
async fn spent_then_lost(env: &Env, name: &str) -> (CommunityId, Micros) {
    let c = env.community(name, 10).await;
    let spent = m(4_000_000);
    env.reserve(env.request(&c, "k0"))
        .await
        .finalize(Usage::cost(spent))
        .await
        .unwrap();
    crate::support::lose_store_data(env, &c).await;
    (c, spent)
}

/// The store's committed and limit for `c` this period.
async fn committed_and_limit(env: &Env, c: &CommunityId) -> (Micros, Option<Micros>) {
    let status = env.sg.budget().status(c, None, None).await.unwrap();
    (status.committed, status.limits.map(|l| l.limit))
}

/// The store loses its data under a running config sync that already
/// pushed the community's limits: the first reserve refused as not
/// configured makes the next pass rebuild the community's period from the
/// usage log and then push its limits again (a pass that skipped what it
/// had pushed left every reserve refused until a restart), so reserves
/// come back and count what was spent before the loss; the pass after
/// skips what did not change.
#[tokio::test]
async fn config_sync_repairs_limits_a_store_lost_once_a_reserve_finds_them_missing() {
    let env = memory().await;
    let c = env.community("sync", 10).await;
    let ports = env.sg.ports();
    let job = ConfigSyncJob::new(ports.config.clone(), env.sg.budget().clone());
    assert_eq!(job.tick(now(&env)).await.failures, 0);
    let spent = m(4_000_000);
    env.reserve(env.request(&c, "k0"))
        .await
        .finalize(Usage::cost(spent))
        .await
        .unwrap();
    crate::support::lose_store_data(&env, &c).await;
    assert_eq!(
        job.tick(now(&env)).await.items,
        0,
        "unchanged, and no reserve has found the limits missing yet"
    );
    let refused = env
        .sg
        .budget()
        .reserve(env.request(&c, "k1"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ReserveError::NotConfigured(_)),
        "never accepted without a limit: {refused:?}"
    );
    assert_eq!(
        job.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    assert_eq!(
        committed_and_limit(&env, &c).await,
        (spent, Some(Micros::from_usd(10)))
    );
    assert_eq!(job.tick(now(&env)).await.items, 0, "nothing changed since");
    env.reserve(env.request(&c, "k1"))
        .await
        .cancel()
        .await
        .unwrap();
}

/// A replica started after the store lost its data pushes every limit on
/// its first pass: the period is rebuilt from the usage log first, so the
/// limits never meet counters that forgot what was spent.
#[tokio::test]
async fn config_sync_started_after_a_store_loss_rebuilds_before_it_pushes_limits() {
    let env = memory().await;
    let (c, spent) = spent_then_lost(&env, "fresh-sync").await;
    let started_after = ConfigSyncJob::new(env.sg.ports().config.clone(), env.sg.budget().clone());
    assert_eq!(
        started_after.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    assert_eq!(
        committed_and_limit(&env, &c).await,
        (spent, Some(Micros::from_usd(10)))
    );
}

/// A budget changed after the store lost its data reaches the store only
/// over the rebuilt period.
#[tokio::test]
async fn a_budget_change_after_a_store_loss_rebuilds_before_it_pushes_limits() {
    let env = memory().await;
    let (c, spent) = spent_then_lost(&env, "change-after-loss").await;
    env.sg
        .budget()
        .set_budget(&c, Limits::new(Micros::from_usd(5)))
        .await
        .unwrap();
    assert_eq!(
        committed_and_limit(&env, &c).await,
        (spent, Some(Micros::from_usd(5)))
    );
}

#[tokio::test]
async fn finalize_replay_job_applies_queued_settlements() {
    let env = memory().await;
    let c = env.community("replay-job", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_store_down(true);
    hold.finalize(Usage::cost(m(250))).await.unwrap();
    env.faults.set_store_down(false);
    env.advance_ms(5_000);
    let job = FinalizeReplayJob::new(env.sg.budget().clone(), 100);
    assert_eq!(
        job.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    assert_eq!(
        env.sg
            .budget()
            .status(&c, None, None)
            .await
            .unwrap()
            .committed,
        m(250)
    );
}

fn reconciliation(env: &Env) -> ReconciliationJob {
    ReconciliationJob::new(
        env.reconciliation.clone(),
        env.provider.clone(),
        env.sg.budget().clone(),
        ReconciliationSettings::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finalizes_a_dropped_call_with_the_providers_cost() {
    let env = memory().await;
    let c = env.community("reconcile", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    let key = hold.ticket().hold.key.clone();
    let call = hold.call_id();
    drop(hold);
    assert_eq!(env.handovers(1).await.len(), 1);
    env.provider
        .record(
            call,
            ProviderUsage {
                cost: m(480),
                model: "cheap".into(),
                tokens: TokenCounts {
                    prompt: 1_000,
                    completion: 550,
                },
                completed_at: now(&env),
            },
        )
        .unwrap();
    let job = reconciliation(&env);
    assert_eq!(job.tick(now(&env)).await.items, 0, "not due before 30 s");
    env.advance_ms(30_000);
    assert_eq!(
        job.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.reserved), (m(480), Micros::ZERO));
    let hold_ref = spendgate::domain::HoldRef {
        user: crate::support::user("alice"),
        key,
    };
    let row = env
        .log
        .logged(&c, &hold_ref, Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.source, CostSource::Reconciliation);
    assert!(env.reconciliation.items().unwrap().is_empty());
}

/// The provider reports a cost of 0 for a dropped call whose hold the
/// reaper released and whose tombstone is gone: nothing to release and
/// nothing to charge, so it is done, not retried until the estimate is
/// charged and parked as a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_of_a_cost_of_0_for_a_hold_the_store_forgot_is_done() {
    let env = memory().await;
    let c = env.community("reconcile-forgotten", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    let call = hold.call_id();
    drop(hold);
    assert_eq!(env.handovers(1).await.len(), 1);
    let store = env.sg.ports().store.clone();
    env.advance_ms(3_600_000);
    assert_eq!(store.reap(&c, now(&env)).await.unwrap().count, 1);
    env.advance_ms(25 * 3_600_000);
    store.reap(&c, now(&env)).await.unwrap();
    env.provider
        .record(
            call,
            ProviderUsage {
                cost: Micros::ZERO,
                model: "cheap".into(),
                tokens: TokenCounts::default(),
                completed_at: now(&env),
            },
        )
        .unwrap();
    assert_eq!(
        reconciliation(&env).tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    assert!(env.reconciliation.items().unwrap().is_empty());
    let parked = env.sg.ports().finalize_queue.dead_letter_count().await;
    assert_eq!(parked.unwrap(), 0);
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (Micros::ZERO, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_set_to_release_gives_up_after_three_tries_and_leaves_the_hold_to_the_reaper()
 {
    let env = memory().await;
    let c = env.community("give-up", 10).await;
    drop(env.reserve(env.request(&c, "k1")).await);
    assert_eq!(env.handovers(1).await.len(), 1);
    let job = ReconciliationJob::new(
        env.reconciliation.clone(),
        env.provider.clone(),
        env.sg.budget().clone(),
        ReconciliationSettings {
            on_give_up: GiveUp::Release,
            ..ReconciliationSettings::default()
        },
    );
    env.advance_ms(30_000);
    for wait in [10_000, 20_000, 0] {
        assert_eq!(job.tick(now(&env)).await.failures, 1);
        env.advance_ms(wait);
    }
    assert!(env.reconciliation.items().unwrap().is_empty());
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.holds, status.committed), (1, Micros::ZERO));
    env.advance_ms(300_000);
    assert_eq!(reaper(&env).tick(now(&env)).await.items, 1);
}

#[tokio::test]
async fn drift_monitor_reports_a_cost_the_usage_log_lacks() {
    let env = memory().await;
    let c = env.community("drift", 10).await;
    env.reserve(env.request(&c, "k1"))
        .await
        .finalize(Usage::cost(m(90)))
        .await
        .unwrap();
    let ports = env.sg.ports();
    let job = DriftJob::new(
        ports.store.clone(),
        ports.usage_log.clone(),
        ports.config.clone(),
    );
    assert_eq!(
        job.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 0
        }
    );
    // A cost committed behind the services' back.
    let commit = spendgate::domain::UnheldCommit {
        user: crate::support::user("mallory"),
        key: crate::support::key("k9"),
        actual: m(5),
        period: spendgate::domain::Period::containing(now(&env)).unwrap(),
        model: crate::support::model("cheap"),
    };
    ports
        .store
        .commit_unheld(&c, &commit, now(&env))
        .await
        .unwrap();
    assert_eq!(
        job.tick(now(&env)).await,
        TickOutcome {
            items: 1,
            failures: 1
        }
    );
}

/// The drift gauge's value for `community` in `snapshot`, if set.
fn drift_gauge(
    snapshot: &metrics_util::debugging::Snapshotter,
    community: &spendgate::domain::CommunityId,
) -> Option<f64> {
    snapshot
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == spendgate::workers::drift::DRIFT)
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "community" && l.value() == community.as_str())
        })
        .find_map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
}

#[test]
fn the_drift_gauge_returns_to_zero_once_store_and_log_agree_again() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let env = memory().await;
            let c = env.community("drift-reset", 10).await;
            let ports = env.sg.ports();
            let job = DriftJob::new(
                ports.store.clone(),
                ports.usage_log.clone(),
                ports.config.clone(),
            );
            job.tick(now(&env)).await;
            assert_eq!(drift_gauge(&snapshotter, &c), None, "no drift, no series");
            let commit = spendgate::domain::UnheldCommit {
                user: crate::support::user("mallory"),
                key: crate::support::key("k9"),
                actual: m(5),
                period: spendgate::domain::Period::containing(now(&env)).unwrap(),
                model: crate::support::model("cheap"),
            };
            ports
                .store
                .commit_unheld(&c, &commit, now(&env))
                .await
                .unwrap();
            assert_eq!(job.tick(now(&env)).await.failures, 1);
            assert_eq!(drift_gauge(&snapshotter, &c), Some(5.0));
            // Reading a snapshot zeroes the debugging recorder's gauges:
            // the next drifting pass sets the difference again.
            assert_eq!(job.tick(now(&env)).await.failures, 1);
            // Repaired: the store's sums are the log's again.
            env.sg.budget().rebuild(&c, None).await.unwrap();
            assert_eq!(job.tick(now(&env)).await.failures, 0);
            assert_eq!(drift_gauge(&snapshotter, &c), Some(0.0));
        });
    });
}

/// A job that records how many of its passes overlap.
struct Exclusive {
    running: AtomicU64,
    max_running: AtomicU64,
    passes: AtomicU64,
}

impl Exclusive {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            running: AtomicU64::new(0),
            max_running: AtomicU64::new(0),
            passes: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Job for Exclusive {
    fn name(&self) -> &'static str {
        "exclusive"
    }

    async fn tick(&self, _now: Timestamp) -> TickOutcome {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(15)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.passes.fetch_add(1, Ordering::SeqCst);
        TickOutcome::default()
    }
}

fn replica(
    job: Arc<Exclusive>,
    lease: Arc<MemoryLease>,
    holder: &str,
    clock: Arc<ManualClock>,
) -> WorkerHandle {
    let schedule = Schedule {
        every: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
    };
    WorkerHandle::start(
        vec![(job, schedule)],
        clock,
        Some(LeaseConfig {
            lease,
            holder: holder.into(),
            ttl: Ttl::from_millis(10_000).unwrap(),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_run_a_singleton_pass_at_once_and_the_second_takes_over() {
    let clock = Env::clock_at_mid_november();
    let lease = Arc::new(MemoryLease::default());
    let job = Exclusive::new();
    let first = replica(job.clone(), lease.clone(), "first", clock.clone());
    let second = replica(job.clone(), lease.clone(), "second", clock.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job.max_running.load(Ordering::SeqCst), 1);
    let report = first.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.aborted, Vec::<&str>::new());
    let before = job.passes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        job.passes.load(Ordering::SeqCst) > before,
        "the second replica took over"
    );
    assert_eq!(job.max_running.load(Ordering::SeqCst), 1);
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_once_its_lease_expires() {
    let clock = Env::clock_at_mid_november();
    let lease = Arc::new(MemoryLease::default());
    let job = Exclusive::new();
    let first = replica(job.clone(), lease.clone(), "first", clock.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Killed mid-run: its tasks are aborted and the lease is not released.
    first.abort();
    let second = replica(job.clone(), lease.clone(), "second", clock.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let standby = job.passes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        job.passes.load(Ordering::SeqCst),
        standby,
        "the lease still runs"
    );
    clock.advance(10_000).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        job.passes.load(Ordering::SeqCst) > standby,
        "took over once the lease expired"
    );
    second.shutdown(Duration::from_secs(5)).await;
}

/// A pass that never ends.
struct Stuck;

#[async_trait]
impl Job for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }

    async fn tick(&self, _now: Timestamp) -> TickOutcome {
        std::future::pending::<()>().await;
        TickOutcome::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_passes_in_progress_and_aborts_one_past_the_deadline() {
    let clock = Env::clock_at_mid_november();
    let job = Exclusive::new();
    let handle = WorkerHandle::start(
        vec![
            (
                job.clone() as Arc<dyn Job>,
                Schedule::every(Duration::from_millis(1)),
            ),
            (Arc::new(Stuck), Schedule::every(Duration::from_millis(1))),
        ],
        clock,
        None,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = handle.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.stopped, vec!["exclusive"]);
    assert_eq!(report.aborted, vec!["stuck"]);
    assert_eq!(
        job.running.load(Ordering::SeqCst),
        0,
        "no pass was cut short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_workers_runs_the_standard_jobs_until_shutdown() {
    let env = memory().await;
    let handle = env.sg.start_workers(spendgate::WorkerSettings::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        report.stopped,
        vec![
            "reaper",
            "config_sync",
            "finalize_replay",
            "drift",
            "idempotency_purge",
            "reconciliation"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_handle_killed_mid_replay_and_a_new_one_lose_and_double_nothing() {
    let env = memory().await;
    let c = env.community("killed-handle", 100).await;
    let mut holds = Vec::new();
    for i in 0..50 {
        holds.push(env.reserve(env.request(&c, &format!("k{i}"))).await);
    }
    env.faults.set_store_down(true);
    for (i, hold) in holds.into_iter().enumerate() {
        let actual = m(10 + i64::try_from(i).unwrap());
        hold.finalize(Usage::cost(actual)).await.unwrap();
    }
    env.faults.set_store_down(false);
    env.advance_ms(60_000);
    let settings = || spendgate::WorkerSettings {
        finalize_replay: Schedule::every(Duration::from_millis(1)),
        replay_batch: 3,
        ..spendgate::WorkerSettings::default()
    };
    let first = env.sg.start_workers(settings());
    env.queue_down_to(47).await;
    first.abort();
    // Whatever the first handle had claimed waits out its lease.
    env.advance_ms(60_000);
    let second = env.sg.start_workers(settings());
    env.queue_down_to(0).await;
    second.shutdown(Duration::from_secs(5)).await;
    let expected = m((10..60).sum());
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved),
        (expected, Micros::ZERO)
    );
    assert_eq!(
        env.log.total_cost(&c, status.period).await.unwrap(),
        expected
    );
}
