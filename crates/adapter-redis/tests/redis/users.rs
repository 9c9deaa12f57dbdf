//! A period's users on Redis: nothing on a hot path reads them all. Status
//! reads the totals and at most one user's sums, the listing is paged by
//! a bounded scan, pruning pops users in batches, and a reserve of
//! estimate 0 adds no user.

use std::collections::BTreeSet;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use spendgate_adapter_redis::keys::{records_key, user_sums_key};
use spendgate_adapter_redis::script::Op;
use spendgate_contract::fixture::{listing, m, period, unique_community, user};
use spendgate_domain::{CommunityId, ConfigVersion, Limits, Period, UserSpend};
use spendgate_ports::{BudgetStore, PageSize, USERS_PAGE_MAX};

use crate::fixture::{at, reservation, settlement};
use crate::support::{raw_standalone, standalone_redis, standalone_url};

const DAY_MS: i64 = 86_400_000;
/// 2026-11-15T00:00:00Z.
const NOV_15: i64 = 1_794_700_800_000;
/// 2026-12-01T00:00:00Z.
const DEC_1: i64 = 1_796_083_200_000;

async fn configured(store: &impl BudgetStore, label: &str) -> CommunityId {
    let c = unique_community(label);
    store
        .set_limits(&c, Limits::new(m(1_000_000_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    c
}

/// Adds `n` users with sums "1 0" to `p` in pipelines, as many reserves
/// and finalizes would, after one real lifecycle made the period's totals
/// and listed it in the header.
async fn seed_users(store: &impl BudgetStore, c: &CommunityId, p: Period, n: usize) {
    store
        .reserve(c, &reservation("seed", "k", 1, 60_000), at(NOV_15))
        .await
        .unwrap();
    store
        .finalize(c, &settlement("seed", "k", 1), at(NOV_15 + 1))
        .await
        .unwrap();
    // No response timeout: a pipeline of thousands of commands on a busy
    // machine may take longer than a client's default.
    let client = redis::Client::open(standalone_url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let name = format!("u{i}");
            pipe.sadd(user_sums_key(c, p), &name).ignore();
            pipe.hset(records_key(c), format!("{p}:{name}"), "1 0")
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
}

async fn members(conn: &mut ConnectionManager, c: &CommunityId, p: Period) -> i64 {
    conn.scard(user_sums_key(c, p)).await.unwrap()
}

#[tokio::test]
async fn a_reserve_of_estimate_zero_adds_no_user_until_a_cost_does() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "users-zero").await;
    let p = period("2026-11");
    for k in ["k1", "k2", "k3"] {
        store
            .reserve(&c, &reservation("free", k, 0, 60_000), at(NOV_15))
            .await
            .unwrap();
    }
    store
        .cancel(
            &c,
            &spendgate_contract::fixture::hold("free", "k1"),
            at(NOV_15 + 1),
        )
        .await
        .unwrap();
    assert_eq!(members(&mut conn, &c, p).await, 0);
    let sums: Option<String> = conn.hget(records_key(&c), "2026-11:free").await.unwrap();
    assert_eq!(sums, None, "no sums field either");

    store
        .finalize(&c, &settlement("free", "k2", 40), at(NOV_15 + 2))
        .await
        .unwrap();
    assert_eq!(members(&mut conn, &c, p).await, 1, "a cost adds the user");
    let status = store
        .status_with_user(&c, p, Some(&user("free")))
        .await
        .unwrap();
    assert_eq!(
        status.user,
        Some(UserSpend {
            committed: m(40),
            reserved: m(0)
        })
    );
    assert_eq!(listing(&store, &c, p).await.len(), 1);
}

#[tokio::test]
async fn an_estimate_zero_hold_settled_next_month_joins_its_own_months_users() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "users-zero-late").await;
    store
        .reserve(&c, &reservation("free", "k1", 0, 60_000), at(DEC_1 - 10))
        .await
        .unwrap();
    // The adapter guesses December, the script answers "November's set",
    // and the second call commits there.
    store
        .finalize(&c, &settlement("free", "k1", 25), at(DEC_1 + 5))
        .await
        .unwrap();
    let (nov, dec) = (period("2026-11"), period("2026-12"));
    assert_eq!(members(&mut conn, &c, nov).await, 1);
    assert_eq!(members(&mut conn, &c, dec).await, 0);
    let listed = listing(&store, &c, nov).await;
    assert_eq!(listed.get(&user("free")).map(|s| s.committed), Some(m(25)));
    assert_eq!(store.status(&c, nov).await.unwrap().committed, m(25));
}

