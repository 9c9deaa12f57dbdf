//! The service's behaviour, one scenario each, run on every backend by
//! [`crate::service_scenarios!`].

use spendgate::domain::{
    ConfigVersion, FinalizeOutcome, HoldRef, Limits, Micros, ModelAlias, Period, Timestamp,
};
use spendgate::ports::{CommunityConfig, CostSource};
use spendgate::{
    FinalizeError, KnownHold, RebuildError, ReserveDecision, ReserveError, SettleRequest, Settled,
    Usage,
};

use crate::support::{Env, key, m, model, user};

/// `cheap` prices: 0.15 USD in and 0.60 USD out per million tokens.
const ESTIMATE_1200_800: i64 = 660;
const ACTUAL_1180_412: i64 = 425;

fn hold_ref(k: &str) -> HoldRef {
    HoldRef {
        user: user("alice"),
        key: key(k),
    }
}

pub async fn estimate_reserve_finalize_commits_the_actual_and_logs_it_once(env: Env) {
    let c = env.community("flow", 10).await;
    let budget = env.sg.budget();
    let estimate = budget
        .estimate(&c, &model("cheap"), 1_200, 800, false)
        .await
        .unwrap();
    assert_eq!(estimate, m(ESTIMATE_1200_800));
    let hold = env.reserve(env.request(&c, "k1")).await;
    assert_eq!(hold.estimate(), estimate);
    assert_eq!(hold.limit(), Some(Micros::from_usd(10)));
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.reserved, status.holds), (estimate, 1));

    let settled = hold.finalize(Usage::tokens(1_180, 412)).await.unwrap();
    let Settled::Committed {
        outcome: FinalizeOutcome::Finalized(receipt),
    } = settled
    else {
        panic!("expected Finalized, got {settled:?}");
    };
    assert_eq!(receipt.actual, m(ACTUAL_1180_412));
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(ACTUAL_1180_412), Micros::ZERO, 0)
    );
    let row = env
        .log
        .logged(&c, &hold_ref("k1"), Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost, row.estimate), (m(ACTUAL_1180_412), estimate));
    assert_eq!(row.source, CostSource::Finalize);
    assert_eq!(row.tokens.completion, 412);
    assert_eq!(env.queue.len().await.unwrap(), 0);
}

pub async fn tier_refusal_comes_before_any_hold(env: Env) {
    let c = env.community("tier", 10).await;
    let budget = env.sg.budget();
    let mut request = env.request(&c, "k1");
    request.model = model("reasoning");
    let refused = budget.reserve(request.clone()).await.unwrap_err();
    assert!(
        matches!(&refused, ReserveError::ModelNotAllowed { model, .. } if model == &ModelAlias::parse("reasoning").unwrap()),
        "{refused:?}"
    );
    for tier in [0, 10, -1, i64::MAX] {
        request.tier = tier;
        let refused = budget.reserve(request.clone()).await.unwrap_err();
        assert!(
            matches!(refused, ReserveError::InvalidTier(_)),
            "{refused:?}"
        );
    }
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.reserved, status.holds), (Micros::ZERO, 0));
}

pub async fn disabled_and_unconfigured_communities_are_refused(env: Env) {
    let c = crate::support::community("disabled");
    let budget = env.sg.budget();
    let refused = budget.reserve(env.request(&c, "k1")).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::NotConfigured(_)),
        "{refused:?}"
    );
    budget
        .configure(&CommunityConfig {
            community: c.clone(),
            ai_enabled: false,
            limits: Limits::new(Micros::from_usd(10)),
            pricing_overrides: Default::default(),
            version: ConfigVersion::ZERO,
        })
        .await
        .unwrap();
    let refused = budget.reserve(env.request(&c, "k1")).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::AiDisabled(_)),
        "{refused:?}"
    );
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(status.holds, 0);
}

