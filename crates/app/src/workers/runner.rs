//! Running jobs: a loop of ticks on an interval with jitter until a
//! [`CancellationToken`] fires, a lease per pass for singleton jobs, and a
//! handle that stops them all within a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spendgate_domain::Ttl;
use spendgate_ports::{Clock, Lease};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::job::{Job, TickOutcome};

/// Gauge: when a job last finished a pass (Unix seconds), labelled `job`.
pub const LAST_TICK: &str = "spendgate_job_last_tick_seconds";
/// Histogram: how long a pass took, labelled `job`.
pub const TICK_DURATION: &str = "spendgate_job_tick_seconds";
/// Counter: items a job handled, labelled `job`.
pub const ITEMS: &str = "spendgate_job_items_total";
/// Counter: items a job failed on, labelled `job`.
pub const FAILURES: &str = "spendgate_job_failures_total";
/// Counter: passes skipped because another replica holds the lease,
/// labelled `job`.
pub const STANDBY: &str = "spendgate_job_standby_total";

/// When a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between the end of one pass and the start of the next.
    pub every: Duration,
    /// Up to this much is added to each wait, so replicas drift apart.
    pub jitter: Duration,
}

impl Schedule {
    /// Every `every`, with a tenth of it as jitter.
    pub fn every(every: Duration) -> Self {
        Self {
            every,
            jitter: every / 10,
        }
    }
}

/// The lease a singleton job takes before each pass.
#[derive(Clone)]
pub struct LeaseConfig {
    /// Where leases live (Redis, SQL or memory, like the store).
    pub lease: Arc<dyn Lease>,
    /// This process's holder token.
    pub holder: String,
    /// How long a lease lives without renewal; each pass renews it.
    pub ttl: Ttl,
}

impl std::fmt::Debug for LeaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseConfig")
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A process-unique holder token: the process id and the start instant.
pub fn holder_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("spendgate-{}-{nanos:x}", std::process::id())
}

/// A pseudo-random wait in `0..=max` (no randomness crate needed for
/// spreading replicas apart).
fn jitter(max: Duration, seed: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    // splitmix64
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(z % (max_ms + 1))
}

/// One pass of `job` under its lease: `None` when another replica holds
/// the lease (or the lease store cannot answer: no lease, no pass).
pub async fn run_once(
    job: &dyn Job,
    clock: &dyn Clock,
    lease: Option<&LeaseConfig>,
) -> Option<TickOutcome> {
    let name = job.name();
    let now = clock.now();
    if let (true, Some(config)) = (job.singleton(), lease) {
        match config
            .lease
            .acquire(name, &config.holder, config.ttl, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                metrics::counter!(STANDBY, "job" => name).increment(1);
                return None;
            }
            Err(error) => {
                tracing::warn!(job = name, %error, "lease store unavailable; pass skipped");
                metrics::counter!(STANDBY, "job" => name).increment(1);
                return None;
            }
        }
    }
    let started = Instant::now();
    let span = tracing::info_span!(
        "job_tick",
        job = name,
        items = tracing::field::Empty,
        failures = tracing::field::Empty
    );
    let outcome = job.tick(now).instrument(span.clone()).await;
    span.record("items", outcome.items);
    span.record("failures", outcome.failures);
    metrics::histogram!(TICK_DURATION, "job" => name).record(started.elapsed().as_secs_f64());
    metrics::counter!(ITEMS, "job" => name).increment(outcome.items);
    metrics::counter!(FAILURES, "job" => name).increment(outcome.failures);
    #[allow(clippy::cast_precision_loss)] // a gauge of seconds since 1970
    metrics::gauge!(LAST_TICK, "job" => name).set(clock.now().as_millis() as f64 / 1000.0);
    Some(outcome)
}

/// Runs passes of `job` until `cancel` fires; a pass in progress is
/// finished, then the lease is released.
pub async fn run_loop(
    job: Arc<dyn Job>,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    lease: Option<LeaseConfig>,
    cancel: CancellationToken,
) {
    let mut seed: u64 = u64::from(std::process::id());
    loop {
        if cancel.is_cancelled() {
            break;
        }
        run_once(job.as_ref(), clock.as_ref(), lease.as_ref()).await;
        seed = seed.wrapping_add(1);
        let wait = schedule.every + jitter(schedule.jitter, seed);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if let (true, Some(config)) = (job.singleton(), lease)
        && let Err(error) = config.lease.release(job.name(), &config.holder).await
    {
        tracing::warn!(job = job.name(), %error, "lease not released; it expires by itself");
    }
}

/// Background jobs running on the caller's tokio runtime.
#[derive(Debug)]
pub struct WorkerHandle {
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Jobs that finished their pass and stopped.
    pub stopped: Vec<&'static str>,
    /// Jobs still in a pass at the deadline, aborted.
    pub aborted: Vec<&'static str>,
}

impl WorkerHandle {
    /// Starts one loop per job on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(
        jobs: Vec<(Arc<dyn Job>, Schedule)>,
        clock: Arc<dyn Clock>,
        lease: Option<LeaseConfig>,
    ) -> Self {
        Self::start_with(jobs, clock, lease, CancellationToken::new())
    }

    /// Starts one loop per job, stopped when `cancel` fires (or by
    /// [`WorkerHandle::shutdown`], which cancels it): for jobs built with
    /// the same token, so a long pass can end early at shutdown.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start_with(
        jobs: Vec<(Arc<dyn Job>, Schedule)>,
        clock: Arc<dyn Clock>,
        lease: Option<LeaseConfig>,
        cancel: CancellationToken,
    ) -> Self {
        let tasks = jobs
            .into_iter()
            .map(|(job, schedule)| {
                let name = job.name();
                let task = tokio::spawn(run_loop(
                    job,
                    schedule,
                    clock.clone(),
                    lease.clone(),
                    cancel.child_token(),
                ));
                (name, task)
            })
            .collect();
        Self { cancel, tasks }
    }

    /// A token that stops every job when cancelled (for wiring to a
    /// signal handler).
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Kills every job where it stands, as a crash would: passes are cut
    /// short and leases are not released (they expire). For tests of
    /// crash recovery; use [`WorkerHandle::shutdown`] otherwise.
    pub fn abort(self) {
        for (_, task) in self.tasks {
            task.abort();
        }
    }

    /// Stops every job: each finishes its current pass (and releases its
    /// lease) within `deadline`, or is aborted.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        self.cancel.cancel();
        let until = tokio::time::Instant::now() + deadline;
        let mut report = ShutdownReport::default();
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(until, &mut task).await {
                Ok(_) => report.stopped.push(name),
                Err(_) => {
                    task.abort();
                    report.aborted.push(name);
                }
            }
        }
        report
    }
}
