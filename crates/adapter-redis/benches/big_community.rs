//! One tenant's size against every other tenant's latency: a community
//! whose period holds 200,000 users, read over and over, beside reserves
//! of another community on the same Redis.
//!
//! ```text
//! cargo bench -p spendgate-adapter-redis --bench big_community
//! ```
//!
//! Starts its own `redis-server` (from `PATH`). Prints, in one run:
//! the latency of a status read and of a users page of the big
//! community; as the same-run reference, the latency of the reads the
//! status script made before it was bounded (every member of the user
//! set, then every user's sums: one `EVAL` of that shape); and the
//! p50/p99 of reserve → cancel lifecycles of another community, one at a
//! time, idle, beside five readers of the big community's status, and
//! beside five readers of the old shape.
//! `SPENDGATE_BENCH_LIFECYCLES` (default 2,000) sets lifecycles per
//! phase.

#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/redis/own_redis.rs"]
mod own_redis;

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use own_redis::OwnRedis;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{records_key, user_sums_key};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, HoldRef, IdempotencyKey, Limits, Micros, ModelAlias,
    Period, Reservation, Settlement, Timestamp, Ttl, UserId,
};
use spendgate_ports::{BudgetStore, PageSize};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const USERS: usize = 200_000;
const READERS: usize = 5;

/// The reads the status script made before it was bounded, for the
/// reference line: every member of the period's user set, then every
/// user's sums in chunks of 500.
const OLD_SHAPE: &str = r"
local users = redis.call('SMEMBERS', KEYS[2])
local n = 0
for i = 1, #users, 500 do
  local fields = {}
  for j = i, math.min(i + 499, #users) do fields[#fields + 1] = ARGV[1] .. ':' .. users[j] end
  n = n + #redis.call('HMGET', KEYS[1], unpack(fields))
end
return n
";

/// The `per_mille`‰ sample of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() - 1) * per_mille / 1_000;
    sorted[rank]
}

fn line(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<58} n={:<6} p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
        samples.len(),
        percentile(&samples, 500),
        percentile(&samples, 990),
        samples.last().copied().unwrap_or_default(),
    );
}