pub async fn budget_exceeded_holds_nothing(env: Env) {
    let c = env.community("exceeded", 1).await;
    let budget = env.sg.budget();
    let mut request = env.request(&c, "big");
    request.cost = spendgate::CostBasis::Estimate {
        amount: Micros::from_usd(2),
    };
    let decision = budget.reserve(request).await.unwrap();
    let ReserveDecision::BudgetExceeded {
        remaining, limit, ..
    } = decision
    else {
        panic!("expected BudgetExceeded, got {decision:?}");
    };
    assert_eq!(
        (remaining, limit),
        (Micros::from_usd(1), Micros::from_usd(1))
    );
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.reserved, status.holds), (Micros::ZERO, 0));
}

pub async fn reserve_while_the_store_is_unreachable_is_denied(env: Env) {
    let c = env.community("store-down", 10).await;
    env.faults.set_store_down(true);
    let refused = env
        .sg
        .budget()
        .reserve(env.request(&c, "k1"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ReserveError::StoreUnavailable(_)),
        "{refused:?}"
    );
    env.faults.set_store_down(false);
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(status.holds, 0);
}

pub async fn finalize_while_the_store_is_unreachable_is_queued_and_replayed_once(env: Env) {
    let c = env.community("queued", 10).await;
    let budget = env.sg.budget();
    let hold = env.reserve(env.request(&c, "k1")).await;
    let ticket = hold.ticket().clone();
    env.faults.set_store_down(true);
    let settled = hold.finalize(Usage::cost(m(500))).await.unwrap();
    assert_eq!(settled, Settled::Queued { actual: m(500) });
    assert_eq!(env.queue.len().await.unwrap(), 1);
    assert!(
        env.log
            .logged(&c, &hold_ref("k1"), Timestamp::EPOCH)
            .await
            .unwrap()
            .is_none()
    );

    // Still down: the replay keeps it.
    env.advance_ms(2_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.retried), (1, 1));

    env.faults.set_store_down(false);
    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (1, 1));
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!(report.claimed, 0);

    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.reserved), (m(500), Micros::ZERO));
    let row = env
        .log
        .logged(&c, &hold_ref("k1"), Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.cost, m(500));
    // The caller retries its finalize: nothing more is committed.
    let again = budget.finalize(&ticket, Usage::cost(m(500))).await.unwrap();
    assert_eq!(
        again,
        Settled::Committed {
            outcome: FinalizeOutcome::AlreadyFinalized { actual: m(500) }
        }
    );
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(status.committed, m(500));
    assert_eq!(env.queue.len().await.unwrap(), 0);
}

pub async fn usage_log_outage_after_the_commit_is_written_by_the_replay(env: Env) {
    let c = env.community("log-down", 10).await;
    let budget = env.sg.budget();
    let hold = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_log_down(true);
    let settled = hold.finalize(Usage::cost(m(300))).await.unwrap();
    assert!(matches!(
        settled,
        Settled::Committed {
            outcome: FinalizeOutcome::Finalized(_)
        }
    ));
    assert_eq!(env.queue.len().await.unwrap(), 1);
    env.faults.set_log_down(false);
    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!(report.completed, 1);
    let row = env
        .log
        .logged(&c, &hold_ref("k1"), Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost, row.estimate), (m(300), m(ESTIMATE_1200_800)));
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(status.committed, m(300));
}

pub async fn finalize_after_the_store_lost_its_data_commits_once_and_logs_once(env: Env) {
    let c = env.community("lost", 10).await;
    let budget = env.sg.budget();
    let hold = env.reserve(env.request(&c, "k1")).await;
    let ticket = hold.ticket().clone();
    crate::support::lose_store_data(&env, &c).await;
    let settled = hold.finalize(Usage::cost(m(700))).await.unwrap();
    assert!(
        matches!(
            &settled,
            Settled::Committed {
                outcome: FinalizeOutcome::CommittedWithoutHold(r)
            } if r.actual == m(700) && r.period == ticket.hold.period
        ),
        "{settled:?}"
    );
    let again = budget.finalize(&ticket, Usage::cost(m(700))).await.unwrap();
    assert_eq!(
        again,
        Settled::Committed {
            outcome: FinalizeOutcome::AlreadyFinalized { actual: m(700) }
        }
    );
    let status = budget
        .status(&c, Some(ticket.hold.period), None)
        .await
        .unwrap();
    assert_eq!(status.committed, m(700));
    let row = env
        .log
        .logged(&c, &hold_ref("k1"), Timestamp::EPOCH)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost, row.estimate), (m(700), m(ESTIMATE_1200_800)));
    assert_eq!(row.source, CostSource::LateFinalize);
}

