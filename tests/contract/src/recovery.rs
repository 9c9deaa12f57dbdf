//! Scenarios of the reads and repairs the workers rely on: which
//! communities have holds due (the reaper's index), what is kept for one
//! call (`lookup`), and restoring a period's committed sums from an outside
//! record (`restore_committed`, the drift monitor's rebuild).
//!
//! The due-list scenarios share a store with every other test of the
//! binary (and, on a server, with earlier runs), so each runs in a year of
//! its own, decades before any other scenario's clock, and reaps its own
//! communities before it ends. A due list at `now` still names the
//! communities of the scenarios of earlier years (running alongside, or
//! left by a run that stopped half-way): the scenarios look for their own
//! communities in it, and the one that checks the list's order and length
//! runs in the earliest year and first clears what earlier runs of it
//! left.

use std::collections::BTreeMap;
use std::sync::Arc;

use spendgate_domain::{HoldState, Limits, Micros, Period, ReserveOutcome, SettledAs, Timestamp};
use spendgate_ports::{BudgetStore, StoreError};

use crate::fixture::{Ctx, TTL_MS, at, hold, m, mid_november, november, user};

type Store = Arc<dyn BudgetStore>;

/// Midday in early March of `year` (1970..=1999), a clock no other
/// scenario uses.
fn in_year(year: i64) -> Timestamp {
    let days = (year - 1970) * 365 + 70;
    Timestamp::from_millis(days * 86_400_000 + 43_200_000).unwrap()
}

async fn due(store: &Store, now: Timestamp, limit: usize) -> Vec<spendgate_domain::CommunityId> {
    store.due_communities(now, limit).await.unwrap()
}

/// Reaps each of `ctxs` at `now`, so a scenario leaves no due hold behind
/// on a shared store.
async fn reap_all(ctxs: &[&Ctx], now: Timestamp) {
    for c in ctxs {
        c.reap(now).await;
    }
}

fn committed(pairs: &[(&str, i64)]) -> BTreeMap<spendgate_domain::UserId, Micros> {
    pairs.iter().map(|(u, c)| (user(u), m(*c))).collect()
}

/// Every community with an expired, unreaped hold is named, earliest due
/// first; a community whose holds are all live is not.
pub async fn due_communities_names_each_community_with_an_expired_hold(store: Store) {
    let t = in_year(1971);
    let early = Ctx::with_limit(&store, "due-early", 1000).await;
    let late = Ctx::with_limit(&store, "due-late", 1000).await;
    let live = Ctx::with_limit(&store, "due-live", 1000).await;
    early.reserve("alice", "k1", 10, t).await;
    late.reserve("alice", "k1", 10, at(t, 5_000)).await;
    live.try_reserve("alice", "k1", 10, 600_000, t)
        .await
        .unwrap();
    let now = at(t, 5_000 + TTL_MS);
    let named = due(&store, now, 100).await;
    let position = |c: &Ctx| named.iter().position(|n| n == &c.community);
    let (Some(first), Some(second)) = (position(&early), position(&late)) else {
        panic!("both expired communities must be named, got {named:?}");
    };
    assert!(first < second, "earliest due first, got {named:?}");
    assert_eq!(position(&live), None, "a live hold is not due");
    reap_all(&[&early, &late, &live], at(t, 600_000)).await;
}

/// A hold due one millisecond later is not due yet.
pub async fn due_communities_skips_a_hold_not_yet_expired(store: Store) {
    let t = in_year(1972);
    let c = Ctx::with_limit(&store, "due-not-yet", 1000).await;
    c.reserve("alice", "k1", 10, t).await;
    assert!(
        !due(&store, at(t, TTL_MS - 1), 100)
            .await
            .contains(&c.community)
    );
    assert!(due(&store, at(t, TTL_MS), 100).await.contains(&c.community));
    reap_all(&[&c], at(t, TTL_MS)).await;
}

/// At most `limit` communities come back, the earliest due ones.
///
/// Runs in 1970, before every other scenario's holds; what is due then
/// can only be left by an earlier run of this scenario, and is reaped
/// first.
pub async fn due_communities_returns_at_most_the_limit_earliest_first(store: Store) {
    let t = in_year(1970);
    let now = at(t, 10 * TTL_MS);
    for _ in 0..10 {
        let left = due(&store, now, 100).await;
        if left.is_empty() {
            break;
        }
        for community in &left {
            store.reap(community, now).await.unwrap();
        }
    }
    let mut ctxs = Vec::new();
    for i in 0..3 {
        let c = Ctx::with_limit(&store, &format!("due-limit-{i}"), 1000).await;
        c.reserve("alice", "k1", 10, at(t, i * 1_000)).await;
        ctxs.push(c);
    }
    let named = due(&store, now, 2).await;
    assert_eq!(
        named,
        vec![ctxs[0].community.clone(), ctxs[1].community.clone()]
    );
    reap_all(&ctxs.iter().collect::<Vec<_>>(), now).await;
}

