//! The SQL BudgetStore's hot path, measured like the Redis store's bench
//! (`crates/adapter-redis/benches/lifecycle.rs`): reserve → finalize
//! lifecycles at 1, 16 and 64 in flight spread over 100 communities, and 16
//! in flight on one hot community; lifecycles/s, p50 and p99.
//!
//! ```text
//! cargo bench -p spendgate-adapter-postgres --bench lifecycle
//! ```
//!
//! PostgreSQL: `SPENDGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), in a fresh database
//! dropped afterwards; SQLite: a temporary file. `SPENDGATE_BENCH_SECS`
//! (default 5) sets the duration of each level. Ids have realistic shapes:
//! 36-character UUID communities, 42-character `0x…` users, UUID keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, Database};
use spendgate_adapter_postgres::{SqlBudgetStore, connect_and_migrate, redact};
use spendgate_domain::{
    BudgetPolicy, CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, Reservation, Settlement,
    Timestamp, Ttl, UserId,
};
use spendgate_ports::BudgetStore;

const COMMUNITIES: u64 = 100;
const USERS: u64 = 1_000;

fn uuid(namespace: u32, n: u64) -> String {
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

fn community(n: u64) -> Result<CommunityId> {
    Ok(CommunityId::parse(uuid(0xc0ff_ee00, n))?)
}

fn wallet(n: u64) -> Result<UserId> {
    Ok(UserId::parse(format!(
        "0x52908400098527886E0F7030{n:016X}"
    ))?)
}

fn now() -> Result<Timestamp> {
    let ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    Ok(Timestamp::from_millis(ms)?)
}

fn percentile_ms(sorted: &[u64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[index] as f64 / 1000.0
}

/// Runs lifecycles on `in_flight` tasks over `communities` communities for
/// `duration`; returns latencies in microseconds.
async fn lifecycles(
    store: &Arc<SqlBudgetStore>,
    in_flight: u64,
    communities: u64,
    duration: Duration,
    round: u64,
) -> Result<Vec<u64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..in_flight {
        let store = Arc::clone(store);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let ttl = Ttl::from_secs(60)?;
            let tag = round * 1_000 + task;
            let mut n = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let c = community((tag + n) % communities)?;
                let user = wallet((tag * 7 + n) % USERS)?;
                let key = IdempotencyKey::parse(uuid(u32::try_from(tag)?, n))?;
                let started = Instant::now();
                let reservation = Reservation {
                    user: user.clone(),
                    key: key.clone(),
                    estimate: Micros::new(2_500)?,
                    model: ModelAlias::parse("fast-code")?,
                    ttl,
                };
                store.reserve(&c, &reservation, now()?).await?;
                let settlement = Settlement {
                    user,
                    key,
                    actual: Micros::new(2_100)?,
                };
                store.finalize(&c, &settlement, now()?).await?;
                latencies.push(u64::try_from(started.elapsed().as_micros())?);
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

async fn measure(backend: &str, url: &str, duration: Duration) -> Result<()> {
    let db = connect_and_migrate(url).await?;
    let store = Arc::new(SqlBudgetStore::new(db.clone(), BudgetPolicy::default()));
    for n in 0..COMMUNITIES {
        store
            .set_limits(&community(n)?, Limits::new(Micros::MAX))
            .await?;
    }
    let levels = [
        (1, COMMUNITIES),
        (16, COMMUNITIES),
        (64, COMMUNITIES),
        (16, 1),
    ];
    for (round, (in_flight, communities)) in (0_u64..).zip(levels) {
        let mut latencies = lifecycles(&store, in_flight, communities, duration, round).await?;
        latencies.sort_unstable();
        println!(
            "| {backend} | {in_flight} | {communities} | {:.0} | {:.2} | {:.2} |",
            latencies.len() as f64 / duration.as_secs_f64(),
            percentile_ms(&latencies, 50),
            percentile_ms(&latencies, 99)
        );
    }
    db.close().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let secs: u64 = std::env::var("SPENDGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    println!("| backend | in flight | communities | lifecycles/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");

    let admin_url = std::env::var("SPENDGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = Database::connect(admin_url.as_str())
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&admin_url)))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() % 1_000_000_000;
    let name = format!("sg_bench_{}_{nanos}", std::process::id());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let (path, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), None), |(p, q)| (p, Some(q)));
    let (base, _) = path.rsplit_once('/').context("the URL names no database")?;
    let url = match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    };
    let pg = measure("PostgreSQL", &url, duration).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    pg?;

    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    measure("SQLite", &url, duration).await?;
    Ok(())
}
