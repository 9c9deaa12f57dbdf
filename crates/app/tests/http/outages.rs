//! The server's settling routes through a Redis that is flushed or stopped
//! and a PostgreSQL that restarts, mid-lifecycle, on servers of the test's
//! own: every cost the caller was told was accepted is committed exactly
//! once and logged exactly once after recovery.

use std::time::Duration;

use serde_json::{Value, json};
use spendgate::domain::{CommunityId, Period, Timestamp};
use spendgate::inbound::cycles::{CyclesKey, CyclesOptions};

use crate::own_redis::ThrowawayRedis;
use crate::servers::PgDb;
use crate::support::{self, Reply, Server, admin, options};
use spendgate_fault_proxy::FaultProxy;

/// Tenant key of the Cycles scenarios.
const CYCLES_KEY: &str = "outage-cycles-key-0123456789";

/// A server on a Redis and a PostgreSQL of its own (the database behind a
/// proxy that can be cut), and one community with a budget of 10 USD that
/// is also the Cycles key's tenant.
struct World {
    server: Server,
    redis: ThrowawayRedis,
    postgres: FaultProxy,
    community: String,
}

impl World {
    async fn start() -> Self {
        let redis = ThrowawayRedis::start().await;
        let (db, url) = PgDb::create().await;
        let (postgres, proxied) = FaultProxy::for_url(&url).await.unwrap();
        let community = support::community("outage");
        let mut options = options(vec![admin()]);
        options.cycles = CyclesOptions {
            keys: vec![CyclesKey {
                secret: CYCLES_KEY.to_owned(),
                tenant: CommunityId::parse(community.as_str()).unwrap(),
            }],
            ..CyclesOptions::default()
        };
        let server = Server::on(&redis.url(), &proxied, options, Box::new(db)).await;
        let world = Self {
            server,
            redis,
            postgres,
            community,
        };
        world.set_budget().await;
        world
    }

    fn id(&self) -> CommunityId {
        CommunityId::parse(self.community.as_str()).unwrap()
    }

    fn hold(&self, key: &str) -> String {
        format!(
            "/api/v1/communities/{}/reservations/alice/{key}",
            self.community
        )
    }

