//! Usage-log append throughput (rows/s) at batch sizes 1, 100 and 1,000, on
//! PostgreSQL (`SPENDGATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, in a fresh database that
//! is dropped afterwards) and on SQLite (a temporary file).
//!
//! Run: `cargo bench -p spendgate-adapter-postgres --bench usage_log_append`.
//! One writer appends new rows (no conflicts) batch after batch; each
//! measurement runs for at least `SPENDGATE_BENCH_SECS` seconds (default 3)
//! and prints a Markdown table row.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use spendgate_adapter_postgres::{SqlUsageLog, connect_and_migrate};
use spendgate_domain::{
    CommunityId, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, TokenCounts, UserId,
};
use spendgate_ports::{CostSource, UsageLog, UsageRecord};

const BATCH_SIZES: [usize; 3] = [1, 100, 1_000];

struct Records {
    community: CommunityId,
    model: ModelAlias,
    period: Period,
    users: Vec<UserId>,
    next: u64,
}

impl Records {
    fn new() -> Result<Self> {
        Ok(Self {
            community: CommunityId::parse("bench-community")?,
            model: ModelAlias::parse("cheap")?,
            period: Period::parse("2026-11")?,
            users: (0..50)
                .map(|u| UserId::parse(format!("0xuser{u:04}")))
                .collect::<Result<_, _>>()?,
            next: 0,
        })
    }

    fn batch(&mut self, size: usize) -> Result<Vec<UsageRecord>> {
        (0..size)
            .map(|_| {
                self.next += 1;
                let n = self.next;
                let user = self.users[usize::try_from(n % 50)?].clone();
                Ok(UsageRecord {
                    community: self.community.clone(),
                    user,
                    key: IdempotencyKey::parse(format!("bench-key-{n:012}"))?,
                    hold_created_at: Timestamp::from_millis(1_764_547_100_000)?,
                    model: self.model.clone(),
                    tokens: TokenCounts {
                        prompt: 1_200,
                        completion: 350,
                    },
                    cost: Micros::new(390)?,
                    estimate: Micros::new(400)?,
                    trace_id: Some(format!("trace-{n}")),
                    source: CostSource::Finalize,
                    period: self.period,
                    created_at: Timestamp::from_millis(1_764_547_200_000)?,
                })
            })
            .collect()
    }
}

async fn measure(backend: &str, url: &str, min: Duration) -> Result<()> {
    let db = connect_and_migrate(url).await?;
    let log = SqlUsageLog::new(db.clone());
    let mut records = Records::new()?;
    for size in BATCH_SIZES {
        // Warm-up: one batch.
        let warm = records.batch(size)?;
        log.append(&warm).await?;
        let start = Instant::now();
        let mut rows = 0_u64;
        let mut batches = 0_u64;
        while start.elapsed() < min {
            let batch = records.batch(size)?;
            let added = log.append(&batch).await?;
            anyhow::ensure!(
                added == u64::try_from(size)?,
                "lost rows: {added} of {size}"
            );
            rows += added;
            batches += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {backend} | {size} | {rows} | {secs:.2} | {:.0} | {:.2} |",
            rows as f64 / secs,
            secs * 1_000.0 / batches as f64
        );
    }
    db.close().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let min = support::level_duration(3);
    println!("| backend | batch | rows | seconds | rows/s | ms/batch |");
    println!("|---|---:|---:|---:|---:|---:|");
    support::on_each_backend(|backend, url| async move { measure(backend, &url, min).await }).await
}