pub async fn rebuild_after_the_store_lost_its_data_restores_committed_from_the_log(env: Env) {
    let c = env.community("rebuild", 10).await;
    let budget = env.sg.budget();
    for (k, cost) in [("k1", 300), ("k2", 200)] {
        let hold = env.reserve(env.request(&c, k)).await;
        hold.finalize(Usage::cost(m(cost))).await.unwrap();
    }
    let live = env.reserve(env.request(&c, "k3")).await;
    crate::support::lose_store_data(&env, &c).await;
    assert_eq!(budget.status(&c, None, None).await.unwrap().committed, m(0));

    let report = budget.rebuild(&c, None).await.unwrap();
    assert_eq!((report.before, report.after), (m(0), m(500)));
    assert_eq!(report.users.get(&user("alice")), Some(&m(500)));
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.limits), (m(500), None));
    let refused = budget.reserve(env.request(&c, "k4")).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::NotConfigured(_)),
        "never accepted without a limit: {refused:?}"
    );
    let again = budget.rebuild(&c, None).await.unwrap();
    assert_eq!((again.before, again.after), (m(500), m(500)), "idempotent");
    // The hold the store forgot still pays once, on top of the rebuilt sum.
    live.finalize(Usage::cost(m(100))).await.unwrap();
    assert_eq!(
        budget.status(&c, None, None).await.unwrap().committed,
        m(600)
    );
}

/// A settlement still queued may be in the store and not yet in the log;
/// a rebuild then restores nothing, and succeeds once it is replayed.
pub async fn rebuild_with_a_settlement_still_queued_restores_nothing_until_it_is_replayed(
    env: Env,
) {
    let c = env.community("rebuild-pending", 10).await;
    let budget = env.sg.budget();
    let hold = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_store_down(true);
    hold.finalize(Usage::cost(m(300))).await.unwrap();
    env.faults.set_store_down(false);
    let refused = budget.rebuild(&c, None).await.unwrap_err();
    assert!(
        matches!(refused, RebuildError::SettlementsPending { pending: 1 }),
        "{refused:?}"
    );
    env.advance_ms(60_000);
    let report = budget.rebuild(&c, None).await.unwrap();
    assert_eq!((report.before, report.after), (m(300), m(300)));
}

pub async fn dropped_guard_is_handed_to_reconciliation_not_cancelled(env: Env) {
    let c = env.community("dropped", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    let expected = hold.ticket().hold.clone();
    drop(hold);
    let handed = env.handovers(1).await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].hold, expected);
    assert_eq!(handed[0].community, c);
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.reserved, status.committed, status.holds),
        (m(ESTIMATE_1200_800), Micros::ZERO, 1),
        "the hold stays held for reconciliation"
    );
}

pub async fn heartbeat_keeps_a_long_stream_past_its_ttl(env: Env) {
    let c = env.community("heartbeat", 10).await;
    let ttl = spendgate::domain::Ttl::from_millis(600).unwrap();
    let mut hold = env.reserve(env.request(&c, "k1").with_ttl(ttl)).await;
    hold.keep_alive(ttl);
    // The stream runs twice past the hold's TTL; each round the clock moves
    // a third of the TTL and a beat (every 200 ms) extends the hold. The
    // beat seen may have read the clock up to two rounds back (beats run
    // while the test advances), so a round must stay under half the TTL.
    for _ in 0..6 {
        let beats = env.faults.extends();
        env.advance_ms(200);
        crate::support::eventually("a heartbeat extend", || env.faults.extends() > beats).await;
        let reaped = env.store_reap(&c).await;
        assert_eq!(reaped, 0, "the heartbeat kept the hold alive");
    }
    let settled = hold.finalize(Usage::cost(m(100))).await.unwrap();
    assert!(
        matches!(
            settled,
            Settled::Committed {
                outcome: FinalizeOutcome::Finalized(_)
            }
        ),
        "{settled:?}"
    );
}

