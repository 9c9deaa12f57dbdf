//! `bench`: a load generator. Drives reserve → finalize lifecycles at a
//! chosen concurrency for a duration, against the library directly (the
//! stores of the current settings) or a running server over HTTP, and
//! reports lifecycles per second and the latency of one lifecycle, so a
//! deployment can be measured as it is configured rather than guessed at.
//! With `--cycles-api-key` the lifecycles over HTTP are the Cycles protocol's
//! (create, then commit, under `/v1`), so the two APIs compare on one
//! server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spendgate_domain::{CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, UserId};

use super::open;
use crate::Spendgate;
use crate::inbound::cli::output::{CliError, Exit, Report};
use crate::inbound::cli::{BenchArgs, Console};
use crate::services::budget::{CostBasis, ReserveDecision, ReserveRequest, Usage};
use crate::settings::{Settings, redact_url};

/// Each community's limit: large enough that no run exhausts it (10⁹ USD).
const BENCH_LIMIT_USD: u32 = 1_000_000_000;
/// The estimate held per call, in micro-USD.
const ESTIMATE_MICROS: i64 = 1_000;
/// The cost committed per call, in micro-USD.
const ACTUAL_MICROS: i64 = 900;
/// Highest latency the histogram records, in microseconds (one minute);
/// slower lifecycles are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What the lifecycles run against.
enum Target {
    /// The services in this process.
    Direct(Spendgate),
    /// A running server.
    Http {
        client: reqwest::Client,
        base: String,
        token: Option<String>,
        /// The Cycles key's secret, when the lifecycles are Cycles ones.
        cycles: Option<String>,
    },
}

/// What one task measured.
struct TaskResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn new_histogram() -> Result<Histogram<u64>, CliError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| CliError::Failed(format!("latency histogram: {e}")))
}

fn community(index: usize) -> Result<CommunityId, CliError> {
    CommunityId::parse(format!("bench-{index}"))
        .map_err(|e| CliError::Usage(format!("community id: {e}")))
}

/// `bench`: sets a large budget on `bench-0` … `bench-<K-1>`, runs
/// `--concurrency` tasks for `--duration-secs`, each looping reserve then
/// finalize with keys unique to this run, and reports throughput, latency
/// percentiles and errors by kind. Exits 1 when any lifecycle failed.
///
/// # Errors
/// [`CliError::Usage`] for a zero concurrency, duration or community
/// count or a bad URL; [`CliError::Build`] when the stores cannot be
/// opened; the setup's budget errors.
pub async fn bench(
    settings: &Settings,
    args: BenchArgs,
    console: &mut Console<'_>,
) -> Result<Report, CliError> {
    if args.concurrency == 0 || args.duration_secs == 0 {
        return Err(CliError::Usage(
            "--concurrency and --duration-secs must be at least 1".into(),
        ));
    }
    let cycles = args.cycles_key.as_deref().map(cycles_key).transpose()?;
    // A Cycles key acts for one tenant: every lifecycle goes there.
    let communities = match &cycles {
        Some(_) => 1,
        None => args.communities.unwrap_or(args.concurrency),
    };
    if communities == 0 {
        return Err(CliError::Usage("--communities must be at least 1".into()));
    }
    let community = |index: usize| match &cycles {
        Some((_, tenant)) => Ok(tenant.clone()),
        None => community(index),
    };
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (target, described) = match &args.url {
        Some(url) => {
            let base = url.trim_end_matches('/').to_owned();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(CliError::Usage(format!(
                    "--url must start with http:// or https://, got {}",
                    redact_url(url)
                )));
            }
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| CliError::Failed(format!("HTTP client: {e}")))?;
            let described = match &cycles {
                Some(_) => format!("{} (Cycles /v1)", redact_url(&base)),
                None => redact_url(&base),
            };
            (
                Target::Http {
                    client,
                    base,
                    token: args.token.clone(),
                    cycles: cycles.as_ref().map(|(secret, _)| secret.clone()),
                },
                described,
            )
        }
        None => (
            Target::Direct(open(settings, console).await?),
            redact_url(&settings.database_url),
        ),
    };
    let target = Arc::new(target);
    console.progress(&format!("setting budgets on {communities} communities"));
    for index in 0..communities {
        set_budget(&target, &community(index)?, index, run_id).await?;
    }
    console.progress(&format!(
        "running {} tasks for {} s against {described}",
        args.concurrency, args.duration_secs
    ));

    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::with_capacity(args.concurrency);
    for index in 0..args.concurrency {
        let histogram = new_histogram()?;
        let ids = (
            community(index % communities)?,
            UserId::parse(format!("u{index}"))
                .map_err(|e| CliError::Usage(format!("user id: {e}")))?,
        );
        let (target, done) = (Arc::clone(&target), Arc::clone(&done));
        let prefix = format!("bench-{run_id}-{index}");
        tasks.push(tokio::spawn(run_task(
            target, ids, prefix, deadline, histogram, done,
        )));
    }
    if console.progress {
        let mut last = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
            let now = done.load(Ordering::Relaxed);
            console.progress(&format!(
                "{:>4.0} s  {now} lifecycles ({} in the last second)",
                started.elapsed().as_secs_f64(),
                now - last
            ));
            last = now;
        }
    }
    let mut histogram = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(result) => {
                histogram
                    .add(&result.histogram)
                    .map_err(|e| CliError::Failed(format!("latency histogram: {e}")))?;
                for (kind, count) in result.errors {
                    *errors.entry(kind).or_default() += count;
                }
            }
            Err(error) => *errors.entry(format!("task: {error}")).or_default() += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(report(
        &args,
        communities,
        &described,
        elapsed,
        &histogram,
        errors,
    ))
}

