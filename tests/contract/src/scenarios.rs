//! The named scenarios: one behaviour of the `BudgetStore` port each.
//!
//! Limits are small round numbers in micro-USD; times are milliseconds
//! around mid-November 2026 unless a scenario is about the month boundary.

use std::sync::Arc;

use spendgate_domain::{
    ConfigVersion, ExtendOutcome, FinalizeOutcome, LimitScope, Limits, Micros, ModelAlias, Period,
    Reaped, Receipt, ReserveOutcome, Timestamp, UserSpend,
};
use spendgate_ports::{BudgetStore, StoreError};

use crate::fixture::{Ctx, TTL_MS, at, december, december_start, m, mid_november, november, user};

type Store = Arc<dyn BudgetStore>;

fn t0() -> Timestamp {
    mid_november(0)
}

fn reserved(remaining: i64, limit: i64, warning: bool, now: Timestamp) -> ReserveOutcome {
    ReserveOutcome::Reserved {
        remaining: m(remaining),
        limit: m(limit),
        warning,
        expires_at: at(now, TTL_MS),
    }
}

fn exceeded(remaining: i64, limit: i64, scope: LimitScope) -> ReserveOutcome {
    ReserveOutcome::BudgetExceeded {
        remaining: m(remaining),
        limit: m(limit),
        scope,
    }
}

fn receipt(actual: i64, estimate: i64, overshoot: i64, created_at: Timestamp) -> Receipt {
    Receipt {
        actual: m(actual),
        estimate: m(estimate),
        overshoot: m(overshoot),
        period: spendgate_domain::Period::containing(created_at).unwrap(),
        model: ModelAlias::parse("cheap").unwrap(),
        created_at,
    }
}

fn reaped(count: u64, reclaimed: i64) -> Reaped {
    Reaped {
        count,
        reclaimed: m(reclaimed),
    }
}

/// An estimate under the limit is held and counted in `reserved`.
pub async fn reserve_within_the_limit_is_reserved(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-ok", 1000).await;
    assert_eq!(
        c.reserve("alice", "k1", 300, t0()).await,
        reserved(700, 1000, false, t0())
    );
    c.assert_counters(november(), 0, 300, 1).await;
    let status = c.status(november()).await;
    assert_eq!(status.limits, Some(Limits::new(m(1000))));
    c.assert_user(november(), "alice", 0, 300).await;
}

/// A replayed reserve returns the first hold and holds nothing more, even
/// with another estimate.
pub async fn reserve_replay_returns_the_original_hold(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-replay", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let replay = c.reserve("alice", "k1", 999, at(t0(), 5)).await;
    let ReserveOutcome::AlreadyReserved { hold } = replay else {
        panic!("expected AlreadyReserved, got {replay:?}");
    };
    assert_eq!(hold.estimate, m(300));
    assert_eq!(hold.created_at, t0());
    assert_eq!(hold.expires_at, at(t0(), TTL_MS));
    assert_eq!(hold.period, november());
    assert_eq!(hold.model.as_str(), "cheap");
    assert_eq!(hold.user, user("alice"));
    c.assert_counters(november(), 0, 300, 1).await;
}

/// A replay is answered from the stored hold before the new call's own
/// expiry is worked out: one whose `now + ttl` would pass the time range
/// still gets the original hold, as the model answers it.
pub async fn reserve_replay_past_the_time_range_returns_the_original_hold(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-replay-late", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let late = at(Timestamp::MAX, -1);
    let replay = c.try_reserve("alice", "k1", 300, TTL_MS, late).await;
    let Ok(ReserveOutcome::AlreadyReserved { hold }) = replay else {
        panic!("expected AlreadyReserved, got {replay:?}");
    };
    assert_eq!(hold.created_at, t0());
    c.assert_counters(november(), 0, 300, 1).await;
}

/// A new reserve whose `now + ttl` would pass the time range is refused
/// as invalid input and holds nothing.
pub async fn reserve_past_the_time_range_is_refused_and_holds_nothing(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-late", 1000).await;
    let late = at(Timestamp::MAX, -1);
    let got = c.try_reserve("alice", "k1", 300, TTL_MS, late).await;
    assert!(
        matches!(got, Err(StoreError::InvalidInput(_))),
        "expected InvalidInput, got {got:?}"
    );
    let period = Period::containing(late).unwrap();
    c.assert_counters(period, 0, 0, 0).await;
}

/// A denied reserve leaves no trace: the same key may reserve later.
pub async fn reserve_past_the_limit_is_denied_and_changes_nothing(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-denied", 1000).await;
    c.reserve("alice", "k1", 600, t0()).await;
    assert_eq!(
        c.reserve("alice", "k2", 500, t0()).await,
        exceeded(400, 1000, LimitScope::Community)
    );
    c.assert_counters(november(), 0, 600, 1).await;
    assert_eq!(
        c.reserve("alice", "k2", 400, t0()).await,
        reserved(0, 1000, true, t0())
    );
}

