//! `set_limits` and configuration versions: limits carry the version of
//! the configuration they were read from, and a store never lets an older
//! version replace a newer one (issue 23: a config sync pass that read its
//! snapshot before a budget change must not undo it).

use std::sync::Arc;

use spendgate_domain::{ConfigVersion, LimitScope, Limits, ReserveOutcome, Timestamp};
use spendgate_ports::BudgetStore;

use crate::fixture::{Ctx, m, mid_november, november};

type Store = Arc<dyn BudgetStore>;

fn t0() -> Timestamp {
    mid_november(0)
}

fn exceeded(remaining: i64, limit: i64, scope: LimitScope) -> ReserveOutcome {
    ReserveOutcome::BudgetExceeded {
        remaining: m(remaining),
        limit: m(limit),
        scope,
    }
}

fn version(n: i64) -> ConfigVersion {
    ConfigVersion::new(n).unwrap()
}

/// Limits of an older configuration version after a newer one change
/// nothing (and the call succeeds): a config sync pass that read its
/// snapshot before a budget change cannot undo it.
pub async fn set_limits_of_an_older_version_after_a_newer_one_changes_nothing(store: Store) {
    let c = Ctx::unconfigured(&store, "set-limits-older");
    let newer = Limits::new(m(300)).with_per_user_cap(m(100));
    store
        .set_limits(&c.community, newer, version(1_765_400_000_002))
        .await
        .unwrap();
    for older in [1_765_400_000_001, 1, 0] {
        store
            .set_limits(&c.community, Limits::new(m(5_000)), version(older))
            .await
            .unwrap();
        assert_eq!(c.status(november()).await.limits, Some(newer), "{older}");
    }
    assert_eq!(
        c.reserve("alice", "k1", 101, t0()).await,
        exceeded(100, 100, LimitScope::User)
    );
}

/// Writers of several versions of the limits racing on one community (a
/// budget change and config sync passes of several replicas): whatever
/// the order, the newest version's limits are what stays.
pub async fn racing_set_limits_of_several_versions_leave_the_newest(store: Store) {
    for round in 0..10_i64 {
        let c = Ctx::unconfigured(&store, "set-limits-race");
        let writers: Vec<_> = (0..16_i64)
            .map(|i| {
                let (store, community) = (Arc::clone(&store), c.community.clone());
                // Versions 1..=16 in an order that changes every round.
                let v = (i * 7 + round) % 16 + 1;
                tokio::spawn(async move {
                    store
                        .set_limits(&community, Limits::new(m(100 * v)), version(v))
                        .await
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        assert_eq!(
            c.status(november()).await.limits,
            Some(Limits::new(m(1_600))),
            "round {round}"
        );
    }
}

/// Limits of the same version again, or of a newer one, replace them.
pub async fn set_limits_of_the_same_or_a_newer_version_applies(store: Store) {
    let c = Ctx::unconfigured(&store, "set-limits-newer");
    store
        .set_limits(&c.community, Limits::new(m(300)), version(7))
        .await
        .unwrap();
    store
        .set_limits(&c.community, Limits::new(m(400)), version(7))
        .await
        .unwrap();
    assert_eq!(c.status(november()).await.limits, Some(Limits::new(m(400))));
    store
        .set_limits(&c.community, Limits::new(m(200)), ConfigVersion::MAX)
        .await
        .unwrap();
    assert_eq!(c.status(november()).await.limits, Some(Limits::new(m(200))));
}