    /// `PUT …/budget` to 10 USD, as an operator does after Redis lost its
    /// data (config sync does the same on its next pass).
    async fn set_budget(&self) {
        let r = self
            .server
            .put(format!("/api/v1/communities/{}/budget", self.community))
            .key("budget")
            .json(json!({"limit_usd": "10"}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    async fn reserve(&self, key: &str) -> Reply {
        self.server.reserve(&self.community, key).await
    }

    async fn finalize(&self, key: &str, body: Value) -> Reply {
        self.server
            .post(format!("{}/finalize", self.hold(key)))
            .key(key)
            .json(body)
            .send()
            .await
    }

    async fn cancel(&self, key: &str) -> Reply {
        self.server
            .post(format!("{}/cancel", self.hold(key)))
            .key(key)
            .send()
            .await
    }

    /// A Cycles request with the tenant's key: (status, body).
    async fn cycles(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .server
            .client
            .post(format!("{}{path}", self.server.base))
            .header("X-Cycles-API-Key", CYCLES_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a Cycles reservation of `micros` micro-USD; its id.
    async fn create(&self, key: &str, micros: i64) -> String {
        let (status, body) = self
            .cycles(
                "/v1/reservations",
                json!({
                    "idempotency_key": key,
                    "subject": {"tenant": self.community, "agent": "alice"},
                    "action": {"kind": "llm.completion", "name": "cheap"},
                    "estimate": {"unit": "USD_MICROCENTS", "amount": micros * 100},
                    "ttl_ms": 60_000,
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["reservation_id"].as_str().unwrap().to_owned()
    }

    async fn commit(&self, id: &str, key: &str, micros: i64) -> (u16, Value) {
        self.cycles(
            &format!("/v1/reservations/{id}/commit"),
            json!({
                "idempotency_key": key,
                "actual": {"unit": "USD_MICROCENTS", "amount": micros * 100},
            }),
        )
        .await
    }

    async fn release(&self, id: &str, key: &str) -> (u16, Value) {
        self.cycles(
            &format!("/v1/reservations/{id}/release"),
            json!({"idempotency_key": key}),
        )
        .await
    }

    /// Applies what the finalize queue still holds, as the replay worker
    /// does, until nothing is left: the durable queue is empty and a pass
    /// after the longest backoff (1 s here) claims nothing.
    async fn drain_queue(&self) {
        let budget = self.server.sg.budget();
        let mut idle = 0;
        for _ in 0..300 {
            let report = budget.replay_settlements(100).await.unwrap();
            let durable = self.server.sg.ports().finalize_queue.len().await.unwrap();
            idle = if report.claimed == 0 && durable == 0 {
                idle + 1
            } else {
                0
            };
            if idle > 12 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the finalize queue never emptied");
    }

    /// Committed, reserved and holds as the API reports them.
    async fn counters(&self) -> (i64, i64, i64) {
        let budget = self.server.budget(&self.community).await;
        (
            budget["committed_micros"].as_i64().unwrap(),
            budget["reserved_micros"].as_i64().unwrap(),
            budget["holds"].as_i64().unwrap(),
        )
    }

    /// The usage log's sum for the current period, and its rows per key.
    async fn logged(&self, keys: &[&str]) -> i64 {
        let log = &self.server.sg.ports().usage_log;
        for key in keys {
            let hold = spendgate::domain::HoldRef {
                user: spendgate::domain::UserId::parse("alice").unwrap(),
                key: spendgate::domain::IdempotencyKey::parse(*key).unwrap(),
            };
            assert!(
                log.logged(&self.id(), &hold, Timestamp::EPOCH)
                    .await
                    .unwrap()
                    .is_some(),
                "no usage row for {key}"
            );
        }
        let period = Period::containing(self.server.sg.ports().clock.now()).unwrap();
        log.total_cost(&self.id(), period).await.unwrap().get()
    }
}

/// `cheap` at 1,000 prompt and 500 completion tokens.
const TOKENS_COST: i64 = 450;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalize_after_redis_was_flushed_commits_its_cost_once() {
    let w = World::start().await;
    for key in ["m1", "m2", "m3"] {
        assert_eq!(w.reserve(key).await.status, 201);
    }
    let r = w.finalize("m1", json!({"actual_usd": "0.25"})).await;
    assert_eq!(r.json["result"], "finalized", "{}", r.text);
    w.redis.flush().await;

    // The spent 0.75 USD is committed without the hold the store lost.
    let r = w.finalize("m2", json!({"actual_usd": "0.75"})).await;
    assert_eq!(
        (r.status, r.json["result"].as_str()),
        (200, Some("committed_without_hold")),
        "{}",
        r.text
    );
    let again = w.finalize("m2", json!({"actual_usd": "0.75"})).await;
    assert_eq!(
        (again.status, again.json["result"].as_str()),
        (200, Some("already_finalized")),
        "{}",
        again.text
    );
    // Nothing held any more, nothing to charge: 404, nothing written.
    w.cancel("m3").await.assert_problem(404, "unknown-hold");

    // Recovery: the limits again, and the counters rebuilt from the log.
    w.set_budget().await;
    w.server.sg.budget().rebuild(&w.id(), None).await.unwrap();
    assert_eq!(w.counters().await, (1_000_000, 0, 0));
    assert_eq!(w.logged(&["m1", "m2"]).await, 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_while_redis_is_stopped_are_queued_and_applied_once() {
    let w = World::start().await;
    for key in ["m1", "m2", "m3"] {
        assert_eq!(w.reserve(key).await.status, 201);
    }
    w.redis.pause();
    let r = w.finalize("m1", json!({"actual_usd": "0.25"})).await;
    assert_eq!(
        (r.status, r.json["result"].as_str()),
        (202, Some("queued")),
        "{}",
        r.text
    );
    let tokens = json!({"prompt_tokens": 1_000, "completion_tokens": 500});
    let mut with_model = tokens.clone();
    with_model["model"] = json!("cheap");
    let r = w.finalize("m2", with_model).await;
    assert_eq!((r.status, r.json["result"].as_str()), (202, Some("queued")));
    // Tokens without the model: the store must say which model prices
    // them, and cannot. Nothing is kept; the caller retries.
    w.finalize("m3", tokens.clone())
        .await
        .assert_problem(503, "unavailable");
    // A reserve fails closed.
    w.reserve("m4").await.assert_problem(503, "unavailable");
    w.redis.resume();

    w.drain_queue().await;
    let retry = w.finalize("m1", json!({"actual_usd": "0.25"})).await;
    assert_eq!(retry.json["result"], "already_finalized", "{}", retry.text);
    let r = w.finalize("m3", tokens).await;
    assert_eq!(r.json["result"], "finalized", "{}", r.text);
    // The refused reserve may have reached Redis before its reply was
    // lost: the caller's retry finds it, and it is cancelled.
    assert!(matches!(w.reserve("m4").await.status, 200 | 201));
    assert_eq!(w.cancel("m4").await.status, 200);

    let committed = 250_000 + 2 * TOKENS_COST;
    assert_eq!(w.counters().await, (committed, 0, 0));
    assert_eq!(w.logged(&["m1", "m2", "m3"]).await, committed);
}

/// A budget change after Redis lost its data, while a settlement made
/// before the loss is still on its way (queued and leased to a caller in
/// flight): the counters cannot be rebuilt yet (the log lacks that cost),
/// so the budget is saved and answered 202 `applied: false`, and no limits
/// reach the store; once the settlement is done the same change rebuilds
/// the period and applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_change_over_a_lost_store_waits_for_the_settlements_on_their_way() {
    let w = World::start().await;
    assert_eq!(w.reserve("m1").await.status, 201);
    let hold = spendgate::domain::HoldRef {
        user: spendgate::domain::UserId::parse("alice").unwrap(),
        key: spendgate::domain::IdempotencyKey::parse("m1").unwrap(),
    };
    let ticket = spendgate::HoldTicket {
        community: w.id(),
        hold: match w.server.sg.budget().lookup(&w.id(), &hold).await.unwrap() {
            spendgate::domain::HoldState::Held { hold } => hold,
            other => panic!("{other:?}"),
        },
        trace_id: None,
    };
    w.redis.flush().await;
    // A caller's settlement, written ahead and leased to it for an hour.
    let queue = &w.server.sg.ports().finalize_queue;
    let pending = spendgate::ports::PendingSettlement {
        community: w.id(),
        settlement: spendgate::domain::Settlement {
            user: hold.user.clone(),
            key: hold.key.clone(),
            actual: spendgate::domain::Micros::new(250_000).unwrap(),
        },
        period: ticket.hold.period,
        model: ticket.hold.model.clone(),
        estimate: ticket.hold.estimate,
        hold_created_at: Some(ticket.hold.created_at),
        tokens: spendgate::domain::TokenCounts::default(),
        trace_id: None,
        source: spendgate::ports::CostSource::Finalize,
    };
    let now = w.server.sg.ports().clock.now();
    assert!(
        queue
            .enqueue(&pending, now.plus_millis(3_600_000).unwrap())
            .await
            .unwrap()
    );

    let world = &w;
    let change = |key: &'static str| async move {
        world
            .server
            .put(format!("/api/v1/communities/{}/budget", world.community))
            .key(key)
            .json(json!({"limit_usd": "10"}))
            .send()
            .await
    };
    let r = change("while-on-its-way").await;
    assert_eq!(
        (r.status, r.json["applied"].as_bool()),
        (202, Some(false)),
        "{}",
        r.text
    );
    w.reserve("m2")
        .await
        .assert_problem(409, "community-not-configured");
    // The caller is gone; its settlement becomes due and is replayed.
    queue
        .retry_at(&w.id(), &hold, pending.hold_created_at, "caller gone", now)
        .await
        .unwrap();
    w.drain_queue().await;
    let r = change("after-the-replay").await;
    assert_eq!(
        (r.status, r.json["applied"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text
    );
    assert_eq!(w.counters().await, (250_000, 0, 0));
    assert_eq!(w.logged(&["m1"]).await, 250_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_while_postgres_restarts_lose_no_usage_row() {
    let w = World::start().await;
    for key in ["m1", "m2"] {
        assert_eq!(w.reserve(key).await.status, 201);
    }
    w.postgres.set_cut(true);
    // The store is on Redis: the settlement is applied; its usage row
    // waits in the process until the database is back.
    let r = w.finalize("m1", json!({"actual_usd": "0.25"})).await;
    assert_eq!(r.json["result"], "finalized", "{}", r.text);
    let r = w.cancel("m2").await;
    assert_eq!(r.json["result"], "finalized", "{}", r.text);
    // A budget change needs the database: refused, nothing changed.
    let r = w
        .server
        .put(format!("/api/v1/communities/{}/budget", w.community))
        .key("b2")
        .json(json!({"limit_usd": "99"}))
        .send()
        .await;
    r.assert_problem(503, "unavailable");
    w.postgres.set_cut(false);

    w.drain_queue().await;
    assert_eq!(w.counters().await, (250_000, 0, 0));
    assert_eq!(w.logged(&["m1", "m2"]).await, 250_000);
    assert_eq!(
        w.server.budget(&w.community).await["limit_micros"],
        10_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycles_commit_after_redis_restarted_empty_commits_its_cost_once() {
    let mut w = World::start().await;
    let r1 = w.create("c1", 5_000).await;
    let r2 = w.create("c2", 5_000).await;
    let r3 = w.create("c3", 5_000).await;
    assert_eq!(w.commit(&r1, "k1", 1_000).await.0, 200);
    // Without persistence: holds, records and markers are gone.
    w.redis.lose_everything().await;

    // The first call on the old connection may fail ("nothing was done,
    // retry") while it reconnects; the client retries with the same key.
    let mut reply = w.commit(&r2, "k2", 3_000).await;
    for _ in 0..50 {
        if reply.0 != 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = w.commit(&r2, "k2", 3_000).await;
    }
    let (status, body) = reply;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("COMMITTED")),
        "{body}"
    );
    let (status, body) = w.commit(&r2, "k2", 3_000).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("COMMITTED")));
    let (status, body) = w.release(&r3, "k3").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("NOT_FOUND")));

    w.set_budget().await;
    w.server.sg.budget().rebuild(&w.id(), None).await.unwrap();
    let (committed, reserved, holds) = w.counters().await;
    assert_eq!((committed, reserved, holds), (4_000, 0, 0));
    let period = Period::containing(w.server.sg.ports().clock.now()).unwrap();
    let log = &w.server.sg.ports().usage_log;
    assert_eq!(log.total_cost(&w.id(), period).await.unwrap().get(), 4_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycles_commit_while_redis_is_stopped_does_nothing_and_its_retry_commits_once() {
    let w = World::start().await;
    let r1 = w.create("c1", 5_000).await;
    w.redis.pause();
    // The idempotency records live on the same Redis: nothing can be
    // claimed, so nothing is done, and the client is told to retry.
    let (status, body) = w.commit(&r1, "k1", 2_000).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("INTERNAL_ERROR")),
        "{body}"
    );
    w.redis.resume();
    let (status, body) = w.commit(&r1, "k1", 2_000).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("COMMITTED")),
        "{body}"
    );
    w.drain_queue().await;
    assert_eq!(w.counters().await, (2_000, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycles_commit_the_store_cannot_take_is_kept_and_applied_once() {
    let w = World::start().await;
    let r1 = w.create("c1", 5_000).await;
    // The budget store alone times out (as with a replica that does not
    // acknowledge): the records answer, the settlement is kept, and the
    // commit will not fail, so it is answered as made.
    w.server
        .store
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = w.commit(&r1, "k1", 2_000).await;
    assert_eq!(
        (
            status,
            body["status"].as_str(),
            body["charged"]["amount"].as_i64()
        ),
        (200, Some("COMMITTED"), Some(200_000)),
        "{body}"
    );
    w.server
        .store
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    w.drain_queue().await;
    assert_eq!(w.counters().await, (2_000, 0, 0));
    // The replayed answer is the first one.
    let (status, body) = w.commit(&r1, "k1", 2_000).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("COMMITTED")));
    assert_eq!(w.counters().await, (2_000, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycles_commit_while_postgres_restarts_loses_no_usage_row() {
    let w = World::start().await;
    let r1 = w.create("c1", 5_000).await;
    w.postgres.set_cut(true);
    let (status, body) = w.commit(&r1, "k1", 2_000).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("COMMITTED")));
    w.postgres.set_cut(false);
    w.drain_queue().await;
    assert_eq!(w.counters().await, (2_000, 0, 0));
    let period = Period::containing(w.server.sg.ports().clock.now()).unwrap();
    let log = &w.server.sg.ports().usage_log;
    assert_eq!(log.total_cost(&w.id(), period).await.unwrap().get(), 2_000);
}
