//! Worker leases on real servers: the same scenarios on standalone Redis
//! and on the Cluster (modules `standalone` and `cluster`), then the key's
//! slot, a flushed script cache, and servers that do not answer.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use spendgate_adapter_redis::RedisLease;
use spendgate_adapter_redis::keys::lease_key;
use spendgate_contract::fixture::unique_community;
use spendgate_domain::{Timestamp, Ttl};
use spendgate_ports::{Lease, RepoError};
use tokio::sync::Barrier;

use crate::own_redis::OwnRedis;
use crate::support::{TEST_TIMEOUT, cluster_urls, standalone_url};

async fn standalone_lease() -> RedisLease<ConnectionManager> {
    let url = standalone_url();
    RedisLease::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to standalone Redis at {url} (SPENDGATE_TEST_REDIS_URL): {e}")
        })
        .with_timeout(TEST_TIMEOUT)
}

async fn cluster_lease() -> RedisLease<ClusterConnection> {
    let urls = cluster_urls();
    RedisLease::connect_cluster(&urls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to Redis Cluster at {} (SPENDGATE_TEST_REDIS_CLUSTER_URLS): {e}",
                urls.join(",")
            )
        })
        .with_timeout(TEST_TIMEOUT)
}

/// A lease name no other test (of this or another run) uses.
fn unique_name(label: &str) -> String {
    unique_community(&format!("lease-{label}")).to_string()
}

fn ttl_ms(ms: i64) -> Ttl {
    Ttl::from_millis(ms).unwrap()
}

/// The `now` Redis leases ignore (they expire by Redis' clock).
fn now() -> Timestamp {
    Timestamp::from_millis(0).unwrap()
}

const MINUTE: i64 = 60_000;
/// The short TTL of the expiry scenarios, and a sleep safely past it.
const SHORT_TTL: i64 = 300;
const PAST_SHORT_TTL: Duration = Duration::from_millis(450);

