//! The due index (`sg:{due}:at`, kept by separate scripts after reserve
//! and reap): it stays a lower bound of every unreaped hold's expiry when
//! reserves and reaps of one community race; a failed index write after a
//! reserve loses only what the store documents, and the next reap repairs
//! it; the list is read in O(due) over a large index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionLike, ConnectionManager};
use spendgate_adapter_redis::RedisBudgetStore;
use spendgate_adapter_redis::keys::{DUE_AT_KEY, DUE_GEN_KEY};
use spendgate_contract::fixture::{hold, key, m, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, HoldState, Limits, ModelAlias, Reservation,
    ReserveOutcome, Timestamp, Ttl,
};
use spendgate_ports::BudgetStore;
use tokio::sync::Barrier;

use crate::own_redis::OwnRedis;
use crate::support::{cluster_redis, raw_standalone, standalone_redis};

/// 1990-03-01T00:00:00Z: a clock no contract scenario uses.
const T0: i64 = 636_249_600_000;
const ROUNDS: usize = 200;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn reservation(k: &str, ttl_ms: i64) -> Reservation {
    Reservation {
        user: user("alice"),
        key: key(k),
        estimate: m(10),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

/// The community's score in the due index, if it is listed.
async fn due_score<C: ConnectionLike + Send + Sync>(conn: &mut C, c: &CommunityId) -> Option<i64> {
    conn.zscore(DUE_AT_KEY, c.as_str()).await.unwrap()
}

/// A connection that holds back every request naming the due index's zset
/// (the index touch and update scripts) by a varying 0..2 ms, so that
/// the reaps' index updates and the reserves' touches land in every order
/// around each other's community scripts.
#[derive(Clone)]
struct Jittered<C> {
    inner: C,
    step: Arc<AtomicU64>,
}

impl<C: ConnectionLike + Clone + Send + Sync> ConnectionLike for Jittered<C> {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        let needle = DUE_AT_KEY.as_bytes();
        let delay = if cmd
            .get_packed_command()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            jitter(self.step.fetch_add(1, Ordering::Relaxed))
        } else {
            Duration::ZERO
        };
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.inner.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// 0..2 ms, spread over the steps (Weyl sequence).
fn jitter(step: u64) -> Duration {
    Duration::from_micros(step.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 2_000)
}

/// Each round: a community with one hold due at `now`; then, started
/// together on a barrier, two reaps at `now` and, after a varying delay, a
/// reserve of a new hold (a new lowest bucket once the old hold is reaped),
/// every index write held back by a varying delay too. Whatever the
/// interleaving, the new hold is still unreaped afterwards, so the index
/// must list the community at or below its expiry. (An index update that
/// ignored the generation loses the hold in some rounds.)
async fn reserve_and_reap_race<C>(conn: C, label: &str)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let step = Arc::new(AtomicU64::new(0));
    let store = RedisBudgetStore::new(
        Jittered {
            inner: conn,
            step: Arc::clone(&step),
        },
        BudgetPolicy::default(),
    )
    .with_timeout(crate::support::TEST_TIMEOUT);
    let store = Arc::new(store);
    let mut communities = Vec::new();
    for round in 0..ROUNDS {
        let c = unique_community(&format!("{label}-{round}"));
        store
            .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
            .await
            .unwrap();
        let start = T0 + i64::try_from(round).unwrap() * 10;
        store
            .reserve(&c, &reservation("old", 1_000), at(start))
            .await
            .unwrap();
        // Even rounds reap within the old hold's 100 ms bucket (kept: the
        // reap's bound is just past now), odd ones after it (dropped: the
        // reap leaves nothing, unless the new hold came first).
        let now = at(start + 1_000 + i64::try_from(round % 2).unwrap() * 100);
        let barrier = Arc::new(Barrier::new(3));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (store, barrier, c) = (Arc::clone(&store), Arc::clone(&barrier), c.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.reap(&c, now).await.unwrap().count
            }));
        }
        let reserve = {
            let (store, barrier, c) = (Arc::clone(&store), Arc::clone(&barrier), c.clone());
            let delay = jitter(step.fetch_add(1, Ordering::Relaxed));
            tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(delay).await;
                store
                    .reserve(&c, &reservation("new", 60_000), now)
                    .await
                    .unwrap()
            })
        };
        let mut reaped = 0;
        for task in tasks {
            reaped += task.await.unwrap();
        }
        assert_eq!(reaped, 1, "round {round}: the old hold is reaped once");
        assert!(matches!(
            reserve.await.unwrap(),
            ReserveOutcome::Reserved { .. }
        ));
        communities.push(c);
    }

    let mut conn = store.connection();
    let far = at(T0 + 365 * 86_400_000);
    let named = store.due_communities(far, usize::MAX).await.unwrap();
    for c in &communities {
        let HoldState::Held { hold: new } =
            store.lookup(c, &hold("alice", "new"), far).await.unwrap()
        else {
            panic!("{c}: the new hold is still held");
        };
        let score = due_score(&mut conn, c).await;
        assert!(
            score.is_some_and(|s| s <= new.expires_at.as_millis()),
            "{c}: listed at {score:?}, hold expires at {}",
            new.expires_at.as_millis()
        );
        assert!(named.contains(c), "{c} is due at a far-future now");
    }
    // Reaped at last, every community leaves the index.
    for c in &communities {
        assert_eq!(store.reap(c, far).await.unwrap().count, 1);
        assert_eq!(due_score(&mut conn, c).await, None, "{c} left the index");
        let generation: Option<String> = conn.hget(DUE_GEN_KEY, c.as_str()).await.unwrap();
        assert_eq!(generation, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reserves_and_reaps_keep_every_unreaped_hold_indexed_on_standalone() {
    reserve_and_reap_race(standalone_redis().await.connection(), "due-race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reserves_and_reaps_keep_every_unreaped_hold_indexed_on_the_cluster() {
    reserve_and_reap_race(cluster_redis().await.connection(), "due-race-cl").await;
}

/// A connection that fails every request naming the due index's zset
/// while `broken` is set (the `{due}` slot unreachable).
#[derive(Clone)]
struct BrokenIndex {
    inner: ConnectionManager,
    broken: Arc<AtomicBool>,
}

impl BrokenIndex {
    fn refuses(&self, packed: &[u8]) -> bool {
        let needle = DUE_AT_KEY.as_bytes();
        self.broken.load(Ordering::SeqCst) && packed.windows(needle.len()).any(|w| w == needle)
    }
}

impl ConnectionLike for BrokenIndex {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        if self.refuses(&cmd.get_packed_command()) {
            return Box::pin(async {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "index slot unreachable (injected)",
                )))
            });
        }
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The narrower promise: a reserve whose index touch fails still holds
/// (and is counted); the community is missing from the due list until a
/// reap of it (the reaper's full sweep) puts it back with the right bound.
#[tokio::test]
async fn a_failed_index_touch_keeps_the_reserve_and_the_next_reap_repairs_the_index() {
    let broken = Arc::new(AtomicBool::new(false));
    let conn = BrokenIndex {
        inner: raw_standalone().await,
        broken: Arc::clone(&broken),
    };
    let store = RedisBudgetStore::new(conn, BudgetPolicy::default());
    let c = unique_community("due-touch-fails");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let start = T0 + 86_400_000;

    broken.store(true, Ordering::SeqCst);
    let reserved = store
        .reserve(&c, &reservation("k1", 60_000), at(start))
        .await
        .unwrap();
    assert!(matches!(reserved, ReserveOutcome::Reserved { .. }));
    broken.store(false, Ordering::SeqCst);
    let mut admin = raw_standalone().await;
    assert_eq!(due_score(&mut admin, &c).await, None, "the touch failed");
    let status = store
        .status(&c, spendgate_contract::fixture::period("1990-03"))
        .await;
    assert_eq!(status.unwrap().reserved, m(10), "the hold counts");

    // The full sweep's reap (nothing due yet) lists it at its bucket.
    assert_eq!(store.reap(&c, at(start + 1)).await.unwrap().count, 0);
    assert_eq!(due_score(&mut admin, &c).await, Some(start + 60_000));
    let due = store.due_communities(at(start + 60_000), usize::MAX).await;
    assert!(due.unwrap().contains(&c));

    // A failed index update after a reap keeps the reap's result and the
    // older (lower) bound: one wasted visit.
    broken.store(true, Ordering::SeqCst);
    assert_eq!(store.reap(&c, at(start + 60_000)).await.unwrap().count, 1);
    broken.store(false, Ordering::SeqCst);
    assert_eq!(due_score(&mut admin, &c).await, Some(start + 60_000));
    // Reaped again at the same instant: the bucket of `now` is kept (part
    // of it may not be due yet), so the bound is just past `now`.
    assert_eq!(store.reap(&c, at(start + 60_000)).await.unwrap().count, 0);
    assert_eq!(due_score(&mut admin, &c).await, Some(start + 60_001));
    // Once the bucket is past, nothing is left: out of the index.
    assert_eq!(store.reap(&c, at(start + 60_100)).await.unwrap().count, 0);
    assert_eq!(due_score(&mut admin, &c).await, None);
}

/// Server time spent in scripts (`EVALSHA`, with the commands they run)
/// since the last `CONFIG RESETSTAT`.
fn script_usec(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .and_then(|rest| rest.split("usec=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// 100,000 communities in the index, 1,000 of them with an expired hold:
/// the due list is one range read, earliest first, and a reaper pass (the
/// list, then one reap of each due community) reads only what is due. The
/// times are printed; the bounds on the pass are loose (a debug client on
/// a shared 2-core machine spends most of the wall time, and a loaded
/// machine inflates the scripts' time too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_pass_over_a_large_index_costs_o_due() {
    let server = OwnRedis::start();
    let store = RedisBudgetStore::connect(&server.url(), BudgetPolicy::default())
        .await
        .unwrap();
    let mut conn = store.connection();
    let now = T0 + 60_000;
    // 99,000 communities whose earliest hold is not due (index entries
    // only: their holds are never read by the pass).
    for chunk in 0..99 {
        let mut pipe = redis::pipe();
        for i in 0..1_000 {
            let n = chunk * 1_000 + i;
            pipe.zadd(DUE_AT_KEY, format!("live-{n}"), now + 1 + n)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    // 1,000 with one hold each, due at `now` (earliest first by index).
    let mut due_ones = Vec::new();
    for i in 0..1_000 {
        let c = CommunityId::parse(format!("due-{i:04}")).unwrap();
        store
            .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
            .await
            .unwrap();
        store
            .reserve(&c, &reservation("k", 60_000 - 1_000 + i), at(T0))
            .await
            .unwrap();
        due_ones.push(c);
    }
    let mut admin = server.admin();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut admin)
        .unwrap();
    let started = Instant::now();
    let due = store.due_communities(at(now), 5_000).await.unwrap();
    let listed = started.elapsed();
    assert_eq!(due.len(), 1_000);
    assert_eq!(due[0], due_ones[0]);
    assert_eq!(due[999], due_ones[999]);
    // Eight reaps in flight on the multiplexed connection.
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for part in due.chunks(125) {
        let (store, part) = (Arc::clone(&store), part.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut released = 0;
            for c in &part {
                released += store.reap(c, at(now)).await.unwrap().count;
            }
            released
        }));
    }
    let mut released = 0;
    for task in tasks {
        released += task.await.unwrap();
    }
    let pass = started.elapsed();
    assert_eq!(released, 1_000);
    let script_time = Duration::from_micros(script_usec(&mut admin));
    println!(
        "due list of 1,000 over 100,000 indexed: {listed:?}; whole pass (8 reaps in flight): \
         {pass:?}; Redis time in scripts {script_time:?}"
    );
    assert!(
        script_time < Duration::from_secs(1),
        "scripts took {script_time:?}"
    );
    assert!(listed < Duration::from_secs(1), "listing took {listed:?}");
    assert!(pass < Duration::from_secs(10), "the pass took {pass:?}");
    assert!(store.due_communities(at(now), 10).await.unwrap().is_empty());

    // A member that is not a community id is drift.
    let () = conn
        .zadd(DUE_AT_KEY, "not a community", now - 5_000)
        .await
        .unwrap();
    assert!(matches!(
        store.due_communities(at(now), 10).await,
        Err(spendgate_ports::StoreError::Corrupt(_))
    ));
}