async fn seed(url: &str, c: &CommunityId, p: Period) -> Res<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for start in (0..USERS).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in start..start + 10_000 {
            let user = format!("0x{i:040x}");
            pipe.sadd(user_sums_key(c, p), &user).ignore();
            pipe.hset(records_key(c), format!("{p}:{user}"), "1 0")
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

/// Reserve → cancel lifecycles of `c`, one at a time: the latencies of
/// those that completed, and how many failed (the store's own 500 ms
/// timeout: what a caller sees as 503).
async fn lifecycles(
    store: &RedisBudgetStore<redis::aio::ConnectionManager>,
    c: &CommunityId,
    now: Timestamp,
    phase: &str,
    count: usize,
) -> Res<(Vec<Duration>, usize)> {
    let user = UserId::parse("0x00000000000000000000000000000000000000aa")?;
    let mut samples = Vec::with_capacity(count);
    let mut failed = 0;
    for i in 0..count {
        let key = IdempotencyKey::parse(format!("{phase}-{i}"))?;
        let started = Instant::now();
        let reservation = Reservation {
            user: user.clone(),
            key: key.clone(),
            estimate: Micros::new(2_500)?,
            model: ModelAlias::parse("fast-code")?,
            ttl: Ttl::from_millis(60_000)?,
        };
        let hold = HoldRef {
            user: user.clone(),
            key,
        };
        let done = match store.reserve(c, &reservation, now).await {
            Ok(_) => store.cancel(c, &hold, now).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => samples.push(started.elapsed()),
            Err(_) => failed += 1,
        }
    }
    Ok((samples, failed))
}

fn lifecycle_line(name: &str, (samples, failed): (Vec<Duration>, usize)) {
    line(name, samples);
    println!("{:<58} failed (store timeout): {failed}", "");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let count: usize = std::env::var("SPENDGATE_BENCH_LIFECYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let server = OwnRedis::start();
    let url = server.url();
    let store = Arc::new(RedisBudgetStore::connect(&url, BudgetPolicy::default()).await?);
    let now = Timestamp::from_millis(1_794_700_800_000)?;
    let p = Period::containing(now)?;
    let big = CommunityId::parse("big-0000-0000-0000-0000-000000000000")?;
    let other = CommunityId::parse("other-000-0000-0000-0000-000000000000")?;
    for c in [&big, &other] {
        store
            .set_limits(
                c,
                Limits::new(Micros::new(1_000_000_000)?),
                ConfigVersion::ZERO,
            )
            .await?;
    }
    let seed_user = UserId::parse("0x00000000000000000000000000000000000000bb")?;
    let seed_key = IdempotencyKey::parse("seed")?;
    store
        .reserve(
            &big,
            &Reservation {
                user: seed_user.clone(),
                key: seed_key.clone(),
                estimate: Micros::new(1)?,
                model: ModelAlias::parse("fast-code")?,
                ttl: Ttl::from_millis(60_000)?,
            },
            now,
        )
        .await?;
    store
        .finalize(
            &big,
            &Settlement {
                user: seed_user,
                key: seed_key,
                actual: Micros::new(1)?,
            },
            now,
        )
        .await?;
    let started = Instant::now();
    seed(&url, &big, p).await?;
    println!("seeded {USERS} users in {:.1?}", started.elapsed());

    // The old shape takes longer than a client's default response timeout.
    let client = redis::Client::open(url.as_str())?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let old = redis::Script::new(OLD_SHAPE);
    let (records, set) = (records_key(&big), user_sums_key(&big, p));
    let period = p.to_string();

    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let n: usize = old
            .key(&records)
            .key(&set)
            .arg(&period)
            .invoke_async(&mut conn)
            .await?;
        assert!(n >= USERS, "the old shape read {n} users");
        samples.push(t.elapsed());
    }
    line(
        "reference: the old status reads (all users), one call",
        samples,
    );

    let probe = UserId::parse(format!("0x{:040x}", 123_456))?;
    let mut samples = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        store.status_with_user(&big, p, Some(&probe)).await?;
        samples.push(t.elapsed());
    }
    line("status of the big community (totals + one user)", samples);

    let mut samples = Vec::new();
    let mut cursor = None;
    for _ in 0..200 {
        let t = Instant::now();
        let page = store.users(&big, p, cursor.as_ref(), PageSize::MAX).await?;
        samples.push(t.elapsed());
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    line("a users page of the big community (1,000)", samples);

    lifecycle_line(
        "other community, reserve+cancel, idle",
        lifecycles(&store, &other, now, "idle", count).await?,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (store, big, stop, probe) = (store.clone(), big.clone(), stop.clone(), probe.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.status_with_user(&big, p, Some(&probe)).await?;
            }
            Res::Ok(())
        }));
    }
    let busy = lifecycles(&store, &other, now, "status", count).await?;
    stop.store(true, Ordering::Relaxed);
    for reader in readers.drain(..) {
        reader.await??;
    }
    lifecycle_line(
        "other community, beside 5 readers of the big one's status",
        busy,
    );

    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..READERS {
        let (mut conn, stop, old) = (conn.clone(), stop.clone(), old.clone());
        let (records, set, period) = (records.clone(), set.clone(), period.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _: usize = old
                    .key(&records)
                    .key(&set)
                    .arg(&period)
                    .invoke_async(&mut conn)
                    .await?;
            }
            Res::Ok(())
        }));
    }
    let old_busy = lifecycles(&store, &other, now, "old", count.min(200)).await?;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await??;
    }
    lifecycle_line(
        "reference: other community, beside 5 readers of the old shape",
        old_busy,
    );
    Ok(())
}
