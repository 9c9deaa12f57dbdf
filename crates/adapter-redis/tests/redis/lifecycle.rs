//! One reserve → finalize lifecycle on a fresh community, checked through
//! the counters: what the TLS and replica tests run to show a store works.

use spendgate_contract::fixture::{key, m, unique_community, user};
use spendgate_domain::{
    CommunityId, ConfigVersion, FinalizeOutcome, Limits, ModelAlias, Period, Reservation,
    ReserveOutcome, Settlement, Timestamp, Ttl,
};
use spendgate_ports::{BudgetStore, StoreError};

/// 2026-11-15T00:00:00Z
pub const NOV_15: i64 = 1_794_700_800_000;

pub fn now() -> Timestamp {
    Timestamp::from_millis(NOV_15).unwrap()
}

pub fn reservation(k: &str) -> Reservation {
    Reservation {
        user: user("alice"),
        key: key(k),
        estimate: m(10),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(60_000).unwrap(),
    }
}

pub fn settlement(k: &str, actual: i64) -> Settlement {
    Settlement {
        user: user("alice"),
        key: key(k),
        actual: m(actual),
    }
}

/// Sets a budget, reserves 10, finalizes 3, and checks committed 3 and
/// nothing reserved, on a new community; the first error is returned as
/// is.
pub async fn lifecycle(store: &dyn BudgetStore, label: &str) -> Result<(), StoreError> {
    lifecycle_on(store, &unique_community(label)).await
}

/// [`lifecycle`] on the community `c`, which must be new.
pub async fn lifecycle_on(store: &dyn BudgetStore, c: &CommunityId) -> Result<(), StoreError> {
    let c = c.clone();
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await?;
    let reserved = store.reserve(&c, &reservation("k1"), now()).await?;
    assert!(
        matches!(reserved, ReserveOutcome::Reserved { .. }),
        "{reserved:?}"
    );
    let finalized = store.finalize(&c, &settlement("k1", 3), now()).await?;
    assert!(
        matches!(finalized, FinalizeOutcome::Finalized(_)),
        "{finalized:?}"
    );
    let status = store.status(&c, Period::containing(now()).unwrap()).await?;
    assert_eq!((status.committed, status.reserved), (m(3), m(0)));
    Ok(())
}