#[tokio::test]
async fn reaping_an_estimate_zero_hold_writes_no_user_sums() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "users-zero-reap").await;
    store
        .reserve(&c, &reservation("free", "k1", 0, 60_000), at(NOV_15))
        .await
        .unwrap();
    let reaped = store.reap(&c, at(NOV_15 + 120_000)).await.unwrap();
    assert_eq!(reaped.count, 1);
    let sums: Option<String> = conn.hget(records_key(&c), "2026-11:free").await.unwrap();
    assert_eq!(sums, None);
    assert_eq!(members(&mut conn, &c, period("2026-11")).await, 0);
}

/// 25,000 users: every page holds at most 1,000, the pages together name
/// every user, and status never carries them.
#[tokio::test]
async fn the_listing_of_a_large_period_comes_in_bounded_pages() {
    let store = standalone_redis().await;
    let c = configured(&store, "users-pages").await;
    let p = period("2026-11");
    seed_users(&store, &c, p, 25_000).await;

    let status = store.status(&c, p).await.unwrap();
    assert_eq!((status.committed, status.user), (m(1), None));

    let mut seen = BTreeSet::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .users(&c, p, cursor.as_ref(), PageSize::MAX)
            .await
            .unwrap();
        pages += 1;
        assert!(page.users.len() <= usize::from(USERS_PAGE_MAX));
        seen.extend(page.users.into_iter().map(|(u, _)| u));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25_001, "every seeded user and the seed");
    assert!(pages >= 26, "{pages} pages");
}

#[tokio::test]
async fn a_cursor_the_store_did_not_issue_is_invalid_input() {
    let store = standalone_redis().await;
    let c = configured(&store, "users-cursor").await;
    let cursor = spendgate_ports::UsersCursor::parse("alice").unwrap();
    let got = store
        .users(&c, period("2026-11"), Some(&cursor), PageSize::MAX)
        .await;
    assert!(
        matches!(got, Err(spendgate_ports::StoreError::InvalidInput(_))),
        "{got:?}"
    );
}

/// A period of 2,500 users is pruned by several bounded calls, and
/// nothing of it is left.
#[tokio::test]
async fn pruning_a_period_of_many_users_pops_them_in_batches() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = configured(&store, "users-prune").await;
    let p = period("2026-11");
    seed_users(&store, &c, p, 2_500).await;

    // Long after the retention: the reap prunes November.
    store.reap(&c, at(DEC_1 + 200 * DAY_MS)).await.unwrap();
    assert_eq!(members(&mut conn, &c, p).await, 0);
    let fields: Vec<String> = conn.hkeys(records_key(&c)).await.unwrap();
    assert!(
        fields.iter().all(|f| !f.starts_with("2026-11")),
        "left: {:?}",
        fields
            .iter()
            .filter(|f| f.starts_with("2026-11"))
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// No budget script reads a whole user set in one call, except the
/// rebuild (`restore_committed`), whose input is every user of the period
/// anyway and which runs only when an operator rebuilds from the log.
#[test]
fn no_hot_script_reads_a_whole_user_set() {
    for op in Op::ALL {
        if op == Op::RestoreCommitted {
            continue;
        }
        let source = op.source().to_uppercase();
        assert!(
            !source.contains("\"SMEMBERS\""),
            "{} reads a whole user set",
            op.name()
        );
    }
}