/// Without limits the store cannot say yes: reserve fails closed.
pub async fn reserve_without_configured_limits_is_refused(store: Store) {
    let c = Ctx::unconfigured(&store, "unconfigured");
    let result = c.try_reserve("alice", "k1", 1, TTL_MS, t0()).await;
    assert_eq!(result, Err(StoreError::NotConfigured(c.community.clone())));
    let status = c.status(november()).await;
    assert_eq!(status.limits, None);
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (Micros::ZERO, Micros::ZERO, 0)
    );
}

/// `committed + reserved + estimate == limit` is allowed; one more is not.
pub async fn spend_exactly_at_the_limit_is_accepted(store: Store) {
    let c = Ctx::with_limit(&store, "exact-limit", 1000).await;
    c.reserve("alice", "k1", 400, t0()).await;
    c.finalize("alice", "k1", 400, t0()).await.unwrap();
    assert_eq!(
        c.reserve("alice", "k2", 600, t0()).await,
        reserved(0, 1000, true, t0())
    );
    assert_eq!(
        c.reserve("alice", "k3", 1, t0()).await,
        exceeded(0, 1000, LimitScope::Community)
    );
    c.assert_counters(november(), 400, 600, 1).await;
}

/// A zero estimate fits even a full budget.
pub async fn zero_estimate_is_accepted_on_a_full_budget(store: Store) {
    let c = Ctx::with_limit(&store, "zero-estimate", 1000).await;
    c.reserve("alice", "k1", 1000, t0()).await;
    assert_eq!(
        c.reserve("alice", "k2", 0, t0()).await,
        reserved(0, 1000, false, t0())
    );
    c.assert_counters(november(), 0, 1000, 2).await;
}

/// The largest estimates are compared, never wrapped.
pub async fn very_large_estimate_is_denied_without_overflow(store: Store) {
    let max = Micros::MAX.get();
    let c = Ctx::with_limit(&store, "huge-estimate", max).await;
    assert_eq!(
        c.reserve("alice", "k1", max, t0()).await,
        reserved(0, max, true, t0())
    );
    assert_eq!(
        c.reserve("alice", "k2", max, t0()).await,
        exceeded(0, max, LimitScope::Community)
    );
    c.assert_counters(november(), 0, max, 1).await;
    let done = c.finalize("alice", "k1", max, t0()).await.unwrap();
    assert_eq!(done, FinalizeOutcome::Finalized(receipt(max, max, 0, t0())));
    c.assert_counters(november(), max, 0, 0).await;
}

/// A finalize whose cost would overflow `committed` is refused whole: the
/// hold stays live and can still be settled.
pub async fn finalize_that_would_overflow_committed_is_refused_whole(store: Store) {
    let max = Micros::MAX.get();
    let c = Ctx::with_limit(&store, "overflow", max).await;
    c.reserve("alice", "k1", max, t0()).await;
    c.finalize("alice", "k1", max, t0()).await.unwrap();
    c.reserve("alice", "k2", 0, t0()).await;
    let result = c.finalize("alice", "k2", 1, t0()).await;
    assert!(matches!(result, Err(StoreError::Overflow(_))), "{result:?}");
    c.assert_counters(november(), max, 0, 1).await;
    let cancelled = c.cancel("alice", "k2", t0()).await.unwrap();
    assert_eq!(
        cancelled,
        FinalizeOutcome::Finalized(receipt(0, 0, 0, t0()))
    );
    c.assert_counters(november(), max, 0, 0).await;
}

/// A limit of zero admits only zero estimates.
pub async fn limit_zero_denies_any_positive_estimate(store: Store) {
    let c = Ctx::with_limit(&store, "limit-zero", 0).await;
    assert_eq!(
        c.reserve("alice", "k1", 1, t0()).await,
        exceeded(0, 0, LimitScope::Community)
    );
    assert!(matches!(
        c.reserve("alice", "k2", 0, t0()).await,
        ReserveOutcome::Reserved { .. }
    ));
    c.assert_counters(november(), 0, 0, 1).await;
}

/// Lowering the limit under live holds keeps them and denies new spend.
pub async fn lowering_the_limit_keeps_live_holds_and_denies_new_ones(store: Store) {
    let c = Ctx::with_limit(&store, "lowered", 1000).await;
    c.reserve("alice", "k1", 800, t0()).await;
    store
        .set_limits(&c.community, Limits::new(m(500)), ConfigVersion::ZERO)
        .await
        .unwrap();
    c.assert_counters(november(), 0, 800, 1).await;
    assert_eq!(
        c.reserve("alice", "k2", 1, t0()).await,
        exceeded(0, 500, LimitScope::Community)
    );
    let done = c.finalize("alice", "k1", 100, t0()).await.unwrap();
    assert_eq!(done, FinalizeOutcome::Finalized(receipt(100, 800, 0, t0())));
    assert!(matches!(
        c.reserve("alice", "k3", 400, t0()).await,
        ReserveOutcome::Reserved { .. }
    ));
}