pub async fn replayed_reserve_returns_the_first_hold(env: Env) {
    let c = env.community("replay", 10).await;
    let first = env.reserve(env.request(&c, "k1")).await;
    let replay = env.reserve(env.request(&c, "k1")).await;
    assert!(replay.is_replay());
    assert_eq!(replay.ticket().hold, first.ticket().hold);
    first.cancel().await.unwrap();
    replay.cancel().await.unwrap();
    let decision = env
        .sg
        .budget()
        .reserve(env.request(&c, "k1"))
        .await
        .unwrap();
    assert!(
        matches!(decision, ReserveDecision::AlreadySettled),
        "{decision:?}"
    );
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.reserved, status.committed),
        (Micros::ZERO, Micros::ZERO)
    );
}

impl Env {
    /// Reaps through the real store at the clock's time; the count released.
    pub async fn store_reap(&self, c: &spendgate::domain::CommunityId) -> u64 {
        use spendgate::ports::Clock;
        self.sg
            .ports()
            .store
            .reap(c, self.clock.now())
            .await
            .unwrap()
            .count
    }
}

/// Expands to one `#[test]` per scenario, each on a fresh environment from
/// `$env` (an async fn returning [`Env`]).
/// 2026-12-01T00:00:00Z, when November's holds are a month behind.
const DECEMBER_MS: i64 = 1_796_083_200_000;

fn by_ids(env: &Env, c: &spendgate::domain::CommunityId, k: &str, actual: i64) -> SettleRequest {
    let _ = env;
    SettleRequest::new(c.clone(), hold_ref(k), Usage::cost(m(actual)))
}

pub async fn settle_by_ids_while_the_store_is_unreachable_is_queued_and_applied_once(env: Env) {
    let c = env.community("ids-down", 10).await;
    let budget = env.sg.budget();
    env.reserve(env.request(&c, "k1")).await.into_ticket();
    env.faults.set_store_down(true);
    let settled = budget.settle(by_ids(&env, &c, "k1", 750)).await.unwrap();
    assert_eq!(settled, Settled::Queued { actual: m(750) });
    // A retry while it is queued is answered from the same entry.
    let again = budget.settle(by_ids(&env, &c, "k1", 750)).await.unwrap();
    assert_eq!(again, Settled::Queued { actual: m(750) });
    assert_eq!(env.queue.len().await.unwrap(), 1);

    env.faults.set_store_down(false);
    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.completed), (1, 1));
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (m(750), Micros::ZERO, 0)
    );
    assert_eq!(env.log.total_cost(&c, status.period).await.unwrap(), m(750));
    let replay = budget.settle(by_ids(&env, &c, "k1", 750)).await.unwrap();
    assert_eq!(
        replay,
        Settled::Committed {
            outcome: FinalizeOutcome::AlreadyFinalized { actual: m(750) }
        }
    );
    assert_eq!(
        budget.status(&c, None, None).await.unwrap().committed,
        m(750)
    );
}

pub async fn settle_by_ids_of_a_hold_the_store_lost_commits_to_its_period_once(env: Env) {
    let c = env.community("ids-lost", 10).await;
    let budget = env.sg.budget();
    let ticket = env.reserve(env.request(&c, "k1")).await.into_ticket();
    let november = ticket.hold.period;
    crate::support::lose_store_data(&env, &c).await;
    env.clock.set(Timestamp::from_millis(DECEMBER_MS).unwrap());
    let known = KnownHold {
        period: Some(november),
        ..KnownHold::default()
    };
    let request = by_ids(&env, &c, "k1", 750).with_known(known);
    let settled = budget.settle(request.clone()).await.unwrap();
    let Settled::Committed {
        outcome: FinalizeOutcome::CommittedWithoutHold(receipt),
    } = settled
    else {
        panic!("expected CommittedWithoutHold, got {settled:?}");
    };
    assert_eq!((receipt.actual, receipt.period), (m(750), november));
    let again = budget.settle(request).await.unwrap();
    assert_eq!(
        again,
        Settled::Committed {
            outcome: FinalizeOutcome::AlreadyFinalized { actual: m(750) }
        }
    );
    assert_eq!(
        budget
            .status(&c, Some(november), None)
            .await
            .unwrap()
            .committed,
        m(750)
    );
    assert_eq!(budget.status(&c, None, None).await.unwrap().committed, m(0));
    assert_eq!(env.log.total_cost(&c, november).await.unwrap(), m(750));
    assert_eq!(env.queue.len().await.unwrap(), 0);
}