/// Once reaped, a community is not named again until another hold of it
/// falls due.
pub async fn reaped_community_is_not_due_until_another_hold_expires(store: Store) {
    let t = in_year(1974);
    let c = Ctx::with_limit(&store, "due-reaped", 1000).await;
    c.reserve("alice", "k1", 10, t).await;
    c.reserve("alice", "k2", 10, at(t, 30_000)).await;
    let first_due = at(t, TTL_MS);
    assert!(due(&store, first_due, 100).await.contains(&c.community));
    assert_eq!(c.reap(first_due).await.count, 1);
    assert!(!due(&store, first_due, 100).await.contains(&c.community));
    let second_due = at(t, 30_000 + TTL_MS);
    assert!(due(&store, second_due, 100).await.contains(&c.community));
    assert_eq!(c.reap(second_due).await.count, 1);
    assert!(!due(&store, second_due, 100).await.contains(&c.community));
}

/// A community whose only hold was finalized and then reaped over (the
/// pass that found nothing) is not named again.
pub async fn settled_community_leaves_the_due_list_after_one_reap(store: Store) {
    let t = in_year(1975);
    let c = Ctx::with_limit(&store, "due-settled", 1000).await;
    c.reserve("alice", "k1", 10, t).await;
    c.finalize("alice", "k1", 5, at(t, 1)).await.unwrap();
    let now = at(t, TTL_MS);
    assert_eq!(c.reap(now).await.count, 0);
    assert!(!due(&store, now, 100).await.contains(&c.community));
}

/// `lookup` follows one call: unknown, held, settled with its actual, and
/// unknown again once marker retention ends.
pub async fn lookup_follows_a_call_from_reserve_to_marker_expiry(store: Store) {
    let c = Ctx::with_limit(&store, "lookup-finalize", 1000).await;
    let t = mid_november(0);
    let lookup = |now| {
        let store = Arc::clone(&c.store);
        let community = c.community.clone();
        async move { store.lookup(&community, &hold("alice", "k1"), now).await }
    };
    assert_eq!(lookup(t).await, Ok(HoldState::Unknown));
    c.reserve("alice", "k1", 300, t).await;
    let replay = c.reserve("alice", "k1", 300, t).await;
    let ReserveOutcome::AlreadyReserved { hold: held } = replay else {
        panic!("expected AlreadyReserved, got {replay:?}");
    };
    assert_eq!(
        lookup(at(t, 1)).await,
        Ok(HoldState::Held { hold: held.clone() })
    );
    assert_eq!(
        lookup(at(t, 10 * TTL_MS)).await,
        Ok(HoldState::Held { hold: held }),
        "expired but unreaped is still held"
    );
    c.finalize("alice", "k1", 250, at(t, 2)).await.unwrap();
    assert_eq!(
        lookup(at(t, 3)).await,
        Ok(HoldState::Settled {
            settled: SettledAs::Finalized { actual: m(250) }
        })
    );
    assert_eq!(lookup(at(t, 2 + 86_400_000)).await, Ok(HoldState::Unknown));
}

/// After a reap, `lookup` shows the reaped hold, which a late finalize
/// can still pay for.
pub async fn lookup_after_reap_shows_the_reaped_hold(store: Store) {
    let c = Ctx::with_limit(&store, "lookup-reaped", 1000).await;
    let t = mid_november(0);
    c.reserve("alice", "k1", 300, t).await;
    let ReserveOutcome::AlreadyReserved { hold: held } = c.reserve("alice", "k1", 300, t).await
    else {
        panic!("expected AlreadyReserved");
    };
    c.reap(at(t, TTL_MS)).await;
    assert_eq!(
        c.store
            .lookup(&c.community, &hold("alice", "k1"), at(t, TTL_MS + 1))
            .await,
        Ok(HoldState::Settled {
            settled: SettledAs::Reaped { hold: held }
        })
    );
}

