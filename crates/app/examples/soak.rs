//! A soak of the whole library with its workers: reserve → finalize
//! lifecycles from concurrent tasks, 5 % of them dropped mid-stream and
//! reconciled with a provider stub that learns the cost after a delay.
//! At the end every hold must be settled (0 leaked) and every community's
//! committed and logged cost must equal what the calls cost (0 lost, 0
//! doubled). Exits non-zero otherwise.
//!
//! ```text
//! cargo run --release -p spendgate --example soak -- --minutes 10 \
//!     [--redis redis://127.0.0.1:6379] [--database postgres://…|sqlite:…]
//! ```
//! With neither URL it runs on memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use spendgate::domain::{
    CallId, CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, Period, TokenCounts, Ttl,
    UserId,
};
use spendgate::ports::{Clock, ProviderError, ProviderUsage, SystemClock, UsageSource};
use spendgate::workers::{ReconciliationSettings, Schedule};
use spendgate::{Backoff, BudgetSettings, ReserveDecision, ReserveRequest, Spendgate, Usage};

/// A provider that learns a dropped call's cost `delay` after the drop.
#[derive(Default)]
struct SlowProvider {
    known: Mutex<HashMap<CallId, (Instant, ProviderUsage)>>,
    delay: Duration,
}

#[async_trait]
impl UsageSource for SlowProvider {
    async fn usage(&self, call: &CallId) -> Result<Option<ProviderUsage>, ProviderError> {
        let known = self
            .known
            .lock()
            .map_err(|_| ProviderError::Unavailable("poisoned".into()))?;
        Ok(known
            .get(call)
            .filter(|(at, _)| at.elapsed() >= self.delay)
            .map(|(_, usage)| usage.clone()))
    }
}

struct Args {
    minutes: f64,
    redis: Option<String>,
    database: Option<String>,
    tasks: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        minutes: 10.0,
        redis: None,
        database: None,
        tasks: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => {
                args.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?
            }
            "--redis" => args.redis = Some(value()?),
            "--database" => args.database = Some(value()?),
            "--tasks" => args.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// A cheap deterministic pseudo-random number from a counter.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let provider = Arc::new(SlowProvider {
        delay: Duration::from_secs(2),
        ..SlowProvider::default()
    });
    let secs = |s: u32| Ttl::from_secs(s);
    let mut builder = Spendgate::builder()
        .usage_source(provider.clone())
        .settings(BudgetSettings {
            hold_ttl: secs(20)?,
            handover_delay: secs(1)?,
            ..BudgetSettings::default()
        });
    if let Some(url) = &args.redis {
        builder = builder.redis(url.clone());
    }
    if let Some(url) = &args.database {
        builder = builder.database(url.clone());
    }
    let sg = builder.build().await?;
    let run = format!("soak-{}", std::process::id());
    let communities: Vec<CommunityId> = (0..10)
        .map(|i| CommunityId::parse(format!("{run}-c{i}")))
        .collect::<Result<_, _>>()?;
    for c in &communities {
        sg.budget()
            .set_budget(c, Limits::new(Micros::from_usd(1_000_000)))
            .await?;
    }
    let fast = |ms| Schedule::every(Duration::from_millis(ms));
    let workers = sg.start_workers(spendgate::WorkerSettings {
        reaper: fast(1_000),
        finalize_replay: fast(200),
        reconciliation: fast(200),
        reconciliation_settings: ReconciliationSettings {
            max_tries: 10,
            backoff: Backoff::new(secs(1)?, secs(5)?),
            ..ReconciliationSettings::default()
        },
        drift: fast(10_000),
        ..spendgate::WorkerSettings::default()
    });

    let expected: Arc<Mutex<HashMap<CommunityId, i64>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let denied = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut tasks = Vec::new();
    for _ in 0..args.tasks {
        let (sg, communities, expected, counter, dropped, denied, latencies, provider) = (
            sg.clone(),
            communities.clone(),
            expected.clone(),
            counter.clone(),
            dropped.clone(),
            denied.clone(),
            latencies.clone(),
            provider.clone(),
        );
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let model = ModelAlias::parse("cheap").map_err(|e| e.to_string())?;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let r = mix(n);
                let c = &communities[usize::try_from(r % 10).unwrap_or(0)];
                let key = IdempotencyKey::parse(format!("{run}-{n}")).map_err(|e| e.to_string())?;
                let user =
                    UserId::parse(format!("u{}", (r >> 8) % 50)).map_err(|e| e.to_string())?;
                let request = ReserveRequest::tokens(
                    c.clone(),
                    user,
                    key.clone(),
                    model.clone(),
                    1,
                    2_000,
                    1_000,
                );
                let started = Instant::now();
                let hold = match sg.budget().reserve(request).await {
                    Ok(ReserveDecision::Reserved(hold)) => hold,
                    // Fail closed: a store that did not answer in time
                    // denies; the call is not made and costs nothing.
                    Err(spendgate::ReserveError::StoreUnavailable(_)) => {
                        denied.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    other => return Err(format!("unexpected reserve answer {other:?}")),
                };
                let actual = i64::try_from((r >> 16) % 900).unwrap_or(0) + 1;
                let cost = Micros::new(actual).map_err(|e| e.to_string())?;
                if (r >> 32) % 100 < 5 {
                    // The stream drops: the provider learns the cost later.
                    provider.known.lock().map_err(|e| e.to_string())?.insert(
                        hold.call_id(),
                        (
                            Instant::now(),
                            ProviderUsage {
                                cost,
                                model: "cheap".into(),
                                tokens: TokenCounts::default(),
                                completed_at: SystemClock.now(),
                            },
                        ),
                    );
                    drop(hold);
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    hold.finalize(Usage::cost(cost))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.lock().map_err(|e| e.to_string())?.push(micros);
                *expected
                    .lock()
                    .map_err(|e| e.to_string())?
                    .entry(c.clone())
                    .or_default() += actual;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let lifecycles = counter.load(Ordering::Relaxed);
    println!(
        "{lifecycles} calls in {:.1} min: {} dropped mid-stream, {} denied (store did not answer in time)",
        args.minutes,
        dropped.load(Ordering::Relaxed),
        denied.load(Ordering::Relaxed)
    );

    // Quiescence: every hold settled, every queue drained.
    let period = Period::containing(SystemClock.now())?;
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let mut failures = Vec::new();
    loop {
        failures.clear();
        let expected = expected.lock().map_err(|e| e.to_string())?.clone();
        for c in &communities {
            let want = Micros::new(expected.get(c).copied().unwrap_or(0))?;
            let status = sg.budget().status(c, Some(period), None).await?;
            let logged = sg.ports().usage_log.total_cost(c, period).await?;
            if status.holds != 0 || status.committed != want || logged != want {
                failures.push(format!(
                    "{c}: holds {} committed {} logged {} expected {}",
                    status.holds, status.committed, logged, want
                ));
            }
        }
        let queued =
            sg.ports().finalize_queue.len().await? + sg.ports().reconciliation.len().await?;
        if failures.is_empty() && queued == 0 {
            break;
        }
        if Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    workers.shutdown(Duration::from_secs(10)).await;

    let mut latencies = latencies.lock().map_err(|e| e.to_string())?.clone();
    latencies.sort_unstable();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or(0)
    };
    println!(
        "lifecycle latency p50 {} µs, p99 {} µs, p999 {} µs",
        at(0.50),
        at(0.99),
        at(0.999)
    );
    if failures.is_empty() {
        println!(
            "ok: 0 leaked holds, 0 lost or doubled costs across {} communities",
            communities.len()
        );
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        Err(format!("{} communities off", failures.len()).into())
    }
}
