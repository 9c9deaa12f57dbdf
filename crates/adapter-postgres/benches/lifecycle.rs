//! The SQL BudgetStore's hot path, measured like the Redis store's bench
//! (the shared loop of `spendgate_contract::load`): reserve → finalize
//! lifecycles at 1, 16 and 64 in flight spread over 100 communities, 16 in
//! flight over 16 communities (issue 8's target shape) and 16 in flight on
//! one hot community; lifecycles/s, p50 and p99. On PostgreSQL the run ends
//! with `pgbench` against the same server at 1 and 16 clients (select-only
//! and a one-row update), the reference the figures are read against: a
//! lifecycle is two store operations, so it compares with half the tx/s.
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

#[path = "support/pgbench.rs"]
mod pgbench;
mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use spendgate_adapter_postgres::{SqlBudgetStore, connect_and_migrate};
use spendgate_contract::load;
use spendgate_domain::{BudgetPolicy, ConfigVersion, Limits, Micros};
use spendgate_ports::BudgetStore;

const COMMUNITIES: u64 = 100;

async fn measure(backend: &str, url: &str, duration: Duration) -> Result<()> {
    let db = connect_and_migrate(url).await?;
    let store: Arc<dyn BudgetStore> =
        Arc::new(SqlBudgetStore::new(db.clone(), BudgetPolicy::default()));
    for n in 0..COMMUNITIES {
        store
            .set_limits(
                &load::community(n),
                Limits::new(Micros::MAX),
                ConfigVersion::ZERO,
            )
            .await?;
    }
    let levels = [
        (1, COMMUNITIES),
        (16, COMMUNITIES),
        (64, COMMUNITIES),
        (16, 16),
        (16, 1),
    ];
    for (round, (in_flight, communities)) in (0_u64..).zip(levels) {
        let run = load::lifecycles(&store, in_flight, communities, duration, round).await?;
        println!(
            "| {backend} | {in_flight} | {communities} | {:.0} | {:.2} | {:.2} |",
            run.per_second(),
            run.percentile_ms(50),
            run.percentile_ms(99)
        );
    }
    db.close().await?;
    if backend == "PostgreSQL" {
        pgbench::init(url)?;
        for clients in [1, 16] {
            pgbench::reference(url, clients, duration)?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let duration = support::level_duration(5);
    println!("| backend | in flight | communities | lifecycles/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    support::on_each_backend(|backend, url| async move { measure(backend, &url, duration).await })
        .await
}