/// `lookup` of one community never sees another's call.
pub async fn lookup_is_scoped_to_the_community(store: Store) {
    let a = Ctx::with_limit(&store, "lookup-a", 1000).await;
    let b = Ctx::with_limit(&store, "lookup-b", 1000).await;
    let t = mid_november(0);
    a.reserve("alice", "k1", 300, t).await;
    assert_eq!(
        b.store.lookup(&b.community, &hold("alice", "k1"), t).await,
        Ok(HoldState::Unknown)
    );
}

/// Restoring replaces the period's committed sums user by user and keeps
/// live holds, which settle on top of the restored sums.
pub async fn restore_committed_replaces_committed_sums_and_keeps_holds(store: Store) {
    let c = Ctx::with_limit(&store, "restore", 1000).await;
    let t = mid_november(0);
    c.reserve("alice", "k1", 300, t).await;
    c.reserve("bob", "k1", 200, t).await;
    c.finalize("bob", "k1", 200, at(t, 1)).await.unwrap();
    c.store
        .restore_committed(
            &c.community,
            november(),
            &committed(&[("alice", 50), ("carol", 70)]),
        )
        .await
        .unwrap();
    c.assert_counters(november(), 120, 300, 1).await;
    let status = c.status(november()).await;
    c.assert_user(november(), "alice", 50, 300).await;
    assert_eq!(
        c.users(november()).await.get(&user("bob")),
        None,
        "bob's sums are both 0"
    );
    c.assert_user(november(), "carol", 70, 0).await;
    assert_eq!(status.limits, Some(Limits::new(m(1000))));
    c.finalize("alice", "k1", 100, at(t, 2)).await.unwrap();
    c.assert_counters(november(), 220, 0, 0).await;
    c.assert_user(november(), "alice", 150, 0).await;
}

/// Restoring leaves other periods alone.
pub async fn restore_committed_changes_only_its_period(store: Store) {
    let c = Ctx::with_limit(&store, "restore-period", 1000).await;
    let t = mid_november(0);
    c.reserve("alice", "k1", 300, t).await;
    c.finalize("alice", "k1", 100, t).await.unwrap();
    let october = Period::parse("2026-10").unwrap();
    c.store
        .restore_committed(&c.community, october, &committed(&[("alice", 40)]))
        .await
        .unwrap();
    c.assert_counters(november(), 100, 0, 0).await;
    c.assert_counters(october, 40, 0, 0).await;
}

/// A community that lost its limits gets its sums back and still refuses
/// reserves until limits are set again: never accepted without a limit.
pub async fn restore_committed_without_limits_keeps_reserves_refused(store: Store) {
    let c = Ctx::unconfigured(&store, "restore-unconfigured");
    let t = mid_november(0);
    c.store
        .restore_committed(&c.community, november(), &committed(&[("alice", 10)]))
        .await
        .unwrap();
    c.assert_counters(november(), 10, 0, 0).await;
    assert_eq!(c.status(november()).await.limits, None);
    assert!(matches!(
        c.try_reserve("alice", "k1", 1, TTL_MS, t).await,
        Err(StoreError::NotConfigured(_))
    ));
}

/// A total past the micro-USD range is refused whole.
pub async fn restore_committed_that_would_overflow_is_refused_whole(store: Store) {
    let c = Ctx::with_limit(&store, "restore-overflow", 1000).await;
    let t = mid_november(0);
    c.reserve("alice", "k1", 300, t).await;
    c.finalize("alice", "k1", 100, t).await.unwrap();
    let before = c.status(november()).await;
    let huge: BTreeMap<_, _> = [(user("alice"), Micros::MAX), (user("bob"), m(1))]
        .into_iter()
        .collect();
    assert!(matches!(
        c.store
            .restore_committed(&c.community, november(), &huge)
            .await,
        Err(StoreError::Overflow(_))
    ));
    assert_eq!(c.status(november()).await, before);
}

/// An empty record clears the period's committed sums.
pub async fn restore_committed_with_no_costs_clears_the_period(store: Store) {
    let c = Ctx::with_limit(&store, "restore-empty", 1000).await;
    let t = mid_november(0);
    c.reserve("alice", "k1", 300, t).await;
    c.finalize("alice", "k1", 100, t).await.unwrap();
    c.store
        .restore_committed(&c.community, november(), &BTreeMap::new())
        .await
        .unwrap();
    c.assert_counters(november(), 0, 0, 0).await;
    assert!(c.users(november()).await.is_empty());
}