fn report(
    args: &BenchArgs,
    communities: usize,
    described: &str,
    elapsed: f64,
    histogram: &Histogram<u64>,
    errors: BTreeMap<String, u64>,
) -> Report {
    let lifecycles = histogram.len();
    let error_count: u64 = errors.values().sum();
    #[allow(clippy::cast_precision_loss)] // a count far below 2^52
    let rate = if elapsed > 0.0 {
        lifecycles as f64 / elapsed
    } else {
        0.0
    };
    let (p50, p99, p999, max) = (
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
    );
    let mode = if args.url.is_some() { "http" } else { "direct" };
    let doc = json!({
        "mode": mode,
        "target": described,
        "concurrency": args.concurrency,
        "communities": communities,
        "duration_secs": elapsed,
        "lifecycles": lifecycles,
        "lifecycles_per_sec": rate,
        "latency_us": { "p50": p50, "p99": p99, "p999": p999, "max": max },
        "error_count": error_count,
        "errors": errors.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    });
    let ms = |us: u64| {
        #[allow(clippy::cast_precision_loss)] // microseconds below one minute
        let ms = us as f64 / 1000.0;
        ms
    };
    let mut text = format!(
        "{mode} against {described}: {lifecycles} lifecycles in {elapsed:.1} s at {} in flight \
         over {communities} communities\n  {rate:.0} lifecycles/s\n  latency of reserve + finalize: \
         p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms",
        args.concurrency,
        ms(p50),
        ms(p99),
        ms(p999),
        ms(max)
    );
    for (kind, count) in &errors {
        text.push_str(&format!("\n  error {kind}: {count}"));
    }
    Report {
        json: doc,
        human: text,
        exit: if error_count == 0 {
            Exit::Ok
        } else {
            Exit::Other
        },
    }
}

/// `secret=tenant` of `--cycles-api-key`.
fn cycles_key(text: &str) -> Result<(String, CommunityId), CliError> {
    let (secret, tenant) = text
        .split_once('=')
        .ok_or_else(|| CliError::Usage("--cycles-api-key is secret=tenant".into()))?;
    let tenant = CommunityId::parse(tenant)
        .map_err(|e| CliError::Usage(format!("--cycles-api-key tenant: {e}")))?;
    Ok((secret.to_owned(), tenant))
}

