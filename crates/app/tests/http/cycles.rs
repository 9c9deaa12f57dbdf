//! The Cycles protocol end to end with the real Rust client (`runcycles`)
//! against `serve` on 127.0.0.1:0, on every backend.

use std::time::Duration;

use runcycles::models::{
    Action, Amount, BalanceParams, CommitRequest, CommitStatus, Decision, ErrorCode,
    EventCreateRequest, EventStatus, IdempotencyKey, ReservationCreateRequest, ReservationStatus,
    Subject,
};
use runcycles::{CyclesClient, Error};
use spendgate::domain::{CommunityId, Limits, Micros};
use spendgate::inbound::cycles::{CyclesKey, CyclesOptions};
use tokio::task::JoinSet;

use crate::support::{self, Backend, Server};

/// Tenant A's key.
pub const KEY_A: &str = "cycles-key-a-0123456789";
/// Tenant B's key.
pub const KEY_B: &str = "cycles-key-b-0123456789";

/// A server with two tenants of $1 each, and a client for each.
pub struct Env {
    pub server: Server,
    pub tenant: String,
    pub other: String,
    pub client: CyclesClient,
    pub other_client: CyclesClient,
}

impl Env {
    pub async fn start(backend: Backend) -> Self {
        let tenant = support::community("cy");
        let other = support::community("cy-b");
        let mut options = support::options(vec![support::admin()]);
        options.cycles = CyclesOptions {
            keys: vec![
                CyclesKey {
                    secret: KEY_A.to_owned(),
                    tenant: CommunityId::parse(tenant.as_str()).unwrap(),
                },
                CyclesKey {
                    secret: KEY_B.to_owned(),
                    tenant: CommunityId::parse(other.as_str()).unwrap(),
                },
            ],
            ..CyclesOptions::default()
        };
        let server = Server::start_with(backend, options).await;
        for c in [&tenant, &other] {
            server
                .sg
                .budget()
                .set_budget(
                    &CommunityId::parse(c.as_str()).unwrap(),
                    Limits::new(Micros::from_usd(1)),
                )
                .await
                .unwrap();
        }
        let client = Self::client(&server, KEY_A);
        let other_client = Self::client(&server, KEY_B);
        Self {
            server,
            tenant,
            other,
            client,
            other_client,
        }
    }

    pub fn client(server: &Server, key: &str) -> CyclesClient {
        CyclesClient::builder(key, server.base.as_str())
            .journal_enabled(false)
            .retry_enabled(false)
            .build()
    }

    pub fn subject(&self) -> Subject {
        Subject {
            tenant: Some(self.tenant.clone()),
            agent: Some("bot-1".to_owned()),
            ..Subject::default()
        }
    }

    /// A reservation request of `microcents` with a TTL and no grace.
    pub fn create(&self, key: &str, microcents: i64, ttl_ms: u64) -> ReservationCreateRequest {
        ReservationCreateRequest::builder()
            .idempotency_key(IdempotencyKey::new(key))
            .subject(self.subject())
            .action(Action::new("llm.completion", "openai:gpt-4o-mini"))
            .estimate(Amount::usd_microcents(microcents))
            .ttl_ms(ttl_ms)
            .grace_period_ms(0)
            .build()
    }

    /// (spent, reserved) of the tenant, in USD_MICROCENTS.
    pub async fn ledger(&self) -> (i64, i64) {
        let balances = self
            .client
            .get_balances(&BalanceParams {
                tenant: Some(self.tenant.clone()),
                ..BalanceParams::default()
            })
            .await
            .unwrap();
        let tenant = &balances.balances[0];
        assert_eq!(tenant.scope, format!("tenant:{}", self.tenant));
        (
            tenant.spent.as_ref().unwrap().amount,
            tenant.reserved.as_ref().unwrap().amount,
        )
    }
}