async fn raw_get<C: ConnectionLike + Clone + Send + Sync + 'static>(
    lease: &RedisLease<C>,
    name: &str,
) -> Option<String> {
    let mut conn = lease.connection();
    redis::cmd("GET")
        .arg(lease_key(name))
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn pttl<C: ConnectionLike + Clone + Send + Sync + 'static>(
    lease: &RedisLease<C>,
    name: &str,
) -> i64 {
    let mut conn = lease.connection();
    redis::cmd("PTTL")
        .arg(lease_key(name))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The scenarios run on both deployments; each takes the lease to test.
mod scenario {
    use super::*;

    pub async fn first_holder_is_granted_and_others_refused_while_it_lives<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        lease: RedisLease<C>,
    ) {
        let name = unique_name("first");
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        assert_eq!(lease.acquire(&name, "c", ttl_ms(1), now()).await, Ok(false));
        // A refused taker changes nothing.
        assert_eq!(raw_get(&lease, &name).await.as_deref(), Some("a"));
        let left = pttl(&lease, &name).await;
        assert!(MINUTE - 5_000 < left && left <= MINUTE, "pttl {left}");
    }

    pub async fn holder_renews_past_its_first_ttl<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        lease: RedisLease<C>,
    ) {
        let name = unique_name("renew");
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(SHORT_TTL), now()).await,
            Ok(true)
        );
        let left = pttl(&lease, &name).await;
        assert!((1..=SHORT_TTL).contains(&left), "pttl {left}");
        // Renewing sets the TTL anew (here longer than the first).
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        let left = pttl(&lease, &name).await;
        assert!(SHORT_TTL < left && left <= MINUTE, "pttl {left}");
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        assert_eq!(raw_get(&lease, &name).await.as_deref(), Some("a"));
        // And shorter again.
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(SHORT_TTL), now()).await,
            Ok(true)
        );
        let left = pttl(&lease, &name).await;
        assert!((1..=SHORT_TTL).contains(&left), "pttl {left}");
    }

    pub async fn another_holder_is_granted_after_expiry<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        lease: RedisLease<C>,
    ) {
        let name = unique_name("expiry");
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(SHORT_TTL), now()).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(SHORT_TTL), now()).await,
            Ok(false)
        );
        tokio::time::sleep(PAST_SHORT_TTL).await;
        assert_eq!(raw_get(&lease, &name).await, None);
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        // The former holder lost it: it can neither renew nor release.
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        assert_eq!(lease.release(&name, "a").await, Ok(false));
        assert_eq!(raw_get(&lease, &name).await.as_deref(), Some("b"));
    }

    pub async fn only_the_holder_releases<C: ConnectionLike + Clone + Send + Sync + 'static>(
        lease: RedisLease<C>,
    ) {
        let name = unique_name("release");
        assert_eq!(lease.release(&name, "a").await, Ok(false));
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(lease.release(&name, "b").await, Ok(false));
        assert_eq!(raw_get(&lease, &name).await.as_deref(), Some("a"));
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );

        assert_eq!(lease.release(&name, "a").await, Ok(true));
        assert_eq!(raw_get(&lease, &name).await, None);
        assert_eq!(lease.release(&name, "a").await, Ok(false));
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
    }

    pub async fn names_are_independent<C: ConnectionLike + Clone + Send + Sync + 'static>(
        lease: RedisLease<C>,
    ) {
        let reaper = unique_name("reaper");
        let sync = unique_name("sync");
        assert_eq!(
            lease.acquire(&reaper, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire(&sync, "b", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(
            lease.acquire(&reaper, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        assert_eq!(
            lease.acquire(&sync, "a", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        // Releasing one leaves the other held.
        assert_eq!(lease.release(&sync, "b").await, Ok(true));
        assert_eq!(
            lease.acquire(&reaper, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        assert_eq!(
            lease.acquire(&sync, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(raw_get(&lease, &reaper).await.as_deref(), Some("a"));
        assert_eq!(raw_get(&lease, &sync).await.as_deref(), Some("a"));
    }

    pub async fn bad_names_and_holders_are_invalid_input<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        lease: RedisLease<C>,
    ) {
        let long = "x".repeat(129);
        let good = unique_name("bad-input");
        for bad in [
            "",
            "two words",
            "tab\there",
            "line\n",
            "open{",
            "close}",
            "{tag}",
            "é",
            long.as_str(),
        ] {
            for (name, holder) in [(bad, "a"), (good.as_str(), bad)] {
                let got = lease.acquire(name, holder, ttl_ms(MINUTE), now()).await;
                assert!(
                    matches!(got, Err(RepoError::InvalidInput(_))),
                    "acquire({name:?}, {holder:?}): {got:?}"
                );
                let got = lease.release(name, holder).await;
                assert!(
                    matches!(got, Err(RepoError::InvalidInput(_))),
                    "release({name:?}, {holder:?}): {got:?}"
                );
            }
        }
        // Nothing was written for the good name; 128 bytes are fine.
        assert_eq!(raw_get(&lease, &good).await, None);
        let max_holder = "h".repeat(128);
        assert_eq!(
            lease
                .acquire(&good, &max_holder, ttl_ms(MINUTE), now())
                .await,
            Ok(true)
        );
        assert_eq!(lease.release(&good, &max_holder).await, Ok(true));
    }

    pub async fn racing_acquirers_get_exactly_one_grant<
        C: ConnectionLike + Clone + Send + Sync + 'static,
    >(
        lease: RedisLease<C>,
    ) {
        for round in 0..5 {
            let name = unique_name(&format!("race-{round}"));
            let start = Arc::new(Barrier::new(8));
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let lease = lease.clone();
                    let name = name.clone();
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        start.wait().await;
                        let holder = format!("holder-{i}");
                        let got = lease.acquire(&name, &holder, ttl_ms(MINUTE), now()).await;
                        (holder, got)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                let (holder, got) = task.await.unwrap();
                if got.unwrap() {
                    winners.push(holder);
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(
                raw_get(&lease, &name).await.as_deref(),
                Some(winners[0].as_str())
            );
        }
    }

    /// `sg:{lease:<name>}`, holding the holder token.
    pub async fn key_is_the_documented_one<C: ConnectionLike + Clone + Send + Sync + 'static>(
        lease: RedisLease<C>,
    ) {
        let name = unique_name("layout");
        assert_eq!(lease_key(&name), format!("sg:{{lease:{name}}}"));
        lease
            .acquire(&name, "pod-7:run-3", ttl_ms(MINUTE), now())
            .await
            .unwrap();
        let mut conn = lease.connection();
        let kind: String = redis::cmd("TYPE")
            .arg(lease_key(&name))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kind, "string");
        assert_eq!(raw_get(&lease, &name).await.as_deref(), Some("pod-7:run-3"));
    }
}

macro_rules! on_each_deployment {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::scenario::$name(super::standalone_lease().await).await;
                }
            )*
        }

        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::scenario::$name(super::cluster_lease().await).await;
                }
            )*
        }
    };
}

on_each_deployment!(
    first_holder_is_granted_and_others_refused_while_it_lives,
    holder_renews_past_its_first_ttl,
    another_holder_is_granted_after_expiry,
    only_the_holder_releases,
    names_are_independent,
    bad_names_and_holders_are_invalid_input,
    racing_acquirers_get_exactly_one_grant,
    key_is_the_documented_one,
);

/// Each lease key sits on the slot of its name's tag (`lease:<name>`), and
/// leases of different names spread over the Cluster's masters.
#[tokio::test]
async fn key_lands_in_the_slot_of_its_tag_on_the_cluster() {
    let lease = cluster_lease().await;
    let mut conn = lease.connection();
    let mut slots = std::collections::BTreeSet::new();
    for i in 0..16 {
        let name = unique_name(&format!("slot-{i}"));
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(lease_key(&name))
            .query_async(&mut conn)
            .await
            .unwrap();
        let tag_slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("lease:{name}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(slot, tag_slot, "{name}");
        slots.insert(slot);
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        assert_eq!(lease.release(&name, "a").await, Ok(true));
    }
    assert!(slots.len() > 1, "16 names on one slot: {slots:?}");
}

/// After `SCRIPT FLUSH` both scripts are loaded again and answer as before.
#[tokio::test]
async fn scripts_reload_after_the_cache_is_flushed() {
    let server = OwnRedis::start();
    let lease = RedisLease::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(TEST_TIMEOUT);
    let mut admin = server.admin();
    for round in 0..3 {
        let name = format!("flushed-{round}");
        redis::cmd("SCRIPT").arg("FLUSH").exec(&mut admin).unwrap();
        assert_eq!(
            lease.acquire(&name, "a", ttl_ms(MINUTE), now()).await,
            Ok(true)
        );
        redis::cmd("SCRIPT").arg("FLUSH").exec(&mut admin).unwrap();
        assert_eq!(
            lease.acquire(&name, "b", ttl_ms(MINUTE), now()).await,
            Ok(false)
        );
        redis::cmd("SCRIPT").arg("FLUSH").exec(&mut admin).unwrap();
        assert_eq!(lease.release(&name, "a").await, Ok(true));
    }
}

/// A timeout short enough for the tests below, long enough for a healthy
/// loopback server on a busy machine.
const SHORT: Duration = Duration::from_millis(300);
/// Scheduling slack allowed past the timeout.
const SLACK: Duration = Duration::from_millis(700);

async fn every_call_unavailable<C: ConnectionLike + Clone + Send + Sync + 'static>(
    lease: &RedisLease<C>,
    at_least_the_timeout: bool,
    what: &str,
) {
    for op in ["acquire", "release"] {
        let started = Instant::now();
        let result = match op {
            "acquire" => lease.acquire("down", "a", ttl_ms(MINUTE), now()).await,
            _ => lease.release("down", "a").await,
        };
        let took = started.elapsed();
        assert!(
            matches!(result, Err(RepoError::Unavailable(_))),
            "{what}: {op} must be Unavailable, got {result:?}"
        );
        assert!(took <= SHORT + SLACK, "{what}: {op} took {took:?}");
        if at_least_the_timeout {
            assert!(took >= SHORT, "{what}: {op} answered after only {took:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_is_unavailable_within_the_timeout() {
    let mut server = OwnRedis::start();
    let lease = RedisLease::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(SHORT);
    assert_eq!(
        lease.acquire("down", "a", ttl_ms(MINUTE), now()).await,
        Ok(true)
    );
    server.kill();
    every_call_unavailable(&lease, false, "killed server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_is_unavailable_after_the_timeout() {
    let server = OwnRedis::start();
    let lease = RedisLease::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
        .with_timeout(SHORT);
    assert_eq!(
        lease.acquire("down", "a", ttl_ms(MINUTE), now()).await,
        Ok(true)
    );
    let mut admin = server.admin();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("ALL")
        .exec(&mut admin)
        .unwrap();
    every_call_unavailable(&lease, true, "paused server").await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_unavailable() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}");
    let result = RedisLease::connect(&url).await;
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "standalone: {result:?}"
    );
    let result = RedisLease::connect_cluster(&[url.as_str()]).await;
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "cluster: {result:?}"
    );
    let result = RedisLease::connect("not a url").await;
    assert!(
        matches!(result, Err(RepoError::InvalidInput(_))),
        "{result:?}"
    );
}