pub async fn settle_by_ids_of_a_lost_hold_without_its_period_charges_the_current_one(env: Env) {
    let c = env.community("ids-now", 10).await;
    let budget = env.sg.budget();
    env.reserve(env.request(&c, "k1")).await.into_ticket();
    crate::support::lose_store_data(&env, &c).await;
    env.clock.set(Timestamp::from_millis(DECEMBER_MS).unwrap());
    budget.settle(by_ids(&env, &c, "k1", 750)).await.unwrap();
    let december = Period::parse("2026-12").unwrap();
    assert_eq!(
        budget.status(&c, None, None).await.unwrap().period,
        december
    );
    assert_eq!(
        budget.status(&c, None, None).await.unwrap().committed,
        m(750)
    );
    assert_eq!(env.log.total_cost(&c, december).await.unwrap(), m(750));
}

pub async fn settle_by_ids_with_another_cost_is_refused_and_changes_nothing(env: Env) {
    let c = env.community("ids-other", 10).await;
    let budget = env.sg.budget();
    env.reserve(env.request(&c, "k1")).await.into_ticket();
    budget.settle(by_ids(&env, &c, "k1", 300)).await.unwrap();
    let refused = budget
        .settle(by_ids(&env, &c, "k1", 400))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        FinalizeError::SettledOtherwise {
            first: m(300),
            asked: m(400)
        }
    );
    assert_eq!(
        budget.status(&c, None, None).await.unwrap().committed,
        m(300)
    );
}

