//! A busy community's slot moves from one master to another with the real
//! sequence (`CLUSTER SETSLOT … IMPORTING / MIGRATING`, `MIGRATE … KEYS` in
//! small batches with pauses, `CLUSTER SETSLOT … NODE` on every master)
//! while eight tasks run reserve → finalize lifecycles and a worker reaps
//! the community and re-applies its limits, as the application's reaper and
//! config sync do. On a cluster of the test's own, so moving a slot
//! disturbs no other test.
//!
//! A call may answer `Unavailable` (its keys are split between the nodes
//! for a while); the tasks then retry it later with the same ids, as the
//! application does. Any other error fails the test, and at the end the
//! counters are exact: committed is the sum of the finalized actuals,
//! reserved the sum of the live holds' estimates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::records_key;
use spendgate_contract::fixture::{key, m, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, FinalizeOutcome, Limits, ModelAlias, Period,
    Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::own_cluster::OwnCluster;

/// 2026-11-15T00:00:00Z: the test's clock starts here and runs in real
/// time, so the whole test stays in one period.
const NOV_15: i64 = 1_794_700_800_000;
/// Live holds made before the move, each in an expiry bucket of its own:
/// as many bucket lists, so the slot has many keys to migrate.
const BACKGROUND: usize = 1_500;
const TASKS: usize = 8;
/// Keys per `MIGRATE`, and the pause after each: slow enough that
/// lifecycles run while the slot is half moved.
const MIGRATE_BATCH: usize = 8;
const MIGRATE_PAUSE: Duration = Duration::from_millis(20);
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// A short hold's time to live, and how long its task waits before
/// finalizing it: long enough for the worker to reap it first, mostly.
const SHORT_TTL_MS: i64 = 200;
const SHORT_WAIT_MS: i64 = 400;
/// How long the tasks may take to settle what they started once stopped.
const DRAIN: Duration = Duration::from_secs(60);
const LIMIT: i64 = 1_000_000_000_000;

#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> Timestamp {
        let elapsed = i64::try_from(self.0.elapsed().as_millis()).unwrap();
        Timestamp::from_millis(NOV_15 + elapsed).unwrap()
    }
}

struct Shared {
    store: RedisBudgetStore<ClusterConnection>,
    community: CommunityId,
    clock: Clock,
    /// The background holds' expiries: a lifecycle's hold expiring at one
    /// of them lands in a bucket list that exists already.
    background: Vec<Timestamp>,
    stop: AtomicBool,
    migrating: AtomicBool,
    /// Calls answered (not `Unavailable`) while the slot was migrating.
    during_migration: AtomicUsize,
}

