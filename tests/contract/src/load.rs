//! The load harness the store benchmarks share, so that the Redis, Redis
//! Cluster, PostgreSQL and SQLite numbers come from the same loop and can
//! be read side by side.
//!
//! Ids have realistic shapes: 36-character UUID communities and keys,
//! 42-character `0x…` wallet users; each lifecycle is a reserve of 2,500
//! µUSD on `fast-code` followed by a finalize of 2,100 µUSD, stamped with
//! the wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spendgate_domain::{
    CommunityId, IdempotencyKey, Micros, ModelAlias, Reservation, Settlement, Ttl, UserId,
};
use spendgate_ports::{BudgetStore, Clock, StoreError, SystemClock};

/// Users the lifecycles spread over.
pub const USERS: u64 = 1_000;

/// A UUID-shaped id (36 characters) from a namespace and a number.
pub fn uuid(namespace: u32, n: u64) -> String {
    let hex = format!("{namespace:08x}{n:024x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The `n`-th benchmark community.
pub fn community(n: u64) -> CommunityId {
    CommunityId::parse(uuid(0xc0ff_ee00, n)).unwrap()
}

/// The `n`-th wallet-shaped user: `0x` and 40 hex digits.
pub fn wallet(n: u64) -> UserId {
    UserId::parse(format!("0x52908400098527886E0F7030{n:016X}")).unwrap()
}

/// The `n`-th idempotency key of task `task`.
pub fn idempotency_key(task: u64, n: u64) -> IdempotencyKey {
    IdempotencyKey::parse(uuid(u32::try_from(task).unwrap_or(u32::MAX), n)).unwrap()
}

/// The `p`-th percentile of sorted microsecond latencies, in milliseconds.
#[allow(clippy::cast_precision_loss)] // display only
pub fn percentile_ms(sorted_us: &[u64], p: usize) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = (sorted_us.len() * p / 100).min(sorted_us.len() - 1);
    sorted_us[index] as f64 / 1000.0
}

/// What one load level measured.
#[derive(Debug, Clone)]
pub struct LifecycleRun {
    /// Lifecycle latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// How long the level ran.
    pub elapsed: Duration,
}

impl LifecycleRun {
    /// Completed lifecycles per second.
    #[allow(clippy::cast_precision_loss)] // display only
    pub fn per_second(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency in milliseconds.
    pub fn percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
}

/// Runs reserve → finalize lifecycles on `in_flight` tasks spread over
/// communities `0..communities` for `duration`. `round` keeps keys of
/// successive levels apart. The communities must have limits set.
///
/// # Errors
/// The first store error any task met.
pub async fn lifecycles(
    store: &Arc<dyn BudgetStore>,
    in_flight: u64,
    communities: u64,
    duration: Duration,
    round: u64,
) -> Result<LifecycleRun, StoreError> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|task| {
            let store = Arc::clone(store);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let ttl = Ttl::from_secs(60).unwrap();
                let tag = round * 1_000 + task;
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let c = community((tag + n) % communities);
                    let user = wallet((tag * 7 + n) % USERS);
                    let key = idempotency_key(tag, n);
                    let t = Instant::now();
                    let reservation = Reservation {
                        user: user.clone(),
                        key: key.clone(),
                        estimate: Micros::new(2_500).unwrap(),
                        model: ModelAlias::parse("fast-code").unwrap(),
                        ttl,
                    };
                    store.reserve(&c, &reservation, SystemClock.now()).await?;
                    let settlement = Settlement {
                        user,
                        key,
                        actual: Micros::new(2_100).unwrap(),
                    };
                    store.finalize(&c, &settlement, SystemClock.now()).await?;
                    latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                Ok::<_, StoreError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.unwrap()?);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Ok(LifecycleRun {
        latencies_us,
        elapsed,
    })
}