pub async fn a_release_by_ids_of_an_unknown_hold_writes_nothing(env: Env) {
    let c = env.community("ids-unknown", 10).await;
    let budget = env.sg.budget();
    let refused = budget
        .settle(SettleRequest::cancel(c.clone(), hold_ref("never")))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, FinalizeError::UnknownHold { .. }),
        "{refused:?}"
    );
    assert_eq!(env.queue.len().await.unwrap(), 0);
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (m(0), 0));
    assert!(
        env.log
            .logged(&c, &hold_ref("never"), Timestamp::EPOCH)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn token_usage_of_a_lost_hold_needs_its_model(env: Env) {
    let c = env.community("ids-model", 10).await;
    let budget = env.sg.budget();
    env.reserve(env.request(&c, "k1")).await.into_ticket();
    crate::support::lose_store_data(&env, &c).await;
    let tokens = SettleRequest::new(c.clone(), hold_ref("k1"), Usage::tokens(1_180, 412));
    let refused = budget.settle(tokens.clone()).await.unwrap_err();
    assert_eq!(refused, FinalizeError::ModelUnknown);
    let known = KnownHold {
        model: Some(model("cheap")),
        ..KnownHold::default()
    };
    let settled = budget.settle(tokens.with_known(known)).await.unwrap();
    assert!(
        matches!(
            settled,
            Settled::Committed {
                outcome: FinalizeOutcome::CommittedWithoutHold(ref r)
            } if r.actual == m(ACTUAL_1180_412)
        ),
        "{settled:?}"
    );
}

pub async fn a_key_used_again_after_the_store_forgot_it_is_logged_for_each_use(env: Env) {
    let c = env.community("reuse", 10).await;
    let budget = env.sg.budget();
    let first = env.reserve(env.request(&c, "reuse")).await;
    first.finalize(Usage::cost(m(300_000))).await.unwrap();
    // Past the marker's retention the store has forgotten the key.
    env.advance_ms(25 * 3_600_000);
    let second = env.reserve(env.request(&c, "reuse")).await;
    assert!(!second.is_replay());
    second.finalize(Usage::cost(m(400_000))).await.unwrap();
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(status.committed, m(700_000));
    assert_eq!(
        env.log.total_cost(&c, status.period).await.unwrap(),
        m(700_000)
    );
    let report = budget.rebuild(&c, None).await.unwrap();
    assert_eq!((report.before, report.after), (m(700_000), m(700_000)));
}

/// A settlement whose store write applied but whose usage row is still
/// missing when the store forgets its key and the key is used again: the
/// new use is settled and logged on its own, and the old one, which the
/// store can no longer tell apart from it, is parked for an operator
/// instead of being taken for the new use's.
pub async fn a_settlement_still_queued_when_its_key_is_used_again_is_parked_not_merged(env: Env) {
    let c = env.community("requeued", 10).await;
    let budget = env.sg.budget();
    let first = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_log_down(true);
    let settled = first.finalize(Usage::cost(m(300))).await.unwrap();
    assert!(matches!(settled, Settled::Committed { .. }), "{settled:?}");
    env.faults.set_log_down(false);
    assert_eq!(env.queue.len().await.unwrap(), 1);
    // Past the marker's retention the store has forgotten the key.
    env.advance_ms(25 * 3_600_000);
    let second = env.reserve(env.request(&c, "k1")).await;
    assert!(!second.is_replay());
    let period = second.ticket().hold.period;
    let settled = second.finalize(Usage::cost(m(400))).await.unwrap();
    assert!(matches!(settled, Settled::Committed { .. }), "{settled:?}");

    env.advance_ms(60_000);
    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.refused), (1, 1));
    assert_eq!(env.queue.len().await.unwrap(), 0);
    let dead = env.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.settlement.actual, m(300));
    assert_eq!(env.log.total_cost(&c, period).await.unwrap(), m(400));
    let status = budget.status(&c, Some(period), None).await.unwrap();
    assert_eq!(status.committed, m(700));
}

/// A settlement queued while the store was down, whose hold the store
/// reaped and forgot before it could be applied, never settles the hold
/// of the key's next use.
pub async fn a_settlement_queued_past_its_keys_reuse_never_settles_the_new_hold(env: Env) {
    let c = env.community("outlived", 10).await;
    let budget = env.sg.budget();
    let first = env.reserve(env.request(&c, "k1")).await;
    env.faults.set_store_down(true);
    let settled = first.finalize(Usage::cost(m(300))).await.unwrap();
    assert_eq!(settled, Settled::Queued { actual: m(300) });
    env.faults.set_store_down(false);
    env.advance_ms(3_600_000);
    assert_eq!(env.store_reap(&c).await, 1);
    env.advance_ms(25 * 3_600_000);
    let second = env.reserve(env.request(&c, "k1")).await;
    assert!(!second.is_replay());
    let period = second.ticket().hold.period;
    let estimate = second.estimate();

    let report = budget.replay_settlements(100).await.unwrap();
    assert_eq!((report.claimed, report.refused), (1, 1));
    let status = budget.status(&c, Some(period), None).await.unwrap();
    assert_eq!(
        (status.committed, status.reserved, status.holds),
        (Micros::ZERO, estimate, 1)
    );
    let settled = second.finalize(Usage::cost(m(400))).await.unwrap();
    assert!(
        matches!(
            settled,
            Settled::Committed {
                outcome: FinalizeOutcome::Finalized(_)
            }
        ),
        "{settled:?}"
    );
    let status = budget.status(&c, Some(period), None).await.unwrap();
    assert_eq!((status.committed, status.holds), (m(400), 0));
    assert_eq!(env.log.total_cost(&c, period).await.unwrap(), m(400));
    assert_eq!(env.queue.dead_letter_count().await.unwrap(), 1);
}