impl Shared {
    /// Counts an answer that began and ended while the slot was migrating.
    fn answered(&self, began_migrating: bool) {
        if began_migrating && self.migrating.load(Ordering::SeqCst) {
            self.during_migration.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct Tally {
    committed: i64,
    unavailable: usize,
    errors: Vec<String>,
}

enum Step {
    /// `expires`: an existing bucket's expiry, or `None` for a short hold
    /// (a new bucket, reaped before its late finalize, mostly).
    Reserve {
        k: String,
        estimate: i64,
        actual: i64,
        expires: Option<Timestamp>,
    },
    Finalize {
        k: String,
        actual: i64,
        not_before: Timestamp,
    },
}

fn lifecycle(shared: &Shared, task: usize, n: usize) -> Step {
    let estimate = 10 + i64::try_from(n % 50).unwrap();
    let expires = if n % 8 == 7 {
        None
    } else {
        Some(shared.background[(task * 211 + n * 37) % BACKGROUND])
    };
    Step::Reserve {
        k: format!("t{task}-{n}"),
        estimate,
        actual: estimate + i64::try_from(n % 7).unwrap() - 3,
        expires,
    }
}

/// One task: lifecycles until stopped, then until everything it started is
/// settled. A call answered `Unavailable` goes to the back of the queue and
/// is sent again with the same ids.
async fn lifecycles(shared: Arc<Shared>, task: usize) -> Tally {
    let mut tally = Tally::default();
    let mut queue = VecDeque::new();
    let mut n = 0;
    let mut stopped_at = None;
    let who = user(&format!("u{task}"));
    let model = ModelAlias::parse("cheap").unwrap();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if queue.is_empty() {
                return tally;
            }
            if since.elapsed() > DRAIN {
                tally
                    .errors
                    .push(format!("{} calls never settled", queue.len()));
                return tally;
            }
        } else if queue.len() < 3 {
            queue.push_back(lifecycle(&shared, task, n));
            n += 1;
        }
        let Some(step) = queue.pop_front() else {
            continue;
        };
        let now = shared.clock.now();
        let began_migrating = shared.migrating.load(Ordering::SeqCst);
        match step {
            Step::Reserve {
                ref k,
                estimate,
                actual,
                expires,
            } => {
                let ttl_ms = expires.map_or(SHORT_TTL_MS, |e| e.as_millis() - now.as_millis());
                let reservation = Reservation {
                    user: who.clone(),
                    key: key(k),
                    estimate: m(estimate),
                    model: model.clone(),
                    ttl: Ttl::from_millis(ttl_ms).unwrap(),
                };
                match shared
                    .store
                    .reserve(&shared.community, &reservation, now)
                    .await
                {
                    // AlreadyReserved / AlreadySettled: an earlier attempt
                    // that answered `Unavailable` had made the hold (and the
                    // worker may have reaped it since).
                    Ok(
                        ReserveOutcome::Reserved { .. }
                        | ReserveOutcome::AlreadyReserved { .. }
                        | ReserveOutcome::AlreadySettled,
                    ) => {
                        shared.answered(began_migrating);
                        let wait = if expires.is_none() { SHORT_WAIT_MS } else { 0 };
                        queue.push_back(Step::Finalize {
                            k: k.clone(),
                            actual,
                            not_before: now.plus(Ttl::from_millis(wait.max(1)).unwrap()).unwrap(),
                        });
                    }
                    Err(StoreError::Unavailable(_)) => {
                        tally.unavailable += 1;
                        queue.push_back(step);
                    }
                    other => tally.errors.push(format!("reserve {k}: {other:?}")),
                }
            }
            Step::Finalize {
                ref k,
                actual,
                not_before,
            } => {
                if now < not_before {
                    queue.push_back(step);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let settlement = Settlement {
                    user: who.clone(),
                    key: key(k),
                    actual: m(actual),
                };
                match shared
                    .store
                    .finalize(&shared.community, &settlement, now)
                    .await
                {
                    Ok(
                        FinalizeOutcome::Finalized(receipt)
                        | FinalizeOutcome::LateFinalized(receipt),
                    ) if receipt.actual == m(actual) => {
                        shared.answered(began_migrating);
                        tally.committed += actual;
                    }
                    // An earlier attempt answered `Unavailable` but ran.
                    Ok(FinalizeOutcome::AlreadyFinalized { actual: done }) if done == m(actual) => {
                        shared.answered(began_migrating);
                        tally.committed += actual;
                    }
                    Err(StoreError::Unavailable(_)) => {
                        tally.unavailable += 1;
                        queue.push_back(step);
                    }
                    other => tally.errors.push(format!("finalize {k}: {other:?}")),
                }
            }
        }
    }
}

/// The worker: reaps the community and re-applies its limits until stopped.
async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut round = 0_u32;
    while !shared.stop.load(Ordering::SeqCst) {
        let began_migrating = shared.migrating.load(Ordering::SeqCst);
        let result = if round % 5 == 4 {
            let limits = Limits::new(m(LIMIT));
            shared
                .store
                .set_limits(&shared.community, limits, ConfigVersion::ZERO)
                .await
        } else {
            let now = shared.clock.now();
            shared.store.reap(&shared.community, now).await.map(|_| ())
        };
        match result {
            Ok(()) => shared.answered(began_migrating),
            Err(StoreError::Unavailable(_)) => tally.unavailable += 1,
            Err(e) => tally.errors.push(format!("worker round {round}: {e:?}")),
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally
}

/// Reserves the background holds; returns their expiries and the sum of
/// their estimates.
async fn background_holds(
    store: &RedisBudgetStore<ClusterConnection>,
    c: &CommunityId,
    clock: Clock,
) -> (Vec<Timestamp>, i64) {
    let mut expiries = Vec::with_capacity(BACKGROUND);
    let mut reserved = 0;
    for i in 0..BACKGROUND {
        let estimate = 1_000 + i64::try_from(i % 7).unwrap();
        let reservation = Reservation {
            user: user("bg"),
            key: key(&format!("bg-{i}")),
            estimate: m(estimate),
            model: ModelAlias::parse("cheap").unwrap(),
            ttl: Ttl::from_millis(3_600_000 + 100 * i64::try_from(i).unwrap()).unwrap(),
        };
        match store.reserve(c, &reservation, clock.now()).await.unwrap() {
            ReserveOutcome::Reserved { expires_at, .. } => expiries.push(expires_at),
            other => panic!("background hold {i}: {other:?}"),
        }
        reserved += estimate;
    }
    (expiries, reserved)
}

fn admin(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn node_id(url: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut admin(url))
        .unwrap()
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Moves `slot` from the master at `source` to the one at `target`, the
/// way `redis-cli --cluster reshard` does, in small batches with pauses.
/// Returns the first error a node answered, if any (a `MIGRATE` refused
/// with `BUSYKEY` is the bug this test is about).
fn move_slot(
    urls: &[String],
    slot: u16,
    source: &str,
    target: &str,
    migrating: &AtomicBool,
) -> Result<usize, String> {
    let (source_id, target_id) = (node_id(source), node_id(target));
    let (mut src, mut dst) = (admin(source), admin(target));
    let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .query::<()>(conn)
            .map_err(|e| format!("CLUSTER SETSLOT {slot} {state}: {e}"))
    };
    setslot(&mut dst, "IMPORTING", &source_id)?;
    setslot(&mut src, "MIGRATING", &target_id)?;
    migrating.store(true, Ordering::SeqCst);
    let mut moved = 0;
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(MIGRATE_BATCH)
            .query(&mut src)
            .map_err(|e| format!("CLUSTER GETKEYSINSLOT: {e}"))?;
        if keys.is_empty() {
            break;
        }
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(port(target))
            .arg("")
            .arg(0)
            .arg(5_000)
            .arg("KEYS")
            .arg(&keys)
            .query::<String>(&mut src)
            .map_err(|e| format!("MIGRATE after {moved} keys: {e}"))?;
        moved += keys.len();
        std::thread::sleep(MIGRATE_PAUSE);
    }
    // The target first, so it owns the slot before the source lets go.
    setslot(&mut dst, "NODE", &target_id)?;
    setslot(&mut src, "NODE", &target_id)?;
    for url in urls.iter().filter(|u| *u != source && *u != target) {
        setslot(&mut admin(url), "NODE", &target_id)?;
    }
    migrating.store(false, Ordering::SeqCst);
    Ok(moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_communitys_counters_stay_exact_while_its_slot_moves_to_another_master() {
    let cluster = OwnCluster::start();
    let urls = cluster.urls();
    let store = RedisBudgetStore::connect_cluster(&urls, BudgetPolicy::default())
        .await
        .unwrap()
        .with_timeout(OP_TIMEOUT);
    let c = unique_community("reshard");
    let clock = Clock(Instant::now());
    store
        .set_limits(&c, Limits::new(m(LIMIT)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let (background, background_reserved) = background_holds(&store, &c, clock).await;

    let records = records_key(&c);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&records)
        .query(&mut admin(&urls[0]))
        .unwrap();
    let count_in_slot = |url: &str| -> i64 {
        redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query(&mut admin(url))
            .unwrap()
    };
    let source = urls.iter().position(|u| count_in_slot(u) > 0).unwrap();
    let (source, target) = (
        urls[source].clone(),
        urls[(source + 1) % urls.len()].clone(),
    );

    let shared = Arc::new(Shared {
        store,
        community: c.clone(),
        clock,
        background,
        stop: AtomicBool::new(false),
        migrating: AtomicBool::new(false),
        during_migration: AtomicUsize::new(0),
    });
    let mut tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(lifecycles(shared.clone(), task)))
        .collect();
    tasks.push(tokio::spawn(worker(shared.clone())));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mover = shared.clone();
    let (from, to, all) = (source.clone(), target.clone(), urls.clone());
    let moved =
        tokio::task::spawn_blocking(move || move_slot(&all, slot, &from, &to, &mover.migrating))
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut committed = 0;
    let mut unavailable = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let tally = task.await.unwrap();
        committed += tally.committed;
        unavailable += tally.unavailable;
        errors.extend(tally.errors);
    }

    assert!(
        moved.is_ok() && errors.is_empty(),
        "slot move: {moved:?}; errors other than Unavailable: {errors:#?}"
    );
    let moved = moved.unwrap_or_default();
    let answered = shared.during_migration.load(Ordering::SeqCst);
    println!(
        "{moved} keys moved; {answered} calls answered during the move, {unavailable} unavailable"
    );
    assert!(answered > 0, "no call ran while the slot was migrating");
    let status = shared
        .store
        .status(&c, Period::containing(clock.now()).unwrap())
        .await
        .unwrap();
    assert_eq!(status.committed, m(committed));
    assert_eq!(status.reserved, m(background_reserved));
    assert_eq!(status.holds, u64::try_from(BACKGROUND).unwrap());

    // The slot ends on the target: the source redirects there for good.
    let on_source = redis::cmd("HLEN")
        .arg(&records)
        .query::<i64>(&mut admin(&source))
        .unwrap_err();
    let redirect = on_source.redirect_node().map(|(node, _)| node.to_owned());
    assert_eq!(
        (on_source.kind(), redirect),
        (
            redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
            Some(format!("127.0.0.1:{}", port(&target)))
        )
    );
    assert_eq!(count_in_slot(&source), 0);
    assert!(count_in_slot(&target) > 0);
}
