//! Times one reaper pass over many configured communities of which few
//! have an expired hold: the pass through the store's due index, and, as
//! the same-run reference, the pass that asks every configured community
//! (what the reaper did before the index).
//!
//! ```text
//! cargo run --release -p spendgate --example reaper_pass -- \
//!     (--redis redis://127.0.0.1:6379/9 | --database postgres://…/bench) \
//!     [--communities 100000] [--due 1000] [--sweep]
//! ```
//! Give it an empty Redis database or PostgreSQL database: it seeds
//! `--communities` communities with limits and `--due` of them with a
//! hold that has expired by the pass. `--sweep` also times the
//! every-community pass (slow on PostgreSQL: one reap per community).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spendgate::Spendgate;
use spendgate::domain::{
    CommunityId, ConfigVersion, IdempotencyKey, Limits, Micros, ModelAlias, Period, Reservation,
    Timestamp, Ttl, UserId,
};
use spendgate::ports::{BudgetStore, CommunityConfig, ConfigProvider};
use spendgate::workers::{Job, ReaperJob, ReaperSettings};
use spendgate_adapter_memory::MemoryConfig;

struct Args {
    redis: Option<String>,
    database: Option<String>,
    communities: usize,
    due: usize,
    sweep: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        redis: None,
        database: None,
        communities: 100_000,
        due: 1_000,
        sweep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis" => args.redis = Some(value()?),
            "--database" => args.database = Some(value()?),
            "--communities" => {
                args.communities = value()?
                    .parse()
                    .map_err(|e| format!("--communities: {e}"))?;
            }
            "--due" => args.due = value()?.parse().map_err(|e| format!("--due: {e}"))?,
            "--sweep" => args.sweep = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.due > args.communities {
        return Err("--due cannot exceed --communities".into());
    }
    Ok(args)
}

fn community(i: usize) -> Result<CommunityId, Box<dyn std::error::Error>> {
    Ok(CommunityId::parse(format!("bench-{i:06}"))?)
}

/// Runs `work` for every index in `0..n`, 32 at a time.
async fn for_each<F, Fut>(n: usize, work: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                work(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut builder = Spendgate::builder();
    let backend = match (&args.redis, &args.database) {
        (Some(url), _) => {
            builder = builder.redis(url.clone());
            "redis"
        }
        (None, Some(url)) => {
            builder = builder.database(url.clone()).sql_store();
            "sql"
        }
        (None, None) => return Err("give --redis or --database".into()),
    };
    let sg = builder.build().await?;
    let store: Arc<dyn BudgetStore> = sg.ports().store.clone();
    // A clock of its own, well before any test's, so only the seeded
    // holds are due.
    let t0 = Timestamp::from_millis(Period::parse("1990-06")?.start().as_millis())?;
    let ttl = Ttl::from_millis(1_000)?;
    let now = t0.plus(ttl)?;

    let seeding = Instant::now();
    let config = Arc::new(MemoryConfig::default());
    {
        let (store, config) = (store.clone(), config.clone());
        for_each(args.communities, move |i| {
            let (store, config) = (store.clone(), config.clone());
            async move {
                let c = community(i).map_err(|e| e.to_string())?;
                let limits = Limits::new(Micros::from_usd(10));
                store
                    .set_limits(&c, limits, ConfigVersion::ZERO)
                    .await
                    .map_err(|e| e.to_string())?;
                config
                    .upsert(&CommunityConfig {
                        community: c,
                        ai_enabled: true,
                        limits,
                        pricing_overrides: Default::default(),
                        version: ConfigVersion::ZERO,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
    }
    {
        let store = store.clone();
        let stride = args.communities / args.due.max(1);
        for_each(args.due, move |i| {
            let store = store.clone();
            async move {
                let c = community(i * stride).map_err(|e| e.to_string())?;
                let reservation = Reservation {
                    user: UserId::parse("alice").map_err(|e| e.to_string())?,
                    key: IdempotencyKey::parse("k1").map_err(|e| e.to_string())?,
                    estimate: Micros::from_usd(1),
                    model: ModelAlias::parse("cheap").map_err(|e| e.to_string())?,
                    ttl,
                };
                store
                    .reserve(&c, &reservation, t0)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
    }
    println!(
        "backend {backend}: seeded {} communities, {} with an expired hold, in {:.1} s",
        args.communities,
        args.due,
        seeding.elapsed().as_secs_f64()
    );

    let indexed = ReaperJob::with_settings(
        store.clone(),
        config.clone(),
        ReaperSettings {
            full_sweep_every: 0,
            ..ReaperSettings::default()
        },
    );
    let started = Instant::now();
    let outcome = indexed.tick(now).await;
    report(
        "indexed pass",
        started.elapsed(),
        outcome.items,
        outcome.failures,
    );
    let started = Instant::now();
    let again = indexed.tick(now).await;
    report(
        "indexed pass, nothing due",
        started.elapsed(),
        again.items,
        again.failures,
    );

    if args.sweep {
        let sweep = ReaperJob::with_settings(
            store,
            config,
            ReaperSettings {
                full_sweep_every: 1,
                ..ReaperSettings::default()
            },
        );
        let started = Instant::now();
        let outcome = sweep.tick(now).await;
        report(
            "every-community pass (reference)",
            started.elapsed(),
            outcome.items,
            outcome.failures,
        );
    }
    Ok(())
}

fn report(what: &str, took: Duration, items: u64, failures: u64) {
    println!(
        "{what}: {:.3} s, {items} holds released, {failures} failures",
        took.as_secs_f64()
    );
}