pub async fn two_callers_settling_one_lost_hold_at_once_commit_it_once_and_log_it_once(env: Env) {
    let c = env.community("ids-race", 10).await;
    let budget = env.sg.budget();
    let keys: Vec<String> = (0..20).map(|n| format!("k{n}")).collect();
    for k in &keys {
        env.reserve(env.request(&c, k)).await.into_ticket();
    }
    crate::support::lose_store_data(&env, &c).await;
    for k in &keys {
        let settle = |request: SettleRequest| {
            let budget = budget.clone();
            tokio::spawn(async move { budget.settle(request).await })
        };
        let (ra, rb) = tokio::join!(
            settle(by_ids(&env, &c, k, 100)),
            settle(by_ids(&env, &c, k, 100))
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
    }
    env.advance_ms(60_000);
    budget.replay_settlements(100).await.unwrap();
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!(status.committed, m(2_000));
    assert_eq!(
        env.log.total_cost(&c, status.period).await.unwrap(),
        m(2_000)
    );
    assert_eq!(env.queue.len().await.unwrap(), 0);
}

pub async fn two_callers_settling_one_live_hold_at_once_commit_it_once_and_log_it_once(env: Env) {
    let c = env.community("ids-live-race", 10).await;
    let budget = env.sg.budget();
    for n in 0..20 {
        let k = format!("k{n}");
        let ticket = env.reserve(env.request(&c, &k)).await.into_ticket();
        // Settled after the reserve: a row keyed by the settlement's time
        // would differ from one keyed by the hold's.
        env.advance_ms(1);
        let guard_side = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.finalize(&ticket, Usage::cost(m(100))).await })
        };
        let ids_side = {
            let budget = budget.clone();
            let request = by_ids(&env, &c, &k, 100);
            tokio::spawn(async move { budget.settle(request).await })
        };
        let (a, b) = tokio::join!(guard_side, ids_side);
        a.unwrap().unwrap();
        b.unwrap().unwrap();
    }
    env.advance_ms(60_000);
    budget.replay_settlements(100).await.unwrap();
    let status = budget.status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (m(2_000), 0));
    assert_eq!(
        env.log.total_cost(&c, status.period).await.unwrap(),
        m(2_000)
    );
    assert_eq!(env.queue.len().await.unwrap(), 0);
}

#[macro_export]
macro_rules! service_scenarios {
    ($env:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::$name($env().await).await;
            }
        )*
    };
    ($env:path) => {
        $crate::service_scenarios!(
            $env;
            estimate_reserve_finalize_commits_the_actual_and_logs_it_once,
            tier_refusal_comes_before_any_hold,
            disabled_and_unconfigured_communities_are_refused,
            budget_exceeded_holds_nothing,
            reserve_while_the_store_is_unreachable_is_denied,
            finalize_while_the_store_is_unreachable_is_queued_and_replayed_once,
            usage_log_outage_after_the_commit_is_written_by_the_replay,
            finalize_after_the_store_lost_its_data_commits_once_and_logs_once,
            rebuild_after_the_store_lost_its_data_restores_committed_from_the_log,
            rebuild_with_a_settlement_still_queued_restores_nothing_until_it_is_replayed,
            dropped_guard_is_handed_to_reconciliation_not_cancelled,
            heartbeat_keeps_a_long_stream_past_its_ttl,
            replayed_reserve_returns_the_first_hold,
            settle_by_ids_while_the_store_is_unreachable_is_queued_and_applied_once,
            settle_by_ids_of_a_hold_the_store_lost_commits_to_its_period_once,
            settle_by_ids_of_a_lost_hold_without_its_period_charges_the_current_one,
            settle_by_ids_with_another_cost_is_refused_and_changes_nothing,
            a_release_by_ids_of_an_unknown_hold_writes_nothing,
            token_usage_of_a_lost_hold_needs_its_model,
            a_key_used_again_after_the_store_forgot_it_is_logged_for_each_use,
            a_settlement_still_queued_when_its_key_is_used_again_is_parked_not_merged,
            a_settlement_queued_past_its_keys_reuse_never_settles_the_new_hold,
            two_callers_settling_one_lost_hold_at_once_commit_it_once_and_log_it_once,
            two_callers_settling_one_live_hold_at_once_commit_it_once_and_log_it_once,
        );
    };
}
