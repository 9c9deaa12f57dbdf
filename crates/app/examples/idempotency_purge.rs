//! Times one idempotency purge pass on PostgreSQL against a large backlog
//! of expired records, and, as same-run references, the statement the
//! purge used before (its primary-key sub-select, batches of 1,000) and
//! one unbounded `DELETE … WHERE keep_until <= now`.
//!
//! ```text
//! cargo run --release -p spendgate --example idempotency_purge -- \
//!     --database postgres://…/bench [--rows 1000000] [--rounds 1]
//! ```
//! Give it a database of its own: it migrates it, and before each timing
//! empties `idempotency_record` and seeds `--rows` expired records shaped
//! like a Cycles lifecycle's three (create, commit, release: 36-character
//! tenant and resource ids, a 32-byte fingerprint, a ~100-byte answer),
//! then runs `VACUUM ANALYZE`. Each line prints records/s and the load
//! average before and after the timing.

use std::time::Instant;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use spendgate::Spendgate;
use spendgate::domain::Timestamp;
use spendgate::workers::{IdempotencyPurgeJob, IdempotencyPurgeSettings, Job};

/// Every seeded record is kept until before this instant.
const NOW_MS: i64 = 1_800_000_000_000;

/// The purge statement before issue 23, for the reference line.
const OLD_PURGE: &str = "DELETE FROM idempotency_record \
     WHERE keep_until <= $1 AND (tenant, operation, resource, request_key) IN ( \
     SELECT tenant, operation, resource, request_key FROM idempotency_record \
     WHERE keep_until <= $1 ORDER BY keep_until LIMIT $2)";

struct Args {
    database: String,
    rows: i64,
    rounds: u32,
}

fn args() -> Result<Args, String> {
    let mut database = None;
    let mut rows = 1_000_000;
    let mut rounds = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database" => database = Some(value()?),
            "--rows" => rows = value()?.parse().map_err(|e| format!("--rows: {e}"))?,
            "--rounds" => rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let database = database.ok_or("--database postgres://… is required")?;
    if !database.starts_with("postgres") {
        return Err("--database must be a PostgreSQL URL".into());
    }
    if rows < 1 {
        return Err("--rows must be positive".into());
    }
    Ok(Args {
        database,
        rows,
        rounds,
    })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Empties the table and writes `rows` expired records, oldest first.
async fn seed(db: &DatabaseConnection, rows: i64) -> Result<(), sea_orm::DbErr> {
    db.execute_unprepared("TRUNCATE idempotency_record").await?;
    db.execute_unprepared(&format!(
        "INSERT INTO idempotency_record (tenant, operation, resource, request_key, \
         fingerprint, response_status, response_body, keep_until) \
         SELECT md5('tenant' || (g % 1000))::uuid::text, \
         (ARRAY['create', 'commit', 'release'])[1 + g % 3], \
         CASE WHEN g % 3 = 0 THEN '' ELSE md5('res' || (g / 3))::uuid::text END, \
         md5('key' || g)::uuid::text, sha256(int8send(g)), 200, \
         convert_to('{{\"reservationId\":\"' || md5('res' || (g / 3))::uuid::text || \
         '\",\"decision\":\"ALLOW\",\"affected\":[],\"expiresAtMs\":' || g || '}}', 'UTF8'), \
         {NOW_MS} - {rows} + g - 1 FROM generate_series(1, {rows}) g"
    ))
    .await?;
    db.execute_unprepared("VACUUM ANALYZE idempotency_record")
        .await?;
    Ok(())
}

async fn left(db: &DatabaseConnection) -> Result<i64, Box<dyn std::error::Error>> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM idempotency_record",
        ))
        .await?
        .ok_or("no count")?;
    Ok(row.try_get::<i64>("", "n")?)
}

fn report(what: &str, rows: i64, started: Instant, load_before: &str, left: i64) {
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // a rate for a person to read
    let rate = rows as f64 / secs;
    println!(
        "{what:<44} {rows:>9} rows in {secs:>7.2} s = {rate:>9.0} records/s \
         ({:.1}x the 6,000/s of 2,000 lifecycles/s); left {left}; load {load_before} -> {}",
        rate / 6_000.0,
        load()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let sg = Spendgate::builder()
        .database(&args.database)
        .build()
        .await?;
    let db = Database::connect(args.database.as_str()).await?;
    let now = Timestamp::from_millis(NOW_MS)?;
    for _ in 0..args.rounds {
        seed(&db, args.rows).await?;
        let job = IdempotencyPurgeJob::new(
            sg.ports().idempotency.clone(),
            IdempotencyPurgeSettings::default(),
        );
        let before = load();
        let started = Instant::now();
        let outcome = job.tick(now).await;
        report(
            "purge pass (batches of 1,000)",
            i64::try_from(outcome.items)?,
            started,
            &before,
            left(&db).await?,
        );

        seed(&db, args.rows).await?;
        let before = load();
        let started = Instant::now();
        let mut deleted = 0_i64;
        loop {
            let result = db
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    db.get_database_backend(),
                    OLD_PURGE,
                    [NOW_MS.into(), 1_000_i64.into()],
                ))
                .await?;
            let n = i64::try_from(result.rows_affected())?;
            deleted += n;
            if n < 1_000 {
                break;
            }
        }
        report(
            "reference: the old statement, 1,000 a call",
            deleted,
            started,
            &before,
            left(&db).await?,
        );

        seed(&db, args.rows).await?;
        let before = load();
        let started = Instant::now();
        let result = db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                db.get_database_backend(),
                "DELETE FROM idempotency_record WHERE keep_until <= $1",
                [NOW_MS.into()],
            ))
            .await?;
        report(
            "reference: one unbounded DELETE",
            i64::try_from(result.rows_affected())?,
            started,
            &before,
            left(&db).await?,
        );
    }
    Ok(())
}
