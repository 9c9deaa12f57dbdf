//! The client of `scripts/chaos`: lifecycles through several `spendgate
//! serve` replicas over HTTP while the script kills and restarts things,
//! and the check of what is left afterwards.
//!
//! ```text
//! chaos_load run   --urls U1,U2,U3 --secs 90 --communities 4 --workers 24 --out ledger.tsv
//! chaos_load check --urls U1,U2,U3 --communities 4 --ledger ledger.tsv --usage usage.tsv
//! ```
//!
//! `run` sets each community's budget (`--limit-micros` for `chaos-0`,
//! which runs out, a thousand times that for the others), then has every
//! worker reserve and finalize (a cost at most the estimate, so nothing
//! may pass a limit) through the replicas in turn, retrying a request
//! that got no answer or a 5xx on the next replica with the same
//! idempotency key, and writes one
//! line per lifecycle: community, user, key, estimate, cost, the reserve's
//! status and the finalize's (`-` when there was none, `none` when no
//! replica ever answered). `check` reads that ledger and the usage log
//! (`community user key cost` per line, as `psql -At -F' '` exports it)
//! and each community's counters, and counts costs lost (a finalize
//! answered 2xx with no usage row, or another cost in it) and doubled (a
//! call logged twice, counters above the log), holds left and limits
//! passed. It exits 1 when any count is not 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn required(args: &[String], name: &str) -> Result<String, Error> {
    arg(args, name).ok_or_else(|| format!("{name} is required").into())
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, Error> {
    match arg(args, name) {
        Some(v) => Ok(v.parse().map_err(|e| format!("{name}: {e}"))?),
        None => Ok(default),
    }
}