/// `set_limits` replaces both the limit and the cap.
pub async fn set_limits_replaces_the_limit_and_the_cap(store: Store) {
    let capped = Limits::new(m(1000)).with_per_user_cap(m(10));
    let c = Ctx::with_limits(&store, "set-limits", capped).await;
    assert_eq!(c.status(november()).await.limits, Some(capped));
    store
        .set_limits(&c.community, Limits::new(m(2000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    assert_eq!(
        c.status(november()).await.limits,
        Some(Limits::new(m(2000)))
    );
    assert!(matches!(
        c.reserve("alice", "k1", 1500, t0()).await,
        ReserveOutcome::Reserved { .. }
    ));
}

/// Finalize moves the estimate out of `reserved` and the cost into
/// `committed`, and says what the hold was.
pub async fn finalize_releases_the_estimate_and_commits_the_actual(store: Store) {
    let c = Ctx::with_limit(&store, "finalize", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let done = c.finalize("alice", "k1", 250, at(t0(), 10)).await.unwrap();
    assert_eq!(done, FinalizeOutcome::Finalized(receipt(250, 300, 0, t0())));
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_user(november(), "alice", 250, 0).await;
}

/// A replayed finalize commits nothing and reports the first cost.
pub async fn finalize_replay_is_already_finalized_with_the_first_actual(store: Store) {
    let c = Ctx::with_limit(&store, "finalize-replay", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    let replay = c.finalize("alice", "k1", 999, at(t0(), 1)).await.unwrap();
    assert_eq!(replay, FinalizeOutcome::AlreadyFinalized { actual: m(250) });
    c.assert_counters(november(), 250, 0, 0).await;
}

/// Spending more than estimated is committed and reported as overshoot.
pub async fn finalize_over_the_estimate_reports_the_overshoot(store: Store) {
    let c = Ctx::with_limit(&store, "overshoot", 1000).await;
    c.reserve("alice", "k1", 900, t0()).await;
    let done = c.finalize("alice", "k1", 1200, t0()).await.unwrap();
    assert_eq!(
        done,
        FinalizeOutcome::Finalized(receipt(1200, 900, 200, t0()))
    );
    c.assert_counters(november(), 1200, 0, 0).await;
    assert_eq!(
        c.reserve("alice", "k2", 1, t0()).await,
        exceeded(0, 1000, LimitScope::Community)
    );
}

/// A key never reserved cannot be finalized.
pub async fn finalize_of_an_unknown_hold_is_an_error(store: Store) {
    let c = Ctx::with_limit(&store, "finalize-unknown", 1000).await;
    assert_eq!(
        c.finalize("alice", "never", 5, t0()).await,
        Err(StoreError::UnknownHold {
            user: "alice".into(),
            key: "never".into()
        })
    );
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A hold past its expiry that the reaper has not reached yet is still a
/// hold: finalize releases it normally.
pub async fn expired_but_unreaped_hold_finalizes_normally(store: Store) {
    let c = Ctx::with_limit(&store, "expired-unreaped", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let done = c
        .finalize("alice", "k1", 100, at(t0(), 2 * TTL_MS))
        .await
        .unwrap();
    assert_eq!(done, FinalizeOutcome::Finalized(receipt(100, 300, 0, t0())));
    assert_eq!(c.reap(at(t0(), 2 * TTL_MS)).await, reaped(0, 0));
    c.assert_counters(november(), 100, 0, 0).await;
}

/// Cancel is a finalize with a cost of zero.
pub async fn cancel_releases_the_estimate_without_committing(store: Store) {
    let c = Ctx::with_limit(&store, "cancel", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let done = c.cancel("alice", "k1", t0()).await.unwrap();
    assert_eq!(done, FinalizeOutcome::Finalized(receipt(0, 300, 0, t0())));
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A replayed cancel changes nothing.
pub async fn cancel_replay_is_already_finalized(store: Store) {
    let c = Ctx::with_limit(&store, "cancel-replay", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.cancel("alice", "k1", t0()).await.unwrap();
    assert_eq!(
        c.cancel("alice", "k1", t0()).await.unwrap(),
        FinalizeOutcome::AlreadyFinalized {
            actual: Micros::ZERO
        }
    );
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A cancel after a finalize cannot refund the committed cost.
pub async fn cancel_after_finalize_keeps_the_committed_cost(store: Store) {
    let c = Ctx::with_limit(&store, "cancel-after-finalize", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    assert_eq!(
        c.cancel("alice", "k1", t0()).await.unwrap(),
        FinalizeOutcome::AlreadyFinalized { actual: m(250) }
    );
    c.assert_counters(november(), 250, 0, 0).await;
}

/// A reserve replayed after its call was settled must not hold again.
pub async fn reserve_after_finalize_is_already_settled(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-after-finalize", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    assert_eq!(
        c.reserve("alice", "k1", 300, t0()).await,
        ReserveOutcome::AlreadySettled
    );
    c.assert_counters(november(), 250, 0, 0).await;
}

/// One millisecond before expiry, the reaper leaves the hold alone.
pub async fn reap_before_expiry_releases_nothing(store: Store) {
    let c = Ctx::with_limit(&store, "reap-early", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(c.reap(at(t0(), TTL_MS - 1)).await, reaped(0, 0));
    c.assert_counters(november(), 0, 300, 1).await;
}

/// At the expiry millisecond the hold is reapable.
pub async fn reap_at_the_expiry_millisecond_releases_the_hold(store: Store) {
    let c = Ctx::with_limit(&store, "reap-exact", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(c.reap(at(t0(), TTL_MS)).await, reaped(1, 300));
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A second pass over the same expired hold releases nothing.
pub async fn reap_twice_releases_once(store: Store) {
    let c = Ctx::with_limit(&store, "reap-twice", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.reserve("bob", "k1", 200, at(t0(), 1)).await;
    assert_eq!(c.reap(at(t0(), TTL_MS + 1)).await, reaped(2, 500));
    assert_eq!(c.reap(at(t0(), TTL_MS + 2)).await, reaped(0, 0));
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A finalize after the reaper released the hold commits the cost once and
/// releases nothing twice; its replay changes nothing.
pub async fn late_finalize_after_reap_commits_once(store: Store) {
    let c = Ctx::with_limit(&store, "late-finalize", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.reap(at(t0(), TTL_MS)).await;
    let late = c
        .finalize("alice", "k1", 250, at(t0(), TTL_MS + 5))
        .await
        .unwrap();
    assert_eq!(
        late,
        FinalizeOutcome::LateFinalized(receipt(250, 300, 0, t0()))
    );
    c.assert_counters(november(), 250, 0, 0).await;
    let replay = c
        .finalize("alice", "k1", 250, at(t0(), TTL_MS + 6))
        .await
        .unwrap();
    assert_eq!(replay, FinalizeOutcome::AlreadyFinalized { actual: m(250) });
    assert_eq!(c.reap(at(t0(), 3 * TTL_MS)).await, reaped(0, 0));
    c.assert_counters(november(), 250, 0, 0).await;
}

/// Tombstones of reaped holds are kept as long as finalize markers (24 h
/// by default); a finalize later than that is unknown.
pub async fn late_finalize_after_marker_retention_is_unknown(store: Store) {
    let c = Ctx::with_limit(&store, "late-too-late", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let reaped_at = at(t0(), TTL_MS);
    c.reap(reaped_at).await;
    let day = 86_400_000;
    assert!(matches!(
        c.finalize("alice", "k1", 1, at(reaped_at, day - 1)).await,
        Ok(FinalizeOutcome::LateFinalized(_))
    ));
    let c2 = Ctx::with_limit(&store, "late-too-late-2", 1000).await;
    c2.reserve("alice", "k1", 300, t0()).await;
    c2.reap(reaped_at).await;
    assert!(matches!(
        c2.finalize("alice", "k1", 1, at(reaped_at, day)).await,
        Err(StoreError::UnknownHold { .. })
    ));
    c2.assert_counters(november(), 0, 0, 0).await;
}

/// A finalize marker expires after its retention; a replay after that is
/// unknown and commits nothing.
pub async fn finalize_replay_after_marker_retention_is_unknown(store: Store) {
    let c = Ctx::with_limit(&store, "marker-expired", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    let later = at(t0(), 86_400_000);
    assert_eq!(c.reap(later).await, reaped(0, 0));
    assert!(matches!(
        c.finalize("alice", "k1", 250, later).await,
        Err(StoreError::UnknownHold { .. })
    ));
    c.assert_counters(november(), 250, 0, 0).await;
}

/// A reserve replayed after its hold was reaped must not hold again.
pub async fn reserve_after_reap_is_already_settled(store: Store) {
    let c = Ctx::with_limit(&store, "reserve-after-reap", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.reap(at(t0(), TTL_MS)).await;
    assert_eq!(
        c.reserve("alice", "k1", 300, at(t0(), TTL_MS + 1)).await,
        ReserveOutcome::AlreadySettled
    );
    c.assert_counters(november(), 0, 0, 0).await;
}

/// A heartbeat moves the expiry out, so the reaper waits for it.
pub async fn extend_pushes_the_expiry_past_the_reaper(store: Store) {
    let c = Ctx::with_limit(&store, "extend", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(
        c.extend("alice", "k1", TTL_MS, at(t0(), 30_000))
            .await
            .unwrap(),
        ExtendOutcome::Extended {
            expires_at: at(t0(), 90_000)
        }
    );
    assert_eq!(c.reap(at(t0(), TTL_MS)).await, reaped(0, 0));
    assert_eq!(c.reap(at(t0(), 90_000)).await, reaped(1, 300));
}

/// Extending twice, or with a shorter TTL, never pulls the expiry in.
pub async fn extend_replay_never_shortens_the_hold(store: Store) {
    let c = Ctx::with_limit(&store, "extend-replay", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    let first = c
        .extend("alice", "k1", TTL_MS, at(t0(), 30_000))
        .await
        .unwrap();
    let again = c
        .extend("alice", "k1", TTL_MS, at(t0(), 30_000))
        .await
        .unwrap();
    let shorter = c.extend("alice", "k1", 10, at(t0(), 31_000)).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, shorter);
    c.assert_counters(november(), 0, 300, 1).await;
}

/// An expired hold cannot be revived; the reaper still takes it.
pub async fn extend_of_an_expired_hold_is_not_live(store: Store) {
    let c = Ctx::with_limit(&store, "extend-expired", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(
        c.extend("alice", "k1", TTL_MS, at(t0(), TTL_MS))
            .await
            .unwrap(),
        ExtendOutcome::NotLive
    );
    assert_eq!(c.reap(at(t0(), TTL_MS)).await, reaped(1, 300));
}

/// A settled call has nothing to extend.
pub async fn extend_of_a_settled_hold_is_not_live(store: Store) {
    let c = Ctx::with_limit(&store, "extend-settled", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 10, t0()).await.unwrap();
    assert_eq!(
        c.extend("alice", "k1", TTL_MS, t0()).await.unwrap(),
        ExtendOutcome::NotLive
    );
}

/// Extending a key never reserved is an error.
pub async fn extend_of_an_unknown_hold_is_an_error(store: Store) {
    let c = Ctx::with_limit(&store, "extend-unknown", 1000).await;
    assert!(matches!(
        c.extend("alice", "nope", TTL_MS, t0()).await,
        Err(StoreError::UnknownHold { .. })
    ));
}

/// The warning fires on the reservation that reaches 80 % of the limit,
/// and only on that one.
pub async fn warning_fires_once_when_spend_reaches_the_threshold(store: Store) {
    let c = Ctx::with_limit(&store, "warning", 1000).await;
    assert_eq!(
        c.reserve("alice", "k1", 799, t0()).await,
        reserved(201, 1000, false, t0())
    );
    assert_eq!(
        c.reserve("alice", "k2", 1, t0()).await,
        reserved(200, 1000, true, t0())
    );
    assert_eq!(
        c.reserve("alice", "k3", 1, t0()).await,
        reserved(199, 1000, false, t0())
    );
    c.cancel("alice", "k1", t0()).await.unwrap();
    c.reserve("alice", "k4", 799, t0()).await;
    assert!(c.status(november()).await.warned);
    assert_eq!(
        c.reserve("alice", "k5", 1, t0()).await,
        reserved(198, 1000, false, t0())
    );
}

/// Each period warns once of its own.
pub async fn warning_fires_again_in_the_next_period(store: Store) {
    let c = Ctx::with_limit(&store, "warning-next", 1000).await;
    c.reserve("alice", "k1", 900, t0()).await;
    let dec = december_start(1000);
    assert!(!c.status(december()).await.warned);
    assert_eq!(
        c.reserve("alice", "k2", 850, dec).await,
        reserved(150, 1000, true, dec)
    );
    assert!(c.status(december()).await.warned);
}

/// A hold made on the last millisecond of November and finalized in
/// December changes November's counters only.
pub async fn month_boundary_finalize_changes_the_reservation_period(store: Store) {
    let c = Ctx::with_limit(&store, "boundary-finalize", 1000).await;
    let last_ms = december_start(-1);
    c.reserve("alice", "k1", 300, last_ms).await;
    let done = c
        .finalize("alice", "k1", 200, december_start(30_000))
        .await
        .unwrap();
    assert_eq!(
        done,
        FinalizeOutcome::Finalized(receipt(200, 300, 0, last_ms))
    );
    c.assert_counters(november(), 200, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
}

/// Reaping with a December clock releases November's hold, and a late
/// finalize commits to November.
pub async fn month_boundary_reap_and_late_finalize_change_the_reservation_period(store: Store) {
    let c = Ctx::with_limit(&store, "boundary-reap", 1000).await;
    let nov = december_start(-30_000);
    c.reserve("alice", "k1", 300, nov).await;
    c.reserve("bob", "k1", 100, december_start(0)).await;
    assert_eq!(c.reap(december_start(TTL_MS)).await, reaped(2, 400));
    c.assert_counters(november(), 0, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
    let late = c
        .finalize("alice", "k1", 50, december_start(TTL_MS + 1))
        .await
        .unwrap();
    assert_eq!(
        late,
        FinalizeOutcome::LateFinalized(receipt(50, 300, 0, nov))
    );
    c.assert_counters(november(), 50, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
}

/// Holds of the old period do not count against the new one.
pub async fn new_period_starts_clean_while_old_holds_are_live(store: Store) {
    let c = Ctx::with_limit(&store, "new-period", 1000).await;
    c.reserve("alice", "k1", 1000, december_start(-10)).await;
    let dec = december_start(10);
    assert_eq!(
        c.reserve("alice", "k2", 1000, dec).await,
        reserved(0, 1000, true, dec)
    );
    c.assert_counters(november(), 0, 1000, 1).await;
    c.assert_counters(december(), 0, 1000, 1).await;
}

/// The same (user, key) in two communities are two calls.
pub async fn same_user_and_key_in_two_communities_stay_independent(store: Store) {
    let a = Ctx::with_limit(&store, "iso-a", 1000).await;
    let b = Ctx::with_limit(&store, "iso-b", 1000).await;
    a.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(
        b.reserve("alice", "k1", 500, t0()).await,
        reserved(500, 1000, false, t0())
    );
    a.finalize("alice", "k1", 100, t0()).await.unwrap();
    a.assert_counters(november(), 100, 0, 0).await;
    b.assert_counters(november(), 0, 500, 1).await;
    let replay = b.reserve("alice", "k1", 1, t0()).await;
    assert!(
        matches!(&replay, ReserveOutcome::AlreadyReserved { hold } if hold.estimate == m(500)),
        "{replay:?}"
    );
}

/// The reaper of one community does not touch another's holds.
pub async fn reaping_one_community_leaves_another_alone(store: Store) {
    let a = Ctx::with_limit(&store, "reap-a", 1000).await;
    let b = Ctx::with_limit(&store, "reap-b", 1000).await;
    a.reserve("alice", "k1", 300, t0()).await;
    b.reserve("alice", "k1", 200, t0()).await;
    assert_eq!(a.reap(at(t0(), TTL_MS)).await, reaped(1, 300));
    b.assert_counters(november(), 0, 200, 1).await;
}

/// A user at their cap is denied while another user of the same community
/// still reserves.
pub async fn per_user_cap_denies_one_user_while_another_reserves(store: Store) {
    let limits = Limits::new(m(1000)).with_per_user_cap(m(300));
    let c = Ctx::with_limits(&store, "cap", limits).await;
    c.reserve("alice", "k1", 200, t0()).await;
    assert_eq!(
        c.reserve("alice", "k2", 200, t0()).await,
        exceeded(100, 300, LimitScope::User)
    );
    assert_eq!(
        c.reserve("bob", "k1", 300, t0()).await,
        reserved(500, 1000, false, t0())
    );
    c.assert_counters(november(), 0, 500, 2).await;
}

/// The cap counts what a user already spent, not only what they hold.
pub async fn per_user_cap_counts_committed_spend(store: Store) {
    let limits = Limits::new(m(1000)).with_per_user_cap(m(300));
    let c = Ctx::with_limits(&store, "cap-committed", limits).await;
    c.reserve("alice", "k1", 100, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    assert_eq!(
        c.reserve("alice", "k2", 100, t0()).await,
        exceeded(50, 300, LimitScope::User)
    );
    assert!(matches!(
        c.reserve("alice", "k3", 50, t0()).await,
        ReserveOutcome::Reserved { .. }
    ));
}

/// When both would deny, the community limit is the one reported.
pub async fn community_limit_is_checked_before_the_user_cap(store: Store) {
    let limits = Limits::new(m(100)).with_per_user_cap(m(50));
    let c = Ctx::with_limits(&store, "cap-order", limits).await;
    assert_eq!(
        c.reserve("alice", "k1", 200, t0()).await,
        exceeded(100, 100, LimitScope::Community)
    );
}

/// Status lists users with spend; a cancelled user's zero sums vanish.
pub async fn status_lists_only_users_with_spend(store: Store) {
    let c = Ctx::with_limit(&store, "status-users", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.cancel("alice", "k1", t0()).await.unwrap();
    c.reserve("bob", "k1", 30, t0()).await;
    c.finalize("bob", "k1", 10, t0()).await.unwrap();
    let users = c.users(november()).await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(
        users.get(&user("bob")),
        Some(&UserSpend {
            committed: m(10),
            reserved: Micros::ZERO
        })
    );
}

/// An expiry past the end of 9999 is refused as invalid, with no hold.
pub async fn reserve_with_expiry_past_the_supported_range_is_invalid_input(store: Store) {
    let c = Ctx::with_limit(&store, "expiry-range", 1000).await;
    let end = at(Timestamp::MAX, -10);
    let result = c.try_reserve("alice", "k1", 5, TTL_MS, end).await;
    assert!(
        matches!(result, Err(StoreError::InvalidInput(_))),
        "{result:?}"
    );
    let status = c
        .status(spendgate_domain::Period::containing(end).unwrap())
        .await;
    assert_eq!(status.holds, 0);
}

/// What `commit_unheld` answers when the store held nothing for the call:
/// the cost committed to `period`, nothing released, made at `now`.
fn unheld(actual: i64, overshoot: i64, period: Period, now: Timestamp) -> FinalizeOutcome {
    FinalizeOutcome::CommittedWithoutHold(Receipt {
        actual: m(actual),
        estimate: Micros::ZERO,
        overshoot: m(overshoot),
        period,
        model: ModelAlias::parse("cheap").unwrap(),
        created_at: now,
    })
}

/// With no hold, marker or tombstone, the cost goes to the period given
/// (not the clock's), to the user's sums (a user who never reserved shows
/// up in the status), and nothing is released or counted as a hold.
pub async fn commit_unheld_without_a_hold_commits_to_the_given_period(store: Store) {
    let c = Ctx::with_limit(&store, "unheld", 1000).await;
    c.reserve("alice", "k0", 100, t0()).await;
    let dec = december_start(5_000);
    assert_eq!(
        c.commit_unheld("alice", "k1", 250, november(), dec).await,
        Ok(unheld(250, 0, november(), dec))
    );
    assert_eq!(
        c.commit_unheld("bob", "k1", 40, november(), dec).await,
        Ok(unheld(40, 0, november(), dec))
    );
    c.assert_counters(november(), 290, 100, 1).await;
    c.assert_counters(december(), 0, 0, 0).await;
    c.assert_user(november(), "alice", 250, 100).await;
    c.assert_user(november(), "bob", 40, 0).await;
    c.assert_user(december(), "bob", 0, 0).await;
}

/// A replayed commit_unheld commits nothing and reports the first cost;
/// finalize, cancel and reserve of the same key see it as settled.
pub async fn commit_unheld_replay_is_already_finalized(store: Store) {
    let c = Ctx::with_limit(&store, "unheld-replay", 1000).await;
    c.commit_unheld("alice", "k1", 250, november(), t0())
        .await
        .unwrap();
    let already = FinalizeOutcome::AlreadyFinalized { actual: m(250) };
    assert_eq!(
        c.commit_unheld("alice", "k1", 999, december(), at(t0(), 1))
            .await,
        Ok(already.clone())
    );
    assert_eq!(
        c.finalize("alice", "k1", 999, at(t0(), 2)).await,
        Ok(already.clone())
    );
    assert_eq!(c.cancel("alice", "k1", at(t0(), 3)).await, Ok(already));
    assert_eq!(
        c.reserve("alice", "k1", 10, at(t0(), 4)).await,
        ReserveOutcome::AlreadySettled
    );
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
    c.assert_user(november(), "alice", 250, 0).await;
}

/// On a live hold it is a finalize: the estimate is released and the cost
/// goes to the hold's own period, whatever period the commit names.
pub async fn commit_unheld_on_a_live_hold_is_a_finalize(store: Store) {
    let c = Ctx::with_limit(&store, "unheld-live", 1000).await;
    let last_ms = december_start(-1);
    c.reserve("alice", "k1", 300, last_ms).await;
    let done = c
        .commit_unheld("alice", "k1", 200, december(), december_start(30_000))
        .await;
    assert_eq!(
        done,
        Ok(FinalizeOutcome::Finalized(receipt(200, 300, 0, last_ms)))
    );
    c.assert_counters(november(), 200, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
    c.assert_user(november(), "alice", 200, 0).await;
    assert_eq!(
        c.finalize("alice", "k1", 1, december_start(30_001)).await,
        Ok(FinalizeOutcome::AlreadyFinalized { actual: m(200) })
    );
}

/// On a reaped hold's tombstone it is a late finalize: committed once to
/// the hold's period, nothing released twice.
pub async fn commit_unheld_after_reap_is_a_late_finalize(store: Store) {
    let c = Ctx::with_limit(&store, "unheld-reaped", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    assert_eq!(c.reap(at(t0(), TTL_MS)).await, reaped(1, 300));
    let late = c
        .commit_unheld("alice", "k1", 250, december(), at(t0(), TTL_MS + 5))
        .await;
    assert_eq!(
        late,
        Ok(FinalizeOutcome::LateFinalized(receipt(250, 300, 0, t0())))
    );
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_counters(december(), 0, 0, 0).await;
    assert_eq!(
        c.commit_unheld("alice", "k1", 250, november(), at(t0(), TTL_MS + 6))
            .await,
        Ok(FinalizeOutcome::AlreadyFinalized { actual: m(250) })
    );
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_user(november(), "alice", 250, 0).await;
}

/// A community that was never given limits still counts the cost (its
/// limit is taken as 0 for the overshoot), and reserve still refuses.
pub async fn commit_unheld_works_without_configured_limits(store: Store) {
    let c = Ctx::unconfigured(&store, "unheld-unconfigured");
    assert_eq!(
        c.commit_unheld("alice", "k1", 250, november(), t0()).await,
        Ok(unheld(250, 250, november(), t0()))
    );
    let status = c.status(november()).await;
    assert_eq!(status.limits, None);
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_user(november(), "alice", 250, 0).await;
    assert_eq!(
        c.commit_unheld("alice", "k1", 7, november(), at(t0(), 1))
            .await,
        Ok(FinalizeOutcome::AlreadyFinalized { actual: m(250) })
    );
    assert_eq!(
        c.try_reserve("alice", "k2", 1, TTL_MS, t0()).await,
        Err(StoreError::NotConfigured(c.community.clone()))
    );
}

/// The money is spent: no limit check, and how far `committed + reserved`
/// stands past the limit is reported; later reserves are denied.
pub async fn commit_unheld_ignores_the_limit_and_reports_the_overshoot(store: Store) {
    let c = Ctx::with_limit(&store, "unheld-over", 1000).await;
    c.reserve("alice", "k0", 900, t0()).await;
    assert_eq!(
        c.commit_unheld("bob", "k1", 300, november(), t0()).await,
        Ok(unheld(300, 200, november(), t0()))
    );
    c.assert_counters(november(), 300, 900, 1).await;
    c.assert_user(november(), "bob", 300, 0).await;
    assert_eq!(
        c.reserve("alice", "k2", 1, t0()).await,
        exceeded(0, 1000, LimitScope::Community)
    );
}

/// A commit that would overflow `committed` is refused whole: no counter,
/// user sum or marker is written.
pub async fn commit_unheld_that_would_overflow_is_refused_whole(store: Store) {
    let max = Micros::MAX.get();
    let c = Ctx::with_limit(&store, "unheld-overflow", max).await;
    c.reserve("alice", "k1", max, t0()).await;
    c.finalize("alice", "k1", max, t0()).await.unwrap();
    let result = c.commit_unheld("bob", "k2", 1, november(), t0()).await;
    assert!(matches!(result, Err(StoreError::Overflow(_))), "{result:?}");
    c.assert_counters(november(), max, 0, 0).await;
    c.assert_user(november(), "bob", 0, 0).await;
    assert!(matches!(
        c.finalize("bob", "k2", 0, t0()).await,
        Err(StoreError::UnknownHold { .. })
    ));
    assert_eq!(
        c.commit_unheld("bob", "k2", 0, november(), t0()).await,
        Ok(unheld(0, 0, november(), t0()))
    );
}

/// After marker retention the call is unknown again: the cost is committed
/// anew and a fresh marker answers replays, even after the old marker's
/// clean-up ran.
pub async fn commit_unheld_after_marker_retention_commits_again(store: Store) {
    let c = Ctx::with_limit(&store, "unheld-retention", 1000).await;
    c.reserve("alice", "k1", 300, t0()).await;
    c.finalize("alice", "k1", 250, t0()).await.unwrap();
    let later = at(t0(), 86_400_000);
    assert_eq!(
        c.commit_unheld("alice", "k1", 250, november(), later).await,
        Ok(unheld(250, 0, november(), later))
    );
    assert_eq!(c.reap(later).await, reaped(0, 0));
    assert_eq!(
        c.finalize("alice", "k1", 1, at(later, 1)).await,
        Ok(FinalizeOutcome::AlreadyFinalized { actual: m(250) })
    );
    c.assert_counters(november(), 500, 0, 0).await;
    c.assert_user(november(), "alice", 500, 0).await;
}

/// Racing replays of one call on a community without limits (so a SQL
/// store also races to create its row) commit the cost exactly once.
pub async fn commit_unheld_racing_itself_commits_once(store: Store) {
    let c = Arc::new(Ctx::unconfigured(&store, "unheld-race"));
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.commit_unheld("alice", "k1", 250, november(), t0()).await })
        })
        .collect();
    let mut committed = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(FinalizeOutcome::CommittedWithoutHold(r)) => {
                assert_eq!(r.actual, m(250));
                committed += 1;
            }
            Ok(FinalizeOutcome::AlreadyFinalized { actual }) => assert_eq!(actual, m(250)),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(committed, 1);
    c.assert_counters(november(), 250, 0, 0).await;
    c.assert_user(november(), "alice", 250, 0).await;
}
