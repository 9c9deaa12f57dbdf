//! What the SQL benches share: each bench runs once on a scratch
//! PostgreSQL database (created next to `SPENDGATE_TEST_DATABASE_URL`'s and
//! dropped afterwards) and once on a temporary SQLite file.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, Database};
use spendgate_ports::redact_url;

/// `SPENDGATE_BENCH_SECS`, or `default_secs`.
pub fn level_duration(default_secs: u64) -> Duration {
    let secs = std::env::var("SPENDGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// Runs `measure(backend name, database URL)` on PostgreSQL, then SQLite.
pub async fn on_each_backend<F, Fut>(measure: F) -> Result<()>
where
    F: Fn(&'static str, String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let admin_url = std::env::var("SPENDGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = Database::connect(admin_url.as_str())
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(&admin_url)))?;
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
    let pg = measure("PostgreSQL", url).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    pg?;

    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    measure("SQLite", url).await
}