/// Runs each named scenario on every deployment shape (memory, the
/// embedded SQLite, Redis + PostgreSQL, Redis Cluster + PostgreSQL) with an
/// [`Env`].
#[macro_export]
macro_rules! cycles_on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::cycles::Env::start($crate::support::Backend::Memory).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::cycles::Env::start($crate::support::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_postgres() {
                    super::$name($crate::cycles::Env::start($crate::support::Backend::RedisPostgres).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_cluster_postgres() {
                    super::$name($crate::cycles::Env::start($crate::support::Backend::RedisClusterPostgres).await).await;
                }
            }
        )*
    };
}

cycles_on_every_backend!(
    reserve_then_commit,
    reserve_then_release,
    dropped_guard_releases,
    heartbeat_keeps_a_long_call_alive,
    concurrent_reserves_never_oversubscribe,
    late_commit_falls_back_to_one_event,
    client_errors,
);

async fn reserve_then_commit(env: Env) {
    let guard = env
        .client
        .reserve(env.create("c1", 50_000, 60_000))
        .await
        .unwrap();
    assert_eq!(guard.decision(), Decision::Allow);
    assert_eq!(env.ledger().await, (0, 50_000));
    let detail = env
        .client
        .get_reservation(guard.reservation_id())
        .await
        .unwrap();
    assert_eq!(detail.status, ReservationStatus::Active);
    assert_eq!(detail.reserved, Amount::usd_microcents(50_000));
    assert_eq!(detail.subject, env.subject());
    let id = guard.reservation_id().clone();
    let committed = guard
        .commit(
            CommitRequest::builder()
                .actual(Amount::usd_microcents(32_050))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(committed.status, CommitStatus::Committed);
    // 32,050 microcents round up to 321 micro-USD: never under-charged.
    assert_eq!(committed.charged, Amount::usd_microcents(32_100));
    assert_eq!(committed.released, Some(Amount::usd_microcents(17_900)));
    assert_eq!(env.ledger().await, (32_100, 0));
    let detail = env.client.get_reservation(&id).await.unwrap();
    assert_eq!(detail.status, ReservationStatus::Committed);
    assert_eq!(detail.committed, Some(Amount::usd_microcents(32_100)));
}

async fn reserve_then_release(env: Env) {
    let guard = env
        .client
        .reserve(env.create("r1", 70_000, 60_000))
        .await
        .unwrap();
    let id = guard.reservation_id().clone();
    let released = guard.release("not needed").await.unwrap();
    assert_eq!(released.released, Amount::usd_microcents(70_000));
    assert_eq!(env.ledger().await, (0, 0));
    let detail = env.client.get_reservation(&id).await.unwrap();
    assert_eq!(detail.status, ReservationStatus::Released);
}

async fn dropped_guard_releases(env: Env) {
    let guard = env
        .client
        .reserve(env.create("d1", 40_000, 60_000))
        .await
        .unwrap();
    assert_eq!(env.ledger().await, (0, 40_000));
    drop(guard);
    for _ in 0..100 {
        if env.ledger().await == (0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the dropped guard's release never landed: {:?}",
        env.ledger().await
    );
}

async fn heartbeat_keeps_a_long_call_alive(env: Env) {
    let guard = env
        .client
        .reserve(env.create("h1", 10_000, 2_000))
        .await
        .unwrap();
    let first = guard.expires_at_ms().unwrap();
    // Twice the TTL, with no grace: only the heartbeat's extends keep it.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let detail = env
        .client
        .get_reservation(guard.reservation_id())
        .await
        .unwrap();
    assert_eq!(detail.status, ReservationStatus::Active);
    assert!(
        detail.expires_at_ms > first + 2_000,
        "{} vs {first}",
        detail.expires_at_ms
    );
    let committed = guard
        .commit(
            CommitRequest::builder()
                .actual(Amount::usd_microcents(10_000))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(committed.status, CommitStatus::Committed);
    assert_eq!(env.ledger().await, (10_000, 0));
}

async fn concurrent_reserves_never_oversubscribe(env: Env) {
    // $1 is 100,000,000 microcents: 33 of 50 reserves of 3,000,000 fit.
    let mut calls = JoinSet::new();
    for n in 0..50 {
        let client = env.client.clone();
        let request = env.create(&format!("burst-{n}"), 3_000_000, 60_000);
        calls.spawn(async move { client.create_reservation(&request).await });
    }
    let (mut held, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(response) => {
                assert_eq!(response.decision, Decision::Allow);
                held += 1;
            }
            Err(Error::BudgetExceeded { status, .. }) => {
                assert_eq!(status, Some(409));
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((held, refused), (33, 17));
    assert_eq!(env.ledger().await, (0, 33 * 3_000_000));
}

async fn late_commit_falls_back_to_one_event(env: Env) {
    // The low-level call: no guard, so no heartbeat keeps it alive.
    let created = env
        .client
        .create_reservation(&env.create("late-1", 20_000, 1_000))
        .await
        .unwrap();
    let id = created.reservation_id.unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let commit = CommitRequest::builder()
        .idempotency_key(IdempotencyKey::new("late-commit"))
        .actual(Amount::usd_microcents(25_000))
        .build();
    let error = env
        .client
        .commit_reservation(&id, &commit)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(410));
    assert_eq!(error.error_code(), Some(ErrorCode::ReservationExpired));
    // What the guard does next: the same actual as an event, same key.
    let event = EventCreateRequest::builder()
        .idempotency_key(IdempotencyKey::new("late-commit"))
        .subject(env.subject())
        .action(Action::new("llm.completion", "openai:gpt-4o-mini"))
        .actual(Amount::usd_microcents(25_000))
        .build();
    let applied = env.client.create_event(&event).await.unwrap();
    assert_eq!(applied.status, EventStatus::Applied);
    let again = env.client.create_event(&event).await.unwrap();
    assert_eq!(again.event_id, applied.event_id);
    // The reaper releases the expired hold; the cost counts once.
    let c = CommunityId::parse(env.tenant.as_str()).unwrap();
    let now = env.server.sg.ports().clock.now();
    env.server.sg.ports().store.reap(&c, now).await.unwrap();
    assert_eq!(env.ledger().await, (25_000, 0));
}

async fn client_errors(env: Env) {
    // Another unit.
    let mut tokens = env.create("u1", 100, 60_000);
    tokens.estimate = Amount::tokens(100);
    let error = env.client.create_reservation(&tokens).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert_eq!(error.error_code(), Some(ErrorCode::UnitMismatch));
    // A key the server does not know.
    let stranger = Env::client(&env.server, "cycles-key-unknown-000");
    let error = stranger
        .create_reservation(&env.create("w1", 100, 60_000))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.error_code(), Some(ErrorCode::Unauthorized));
    // Another tenant's reservation: as unknown as one never made.
    let created = env
        .client
        .create_reservation(&env.create("t1", 100, 60_000))
        .await
        .unwrap();
    let id = created.reservation_id.unwrap();
    let error = env.other_client.get_reservation(&id).await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert_eq!(error.error_code(), Some(ErrorCode::NotFound));
    let commit = CommitRequest::builder()
        .actual(Amount::usd_microcents(100))
        .build();
    let error = env
        .other_client
        .commit_reservation(&id, &commit)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    // Naming another tenant in the subject.
    let mut foreign = env.create("t2", 100, 60_000);
    foreign.subject.tenant = Some(env.other.clone());
    let error = env.client.create_reservation(&foreign).await.unwrap_err();
    assert_eq!(error.status(), Some(403));
    // The same key with another body.
    let error = env
        .client
        .create_reservation(&env.create("t1", 200, 60_000))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(409));
    assert_eq!(error.error_code(), Some(ErrorCode::IdempotencyMismatch));
    // The replay answers the first id.
    let again = env
        .client
        .create_reservation(&env.create("t1", 100, 60_000))
        .await
        .unwrap();
    assert_eq!(again.reservation_id.unwrap(), id);
}