/// A small deterministic generator per worker (xorshift64*).
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One request sent to the replicas in turn until one answers with
/// something other than a 5xx, for at most `patience`.
async fn send(
    http: &reqwest::Client,
    urls: &[String],
    start: usize,
    path: &str,
    key: &str,
    body: &Value,
    patience: Duration,
) -> Option<(u16, Value)> {
    let began = Instant::now();
    let mut turn = start;
    while began.elapsed() < patience {
        let url = format!("{}{path}", urls[turn % urls.len()]);
        turn += 1;
        let answer = http
            .post(&url)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = answer {
            let status = response.status().as_u16();
            if status < 500 {
                let value = response.json().await.unwrap_or(Value::Null);
                return Some((status, value));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn set_budgets(
    http: &reqwest::Client,
    urls: &[String],
    communities: u64,
    limit: u64,
) -> Result<(), Error> {
    for c in 0..communities {
        let path = format!("/api/v1/communities/chaos-{c}/budget");
        let mut done = false;
        for turn in 0..50 {
            let url = format!("{}{path}", urls[turn % urls.len()]);
            let answer = http
                .put(&url)
                .header("Idempotency-Key", format!("budget-{c}-{turn}"))
                .json(&json!({ "limit_micros": if c == 0 { limit } else { limit * 1_000 } }))
                .send()
                .await;
            // 200: in the store too. A 202 (saved, the store not updated
            // yet: the cluster's replicas still attaching) is tried again,
            // so the load does not start against a store without limits.
            if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !done {
            return Err(format!("the budget of chaos-{c} could not be set").into());
        }
    }
    Ok(())
}

async fn worker(
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    id: u64,
    communities: u64,
    until: Instant,
) -> Vec<String> {
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x1000_0001));
    let mut lines = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let community = format!("chaos-{}", draw.below(communities));
        let user = format!("u{}", draw.below(5));
        let key = format!("w{id}-{n}");
        let estimate = 1_000 + draw.below(20_000);
        let start = usize::try_from(draw.below(3)).unwrap_or(0);
        let base = format!("/api/v1/communities/{community}/reservations");
        let body = json!({
            "user": user, "model": "cheap", "tier": 1,
            "estimate_micros": estimate, "ttl_ms": 15_000,
        });
        let reserved = send(
            &http,
            &urls,
            start,
            &base,
            &key,
            &body,
            Duration::from_secs(20),
        )
        .await;
        let (reserve_status, hold) = match reserved {
            Some((status, hold)) => (
                status.to_string(),
                (status == 200 || status == 201).then_some(hold),
            ),
            None => ("none".to_owned(), None),
        };
        let (cost, finalize_status) = match hold {
            Some(hold) => {
                let cost = draw.below(estimate + 1);
                tokio::time::sleep(Duration::from_millis(draw.below(200))).await;
                let body = json!({
                    "actual_micros": cost,
                    "model": hold["model"],
                    "period": hold["period"],
                    "created_at_ms": hold["created_at_ms"],
                });
                let path = format!("{base}/{user}/{key}/finalize");
                let answer = send(
                    &http,
                    &urls,
                    start + 1,
                    &path,
                    &key,
                    &body,
                    Duration::from_secs(60),
                )
                .await;
                (
                    cost.to_string(),
                    answer.map_or_else(|| "none".to_owned(), |(s, _)| s.to_string()),
                )
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        lines.push(format!(
            "{community}\t{user}\t{key}\t{estimate}\t{cost}\t{reserve_status}\t{finalize_status}"
        ));
    }
    lines
}

async fn run(args: &[String]) -> Result<(), Error> {
    let urls: Arc<Vec<String>> = Arc::new(
        required(args, "--urls")?
            .split(',')
            .map(str::to_owned)
            .collect(),
    );
    let secs = number(args, "--secs", 90)?;
    let communities = number(args, "--communities", 4)?;
    let workers = number(args, "--workers", 24)?;
    let limit = number(args, "--limit-micros", 2_000_000)?;
    let out = required(args, "--out")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    set_budgets(&http, &urls, communities, limit).await?;
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..workers)
        .map(|id| tokio::spawn(worker(http.clone(), urls.clone(), id, communities, until)))
        .collect();
    let mut lines = Vec::new();
    for task in tasks {
        lines.extend(task.await?);
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        let fields: Vec<&str> = line.split('\t').collect();
        *statuses
            .entry(format!("reserve {}", fields[5]))
            .or_default() += 1;
        *statuses
            .entry(format!("finalize {}", fields[6]))
            .or_default() += 1;
    }
    std::fs::write(&out, lines.join("\n") + "\n")?;
    println!("lifecycles: {}", lines.len());
    for (what, count) in statuses {
        println!("  {what}: {count}");
    }
    Ok(())
}

async fn check(args: &[String]) -> Result<bool, Error> {
    let urls: Vec<String> = required(args, "--urls")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let communities = number(args, "--communities", 4)?;
    let ledger = std::fs::read_to_string(required(args, "--ledger")?)?;
    let usage = std::fs::read_to_string(required(args, "--usage")?)?;
    // (community, user, key) -> costs logged
    let mut logged: BTreeMap<(String, String, String), Vec<i64>> = BTreeMap::new();
    let mut log_sums: BTreeMap<String, i64> = BTreeMap::new();
    for line in usage.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        let cost: i64 = f[3].parse()?;
        logged
            .entry((f[0].to_owned(), f[1].to_owned(), f[2].to_owned()))
            .or_default()
            .push(cost);
        *log_sums.entry(f[0].to_owned()).or_default() += cost;
    }
    let (mut accepted, mut lost, mut uncertain) = (0, 0, 0);
    for line in ledger.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let id = (f[0].to_owned(), f[1].to_owned(), f[2].to_owned());
        match f[6] {
            "200" | "202" => {
                accepted += 1;
                let cost: i64 = f[4].parse()?;
                if logged.get(&id).map(Vec::as_slice) != Some(&[cost]) {
                    lost += 1;
                    println!(
                        "lost: {} {} {} {cost}: logged {:?}",
                        id.0,
                        id.1,
                        id.2,
                        logged.get(&id)
                    );
                }
            }
            "none" => uncertain += 1,
            _ => {}
        }
    }
    let doubled_rows = logged.values().filter(|costs| costs.len() > 1).count();
    let http = reqwest::Client::new();
    let (mut doubled_micros, mut holds_left, mut over_limit) = (0_i64, 0_u64, 0);
    for c in 0..communities {
        let community = format!("chaos-{c}");
        let view: Value = http
            .get(format!("{}/api/v1/communities/{community}/budget", urls[0]))
            .send()
            .await?
            .json()
            .await?;
        let committed = view["committed_micros"].as_i64().unwrap_or(-1);
        let limit = view["limit_micros"].as_i64().unwrap_or(-1);
        let holds = view["holds"].as_u64().unwrap_or(u64::MAX);
        let log = log_sums.get(&community).copied().unwrap_or(0);
        println!(
            "{community}: committed {committed}, usage log {log}, limit {limit}, holds {holds}"
        );
        doubled_micros += (committed - log).max(0);
        if committed < log {
            println!("  the counters are {} below the usage log", log - committed);
            lost += 1;
        }
        holds_left += holds;
        if committed > limit {
            over_limit += 1;
        }
    }
    println!("finalizes answered 2xx: {accepted}; never answered: {uncertain}");
    println!(
        "costs lost: {lost}; calls logged twice: {doubled_rows}; counters above the log: {doubled_micros} micro-USD; holds left: {holds_left}; communities over their limit: {over_limit}"
    );
    Ok(lost == 0 && doubled_rows == 0 && doubled_micros == 0 && holds_left == 0 && over_limit == 0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => run(&args).await,
        Some("check") => {
            if check(&args).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        _ => Err("usage: chaos_load run|check …".into()),
    }
}