async fn set_budget(
    target: &Target,
    community: &CommunityId,
    index: usize,
    run_id: u128,
) -> Result<(), CliError> {
    let limit = Micros::from_usd(BENCH_LIMIT_USD);
    match target {
        Target::Direct(app) => {
            app.budget()
                .set_budget(community, Limits::new(limit))
                .await?;
            Ok(())
        }
        Target::Http {
            client,
            base,
            token,
            ..
        } => {
            let url = format!("{base}/api/v1/communities/{community}/budget");
            let request = authorize(client.put(&url), token.as_deref())
                .header("Idempotency-Key", format!("bench-{run_id}-budget-{index}"))
                .json(&json!({ "limit_micros": limit.get() }));
            let response = request
                .send()
                .await
                .map_err(|source| CliError::ServerUnreachable {
                    what: redact_url(&format!("PUT {url}")),
                    source: source.without_url(),
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            let message = redact_url(&format!("PUT {url}: {status}: {body}"));
            Err(if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                CliError::ServerUnavailable(message)
            } else {
                CliError::Failed(message)
            })
        }
    }
}

fn authorize(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn run_task(
    target: Arc<Target>,
    (community, user): (CommunityId, UserId),
    prefix: String,
    deadline: Instant,
    mut histogram: Histogram<u64>,
    done: Arc<AtomicU64>,
) -> TaskResult {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let key = format!("{prefix}-{n}");
        let start = Instant::now();
        match lifecycle(&target, &community, &user, &key).await {
            Ok(()) => {
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(us.clamp(1, MAX_LATENCY_US));
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    TaskResult { histogram, errors }
}

/// One reserve then finalize; an error is its kind, e.g.
/// `reserve: unavailable` or `finalize: HTTP 503`.
async fn lifecycle(
    target: &Target,
    community: &CommunityId,
    user: &UserId,
    key: &str,
) -> Result<(), String> {
    match target {
        Target::Direct(app) => direct(app, community, user, key).await,
        Target::Http {
            client,
            base,
            cycles: Some(secret),
            ..
        } => cycles_lifecycle(client, base, secret, user, key).await,
        Target::Http {
            client,
            base,
            token,
            cycles: None,
        } => {
            let reservations = format!("{base}/api/v1/communities/{community}/reservations");
            let reserve = authorize(client.post(&reservations), token.as_deref())
                .header("Idempotency-Key", key)
                .json(&json!({
                    "user": user.as_str(),
                    "model": "cheap",
                    "tier": 1,
                    "estimate_micros": ESTIMATE_MICROS,
                }));
            http_step("reserve", reserve).await?;
            let finalize = authorize(
                client.post(format!("{reservations}/{user}/{key}/finalize")),
                token.as_deref(),
            )
            .header("Idempotency-Key", key)
            .json(&json!({ "actual_micros": ACTUAL_MICROS }));
            http_step("finalize", finalize).await
        }
    }
}

/// A Cycles create then commit; the user is the subject's agent.
async fn cycles_lifecycle(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
    user: &UserId,
    key: &str,
) -> Result<(), String> {
    let create = client
        .post(format!("{base}/v1/reservations"))
        .header("X-Cycles-API-Key", secret)
        .json(&json!({
            "idempotency_key": key,
            "subject": { "agent": user.as_str() },
            "action": { "kind": "llm.completion", "name": "cheap" },
            "estimate": { "unit": "USD_MICROCENTS", "amount": ESTIMATE_MICROS * 100 },
            "ttl_ms": 60_000,
        }));
    let created = http_json("reserve", create).await?;
    let id = created["reservation_id"]
        .as_str()
        .ok_or_else(|| "reserve: no reservation_id".to_owned())?;
    let commit = client
        .post(format!("{base}/v1/reservations/{id}/commit"))
        .header("X-Cycles-API-Key", secret)
        .json(&json!({
            "idempotency_key": key,
            "actual": { "unit": "USD_MICROCENTS", "amount": ACTUAL_MICROS * 100 },
        }));
    http_step("finalize", commit).await
}

/// [`http_step`] that keeps the answer's JSON body.
async fn http_json(step: &str, request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("{step}: {}", transport_kind(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let _ = response.bytes().await;
        return Err(format!("{step}: HTTP {}", status.as_u16()));
    }
    response
        .json()
        .await
        .map_err(|_| format!("{step}: unreadable body"))
}

fn transport_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

async fn http_step(step: &str, request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("{step}: {}", transport_kind(&e)))?;
    let status = response.status();
    // Read the body so the connection goes back to the pool.
    let _ = response.bytes().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{step}: HTTP {}", status.as_u16()))
    }
}

async fn direct(
    app: &Spendgate,
    community: &CommunityId,
    user: &UserId,
    key: &str,
) -> Result<(), String> {
    let key = IdempotencyKey::parse(key).map_err(|e| format!("reserve: key {e}"))?;
    let model = ModelAlias::parse("cheap").map_err(|e| format!("reserve: model {e}"))?;
    let estimate = Micros::new(ESTIMATE_MICROS).map_err(|e| format!("reserve: {e}"))?;
    let actual = Micros::new(ACTUAL_MICROS).map_err(|e| format!("finalize: {e}"))?;
    let request = ReserveRequest {
        community: community.clone(),
        user: user.clone(),
        key,
        model,
        tier: 1,
        cost: CostBasis::Estimate { amount: estimate },
        ttl: None,
        trace_id: None,
    };
    let guard = match app.budget().reserve(request).await {
        Ok(ReserveDecision::Reserved(guard)) => guard,
        Ok(ReserveDecision::BudgetExceeded { .. }) => return Err("reserve: budget_exceeded".into()),
        Ok(ReserveDecision::AlreadySettled) => return Err("reserve: already_settled".into()),
        Err(error) => return Err(format!("reserve: {}", CliError::from(error).exit().kind())),
    };
    match guard
        .finalize(Usage::Cost {
            actual,
            tokens: None,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("finalize: {}", CliError::from(error).exit().kind())),
    }
}
