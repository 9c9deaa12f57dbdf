//! The Redis BudgetStore's hot path, measured: reserve → finalize
//! lifecycles at 1, 16 and 64 in flight, Redis CPU per script call, and
//! memory per live hold and per retained finalize marker.
//!
//! ```text
//! cargo bench -p spendgate-adapter-redis --bench lifecycle
//! ```
//!
//! By default the bench starts its own `redis-server` (from `PATH`) on a
//! free port, so other clients cannot disturb the numbers; set
//! `SPENDGATE_BENCH_REDIS_URL` to use a running server instead (it must be
//! one you may `FLUSHALL` and `CONFIG RESETSTAT`).
//! `SPENDGATE_BENCH_SECS` (default 10) sets the duration of each
//! concurrency level. Ids are realistic: 36-character UUID communities,
//! 42-character `0x…` wallet users, 36-character idempotency keys.

// The tests' throw-away server, shared rather than copied; a bench panics
// like a test when the server it needs cannot start.
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/redis/own_redis.rs"]
mod own_redis;

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use own_redis::OwnRedis;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::script::Op;
use spendgate_contract::load::{self, USERS};
use spendgate_domain::{
    BudgetPolicy, ConfigVersion, IdempotencyKey, Limits, Micros, ModelAlias, Reservation,
    Settlement, Timestamp, Ttl, UserId,
};
use spendgate_ports::BudgetStore;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const COMMUNITIES: u64 = 100;
const MEMORY_SAMPLE: u64 = 100_000;

fn now() -> Res<Timestamp> {
    let ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    Ok(Timestamp::from_millis(ms)?)
}

fn reservation(user: UserId, key: IdempotencyKey, ttl: Ttl) -> Res<Reservation> {
    Ok(Reservation {
        user,
        key,
        estimate: Micros::new(2_500)?,
        model: ModelAlias::parse("fast-code")?,
        ttl,
    })
}

fn info(admin: &mut redis::Connection, section: &str) -> Res<String> {
    Ok(redis::cmd("INFO").arg(section).query(admin)?)
}

fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

fn used_memory(admin: &mut redis::Connection) -> Res<i64> {
    let text = info(admin, "memory")?;
    Ok(info_field(&text, "used_memory")
        .ok_or("no used_memory")?
        .parse()?)
}

fn redis_cpu(admin: &mut redis::Connection) -> Res<f64> {
    let text = info(admin, "cpu")?;
    let sys: f64 = info_field(&text, "used_cpu_sys").ok_or("no cpu")?.parse()?;
    let user: f64 = info_field(&text, "used_cpu_user")
        .ok_or("no cpu")?
        .parse()?;
    Ok(sys + user)
}

/// (calls, usec_per_call) of EVALSHA since the last `CONFIG RESETSTAT`.
fn evalsha_stats(admin: &mut redis::Connection) -> Res<(u64, f64)> {
    let text = info(admin, "commandstats")?;
    let line = info_field(&text, "cmdstat_evalsha").ok_or("no evalsha stats")?;
    let mut calls = 0;
    let mut per_call = 0.0;
    for part in line.split(',') {
        if let Some(v) = part.strip_prefix("calls=") {
            calls = v.parse()?;
        } else if let Some(v) = part.strip_prefix("usec_per_call=") {
            per_call = v.parse()?;
        }
    }
    Ok((calls, per_call))
}

/// Every command's line of `INFO commandstats` (the commands a script
/// runs are counted too), for `SPENDGATE_BENCH_COMMANDSTATS=1`.
fn print_commandstats(admin: &mut redis::Connection) -> Res<()> {
    let text = info(admin, "commandstats")?;
    for line in text.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("    {line}");
    }
    Ok(())
}

fn reset_stats(admin: &mut redis::Connection) -> Res<()> {
    redis::cmd("CONFIG").arg("RESETSTAT").exec(admin)?;
    Ok(())
}

