//! Waiting for replicas after each budget write, against a throw-away
//! primary and its replica: writes succeed while the replica acknowledges,
//! answer `Unavailable` (the write made, its fate unknown) when it does
//! not, and a write waiting for it holds up no other caller.

use std::time::Duration;

use redis::aio::ConnectionManager;
use spendgate_adapter_redis::{ConnectOptions, RedisBudgetStore, ReplicaWait};
use spendgate_contract::fixture::{key, m, unique_community, user};
use spendgate_domain::{
    BudgetPolicy, ConfigVersion, HoldRef, HoldState, Limits, Period, ReserveOutcome,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::lifecycle::{lifecycle, lifecycle_on, now, reservation};
use crate::own_redis::OwnRedis;
use crate::support::{TEST_TIMEOUT, command_calls};

async fn waiting_store(primary: &OwnRedis, wait: Duration) -> RedisBudgetStore<ConnectionManager> {
    let options = ConnectOptions {
        replica_wait: Some(
            ReplicaWait::new(1, wait)
                .unwrap()
                .with_connections(2)
                .unwrap(),
        ),
        ..ConnectOptions::default()
    };
    RedisBudgetStore::connect_with(&primary.url(), BudgetPolicy::default(), &options)
        .await
        .unwrap()
        .with_timeout(TEST_TIMEOUT)
}

/// Clients blocked on the server (a `WAIT` counts as one).
fn blocked_clients(server: &OwnRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut server.admin())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn writes_succeed_once_the_replica_acknowledged_them() {
    let primary = OwnRedis::start();
    let _replica = OwnRedis::start_replica_of(&primary);
    let store = waiting_store(&primary, TEST_TIMEOUT).await;

    lifecycle(&store, "wait-ok").await.unwrap();

    // set_limits, reserve and finalize each waited.
    assert_eq!(command_calls(&mut primary.admin(), "wait"), 3);
}

#[tokio::test]
async fn a_write_the_replica_does_not_acknowledge_is_unavailable_but_made() {
    let primary = OwnRedis::start();
    let replica = OwnRedis::start_replica_of(&primary);
    let store = waiting_store(&primary, Duration::from_millis(200)).await;
    let c = unique_community("wait-lost");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    replica.pause();

    let result = store.reserve(&c, &reservation("k1"), now()).await;

    replica.resume();
    let Err(StoreError::Unavailable(message)) = result else {
        panic!("not unavailable: {result:?}");
    };
    assert!(message.contains("replicas required"), "{message}");
    // The hold is on the primary, as after a timeout: a retry with the
    // same key finds it, else the reaper releases it.
    let hold = HoldRef {
        user: user("alice"),
        key: key("k1"),
    };
    assert!(matches!(
        store.lookup(&c, &hold, now()).await.unwrap(),
        HoldState::Held { .. }
    ));
}

#[tokio::test]
async fn a_write_waiting_for_the_replica_holds_up_no_other_caller() {
    let primary = OwnRedis::start();
    let replica = OwnRedis::start_replica_of(&primary);
    // Long enough that the reads below finish well inside it.
    let store = waiting_store(&primary, Duration::from_secs(3)).await;
    let c = unique_community("wait-others");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    replica.pause();

    let waiting = tokio::spawn({
        let store = store.clone();
        let c = c.clone();
        async move { store.reserve(&c, &reservation("k1"), now()).await }
    });
    while blocked_clients(&primary) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Reads use the multiplexed connection, not the one blocked in WAIT.
    let status = store
        .status(&c, Period::containing(now()).unwrap())
        .await
        .unwrap();
    let hold = HoldRef {
        user: user("alice"),
        key: key("k1"),
    };
    let state = store.lookup(&c, &hold, now()).await.unwrap();

    assert!(
        !waiting.is_finished(),
        "the WAIT ended before the reads ran"
    );
    assert_eq!(status.reserved, m(10));
    assert!(matches!(state, HoldState::Held { .. }), "{state:?}");
    // Back within the WAIT timeout, the replica acknowledges and the
    // waiting write succeeds.
    replica.resume();
    let result = waiting.await.unwrap();
    assert!(
        matches!(result, Ok(ReserveOutcome::Reserved { .. })),
        "{result:?}"
    );
}

/// A two-master cluster where only the first master has a replica.
struct HalfReplicated {
    first: OwnRedis,
    second: OwnRedis,
    _replica: OwnRedis,
}

fn query(node: &OwnRedis, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut node.admin()).unwrap()
}

fn text(node: &OwnRedis, args: &[&str]) -> String {
    match query(node, args) {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::SimpleString(text) => text,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl HalfReplicated {
    fn start() -> Self {
        let first = OwnRedis::start_cluster_node();
        let second = OwnRedis::start_cluster_node();
        let replica = OwnRedis::start_cluster_node();
        query(&first, &["CLUSTER", "ADDSLOTSRANGE", "0", "8191"]);
        query(&second, &["CLUSTER", "ADDSLOTSRANGE", "8192", "16383"]);
        for node in [&second, &replica] {
            query(
                &first,
                &[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &node.port.to_string(),
                    &node.bus_port().to_string(),
                ],
            );
        }
        let first_id = text(&first, &["CLUSTER", "MYID"]);
        wait_for("the replica did not learn the first master", || {
            text(&replica, &["CLUSTER", "NODES"]).contains(&first_id)
        });
        query(&replica, &["CLUSTER", "REPLICATE", &first_id]);
        wait_for("the cluster did not settle", || {
            [&first, &second, &replica]
                .iter()
                .all(|n| text(n, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && text(&first, &["INFO", "replication"]).contains("connected_slaves:1")
                && text(&replica, &["INFO", "replication"]).contains("master_link_status:up")
        });
        Self {
            first,
            second,
            _replica: replica,
        }
    }

    /// A new community whose slot the first (`true`) or second master
    /// serves.
    fn community_on(&self, first: bool) -> spendgate_domain::CommunityId {
        loop {
            let c = unique_community("wait-cluster");
            let slot = match query(&self.first, &["CLUSTER", "KEYSLOT", c.as_str()]) {
                redis::Value::Int(slot) => slot,
                other => panic!("CLUSTER KEYSLOT: {other:?}"),
            };
            if (slot < 8192) == first {
                return c;
            }
        }
    }
}

#[tokio::test]
async fn on_a_cluster_the_wait_reaches_the_master_that_ran_the_script() {
    let cluster = HalfReplicated::start();
    let options = ConnectOptions {
        replica_wait: Some(ReplicaWait::new(1, Duration::from_millis(200)).unwrap()),
        ..ConnectOptions::default()
    };
    let store = RedisBudgetStore::connect_cluster_with(
        &[cluster.first.url(), cluster.second.url()],
        BudgetPolicy::default(),
        &options,
    )
    .await
    .unwrap()
    .with_timeout(TEST_TIMEOUT);

    // The first master has a replica: its writes are acknowledged.
    lifecycle_on(&store, &cluster.community_on(true))
        .await
        .unwrap();
    // The second has none: its writes are not.
    let result = store
        .set_limits(
            &cluster.community_on(false),
            Limits::new(m(1_000)),
            ConfigVersion::ZERO,
        )
        .await;
    assert!(
        matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("replicas required")),
        "{result:?}"
    );
}