/// Runs `count` calls of `call(i)` with `in_flight` concurrent tasks.
async fn spread<F, Fut>(count: u64, in_flight: u64, call: F) -> Res<()>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let call = Arc::new(call);
    let mut tasks = Vec::new();
    for task in 0..in_flight {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = task;
            while i < count {
                call(i).await?;
                i += in_flight;
            }
            Res::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The keys and arguments of the reference call: reserve's shape (four
/// keys on one tag, eight arguments of a reserve's sizes), so that the
/// empty script pays the same argument passing as the real one.
const REFERENCE_ARGS: [&str; 13] = [
    "4",
    "sg:{bench-ref}:r",
    "sg:{bench-ref}:x",
    "sg:{bench-ref}:e:17645000000",
    "sg:{bench-ref}:u:2026-11",
    "digest-12-by",
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "1500",
    "cheap",
    "1764500000000",
    "1764500060000",
    "2026-11",
    "80",
];

/// `redis-benchmark -c 50 -n 200000 EVALSHA <return 1>` with
/// [`REFERENCE_ARGS`]: its summary line and the server-side usec_per_call
/// of that empty script (the floor every reserve call pays on this machine
/// at this moment).
fn reference_line(url: &str, admin: &mut redis::Connection) -> Res<(String, f64)> {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query(admin)?;
    reset_stats(admin)?;
    let port = url.rsplit(':').next().ok_or("no port in url")?;
    let out = Command::new("redis-benchmark")
        .args([
            "-p", port, "-c", "50", "-n", "200000", "-q", "EVALSHA", &sha,
        ])
        .args(REFERENCE_ARGS)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // -q prints progress with carriage returns; keep the final line.
    let line = text
        .rsplit(['\r', '\n'])
        .map(str::trim)
        .find(|l| l.contains("requests per second"))
        .unwrap_or("redis-benchmark printed no result")
        .to_owned();
    let (_, per_call) = evalsha_stats(admin)?;
    Ok((line, per_call))
}

async fn run() -> Res<()> {
    let secs: u64 = std::env::var("SPENDGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (_server, url) = match std::env::var("SPENDGATE_BENCH_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = OwnRedis::start();
            let url = server.url();
            (Some(server), url)
        }
    };
    let mut admin = redis::Client::open(url.as_str())?.get_connection()?;
    redis::cmd("FLUSHALL").exec(&mut admin)?;
    let server_info = info(&mut admin, "server")?;
    println!(
        "redis {} at {url}; {} s per level",
        info_field(&server_info, "redis_version").unwrap_or_default(),
        secs
    );
    let store = RedisBudgetStore::connect(&url, BudgetPolicy::default())
        .await?
        .with_timeout(Duration::from_secs(5));
    for n in 0..COMMUNITIES {
        store
            .set_limits(
                &load::community(n),
                Limits::new(Micros::MAX),
                ConfigVersion::ZERO,
            )
            .await?;
    }

    let shared: Arc<dyn BudgetStore> = Arc::new(store.clone());
    println!("\n## lifecycles (reserve -> finalize)");
    println!(
        "in_flight lifecycles/s   p50_ms   p99_ms  redis_cpu  cpu_us/lifecycle  evalsha_usec_per_call"
    );
    for (round, in_flight) in [1u64, 16, 64].into_iter().enumerate() {
        reset_stats(&mut admin)?;
        let cpu_before = redis_cpu(&mut admin)?;
        let run = load::lifecycles(
            &shared,
            in_flight,
            COMMUNITIES,
            Duration::from_secs(secs),
            u64::try_from(round)? + 1,
        )
        .await?;
        let elapsed = run.elapsed.as_secs_f64();
        let cpu_seconds = redis_cpu(&mut admin)? - cpu_before;
        let (_, per_call) = evalsha_stats(&mut admin)?;
        println!(
            "{in_flight:>9} {:>13.0} {:>8.3} {:>8.3} {:>9.0}% {:>17.2} {:>22.2}",
            run.per_second(),
            run.percentile_ms(50),
            run.percentile_ms(99),
            cpu_seconds / elapsed * 100.0,
            cpu_seconds * 1e6 / run.latencies_us.len().max(1) as f64,
            per_call
        );
    }

    println!("\n## Redis time per script (INFO commandstats evalsha usec_per_call; INFO cpu)");
    redis::cmd("FLUSHALL").exec(&mut admin)?;
    let c = load::community(0);
    store
        .set_limits(&c, Limits::new(Micros::MAX), ConfigVersion::ZERO)
        .await?;
    let base = now()?;
    let calls: u64 = 50_000;
    let mut per_script = (0.0, 0.0);
    let phases: [(&str, u64); 5] = [
        ("reserve", calls),
        ("extend", calls),
        ("finalize", calls),
        ("reap (1,000 expired holds per call)", 10),
        ("status", 1_000),
    ];
    for (name, count) in phases {
        reset_stats(&mut admin)?;
        let cpu_before = redis_cpu(&mut admin)?;
        let store = store.clone();
        let c = c.clone();
        match name {
            "reserve" => {
                spread(count, 16, move |i| {
                    let (store, c) = (store.clone(), c.clone());
                    async move {
                        let r = reservation(
                            load::wallet(i % USERS),
                            load::idempotency_key(0, i),
                            Ttl::from_secs(60)?,
                        )?;
                        store.reserve(&c, &r, base).await?;
                        Ok(())
                    }
                })
                .await?;
            }
            "extend" => {
                spread(count, 16, move |i| {
                    let (store, c) = (store.clone(), c.clone());
                    async move {
                        let hold = spendgate_domain::HoldRef {
                            user: load::wallet(i % USERS),
                            key: load::idempotency_key(0, i),
                        };
                        store.extend(&c, &hold, Ttl::from_secs(120)?, base).await?;
                        Ok(())
                    }
                })
                .await?;
            }
            "finalize" => {
                spread(count, 16, move |i| {
                    let (store, c) = (store.clone(), c.clone());
                    async move {
                        let s = Settlement {
                            user: load::wallet(i % USERS),
                            key: load::idempotency_key(0, i),
                            actual: Micros::new(2_100)?,
                        };
                        store.finalize(&c, &s, base).await?;
                        Ok(())
                    }
                })
                .await?;
            }
            "status" => {
                let period = spendgate_domain::Period::containing(base)?;
                spread(count, 16, move |_| {
                    let (store, c) = (store.clone(), c.clone());
                    async move {
                        store.status(&c, period).await?;
                        Ok(())
                    }
                })
                .await?;
            }
            _ => {
                let reaped_community = load::community(COMMUNITIES + 1);
                store
                    .set_limits(
                        &reaped_community,
                        Limits::new(Micros::MAX),
                        ConfigVersion::ZERO,
                    )
                    .await?;
                let rc = reaped_community.clone();
                let s2 = store.clone();
                spread(count * 1_000, 16, move |i| {
                    let (store, c) = (s2.clone(), rc.clone());
                    async move {
                        let r = reservation(
                            load::wallet(i % USERS),
                            load::idempotency_key(9, i),
                            Ttl::from_millis(1)?,
                        )?;
                        store.reserve(&c, &r, base).await?;
                        Ok(())
                    }
                })
                .await?;
                reset_stats(&mut admin)?;
                let reaped = store.reap(&reaped_community, base.plus_millis(1)?).await?;
                let (calls, per_call) = evalsha_stats(&mut admin)?;
                println!(
                    "{name:<38} {per_call:>9.2} us/call over {calls} calls ({:.2} us per reaped hold, {} reaped)",
                    per_call * calls as f64 / reaped.count.max(1) as f64,
                    reaped.count
                );
                continue;
            }
        }
        let (calls, per_call) = evalsha_stats(&mut admin)?;
        let cpu_per_call = (redis_cpu(&mut admin)? - cpu_before) * 1e6 / calls.max(1) as f64;
        if std::env::var_os("SPENDGATE_BENCH_COMMANDSTATS").is_some() {
            print_commandstats(&mut admin)?;
        }
        match name {
            "reserve" => per_script.0 = per_call,
            "finalize" => per_script.1 = per_call,
            _ => {}
        }
        println!(
            "{name:<38} {per_call:>9.2} us/call over {calls} calls (process CPU {cpu_per_call:.2} us/call incl. I/O)"
        );
    }
    println!(
        "reserve + finalize = Redis CPU per lifecycle: {:.2} us",
        per_script.0 + per_script.1
    );
    for op in Op::ALL {
        println!("  sha {:<10} {}", op.name(), op.sha());
    }

    println!("\n## memory (INFO memory used_memory delta, {MEMORY_SAMPLE} each, one community)");
    redis::cmd("FLUSHALL").exec(&mut admin)?;
    let c = load::community(7);
    store
        .set_limits(&c, Limits::new(Micros::MAX), ConfigVersion::ZERO)
        .await?;
    // Let the warm-up allocations settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = used_memory(&mut admin)?;
    {
        let (store, c) = (store.clone(), c.clone());
        spread(MEMORY_SAMPLE, 16, move |i| {
            let (store, c) = (store.clone(), c.clone());
            async move {
                let r = reservation(
                    load::wallet(i % USERS),
                    load::idempotency_key(3, i),
                    Ttl::from_secs(3_600)?,
                )?;
                store.reserve(&c, &r, base).await?;
                Ok(())
            }
        })
        .await?;
    }
    let with_holds = used_memory(&mut admin)?;
    {
        let (store, c) = (store.clone(), c.clone());
        spread(MEMORY_SAMPLE, 16, move |i| {
            let (store, c) = (store.clone(), c.clone());
            async move {
                let s = Settlement {
                    user: load::wallet(i % USERS),
                    key: load::idempotency_key(3, i),
                    actual: Micros::new(2_100)?,
                };
                store.finalize(&c, &s, base).await?;
                Ok(())
            }
        })
        .await?;
    }
    // Steady state: once the holds' expiry buckets are past, reap drops the
    // index entries finalize left behind; the markers (24 h) stay.
    let reaped = store.reap(&c, base.plus_millis(3_600_000 + 100)?).await?;
    if reaped.count != 0 {
        return Err("reap released finalized holds".into());
    }
    let with_markers = used_memory(&mut admin)?;
    let sample = MEMORY_SAMPLE as f64;
    println!(
        "per live hold:        {:>6.1} B",
        (with_holds - baseline) as f64 / sample
    );
    println!(
        "per retained marker:  {:>6.1} B",
        (with_markers - baseline) as f64 / sample
    );

    println!("\n## reference (same server, same run)");
    let (line, per_call) = reference_line(&url, &mut admin)?;
    println!(
        "redis-benchmark -c 50 -n 200000 EVALSHA <sha of 'return 1'> with reserve's 4 keys and 8 arguments: {line}"
    );
    println!("  server side: {per_call:.2} us/call for the empty script");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average at the end: {}", load.trim());
    Ok(())
}

fn main() -> Res<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
