//! Ids, instants and a thin driver shared by the scenarios.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use spendgate_domain::{
    CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, IdempotencyKey, Limits,
    Micros, ModelAlias, Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl,
    UnheldCommit, UserId, UserSpend,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, USERS_PAGE_MAX};

/// The TTL scenarios give holds unless they say otherwise: one minute.
pub const TTL_MS: i64 = 60_000;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A community id unique to this process and run, so that tests can share
/// one Redis or database without seeing each other.
pub fn unique_community(label: &str) -> CommunityId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let label: String = label.chars().take(48).collect();
    CommunityId::parse(format!("ct-{label}-{}-{nanos:x}-{n}", std::process::id())).unwrap()
}

/// A user id.
pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// An idempotency key.
pub fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::parse(name).unwrap()
}

/// An amount in micro-USD.
pub fn m(micros: i64) -> Micros {
    Micros::new(micros).unwrap()
}

/// A period from `YYYY-MM`.
pub fn period(text: &str) -> Period {
    Period::parse(text).unwrap()
}

/// November 2026, the month most scenarios live in.
pub fn november() -> Period {
    period("2026-11")
}

/// December 2026.
pub fn december() -> Period {
    period("2026-12")
}

/// `ms` after 2026-11-15T00:00:00Z.
pub fn mid_november(ms: i64) -> Timestamp {
    at(november().start(), 14 * 86_400_000 + ms)
}

/// `ms` after 2026-12-01T00:00:00Z (negative: before it).
pub fn december_start(ms: i64) -> Timestamp {
    at(december().start(), ms)
}

/// `base + ms`.
pub fn at(base: Timestamp, ms: i64) -> Timestamp {
    base.plus_millis(ms).unwrap()
}

/// A hold reference.
pub fn hold(user_name: &str, key_name: &str) -> HoldRef {
    HoldRef {
        user: user(user_name),
        key: key(key_name),
    }
}

/// One community of one store, with terse calls for the scenarios.
pub struct Ctx {
    /// The store under test.
    pub store: Arc<dyn BudgetStore>,
    /// The scenario's own community.
    pub community: CommunityId,
}

impl Ctx {
    /// A fresh community with `limit` and no cap.
    pub async fn with_limit(store: &Arc<dyn BudgetStore>, label: &str, limit: i64) -> Self {
        Self::with_limits(store, label, Limits::new(m(limit))).await
    }

    /// A fresh community with `limits`.
    pub async fn with_limits(store: &Arc<dyn BudgetStore>, label: &str, limits: Limits) -> Self {
        let ctx = Self::unconfigured(store, label);
        ctx.store
            .set_limits(&ctx.community, limits, ConfigVersion::ZERO)
            .await
            .unwrap();
        ctx
    }

    /// A fresh community that was never given limits.
    pub fn unconfigured(store: &Arc<dyn BudgetStore>, label: &str) -> Self {
        Self {
            store: Arc::clone(store),
            community: unique_community(label),
        }
    }

    /// Reserves with the default TTL and model `cheap`.
    pub async fn reserve(&self, u: &str, k: &str, estimate: i64, now: Timestamp) -> ReserveOutcome {
        self.try_reserve(u, k, estimate, TTL_MS, now).await.unwrap()
    }

    /// Reserves with an explicit TTL, returning the raw result.
    pub async fn try_reserve(
        &self,
        u: &str,
        k: &str,
        estimate: i64,
        ttl_ms: i64,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let reservation = Reservation {
            user: user(u),
            key: key(k),
            estimate: m(estimate),
            model: ModelAlias::parse("cheap").unwrap(),
            ttl: Ttl::from_millis(ttl_ms).unwrap(),
        };
        self.store.reserve(&self.community, &reservation, now).await
    }

    /// Finalizes with `actual`.
    pub async fn finalize(
        &self,
        u: &str,
        k: &str,
        actual: i64,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let settlement = Settlement {
            user: user(u),
            key: key(k),
            actual: m(actual),
        };
        self.store.finalize(&self.community, &settlement, now).await
    }

    /// Commits `actual` for (u, k) with model `cheap`, to `period` when
    /// the store holds nothing for the call.
    pub async fn commit_unheld(
        &self,
        u: &str,
        k: &str,
        actual: i64,
        period: Period,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let commit = UnheldCommit {
            user: user(u),
            key: key(k),
            actual: m(actual),
            period,
            model: ModelAlias::parse("cheap").unwrap(),
        };
        self.store
            .commit_unheld(&self.community, &commit, now)
            .await
    }

    /// Cancels.
    pub async fn cancel(
        &self,
        u: &str,
        k: &str,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.store.cancel(&self.community, &hold(u, k), now).await
    }

    /// Extends by `ttl_ms` from `now`.
    pub async fn extend(
        &self,
        u: &str,
        k: &str,
        ttl_ms: i64,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let ttl = Ttl::from_millis(ttl_ms).unwrap();
        self.store
            .extend(&self.community, &hold(u, k), ttl, now)
            .await
    }

    /// Reaps at `now`.
    pub async fn reap(&self, now: Timestamp) -> Reaped {
        self.store.reap(&self.community, now).await.unwrap()
    }

    /// Status of `period`.
    pub async fn status(&self, period: Period) -> BudgetStatus {
        self.store.status(&self.community, period).await.unwrap()
    }

    /// Every user of `period` with sums, read page by page.
    pub async fn users(&self, period: Period) -> BTreeMap<UserId, UserSpend> {
        listing(self.store.as_ref(), &self.community, period).await
    }

    /// Asserts one user's committed and reserved sums in a period, as the
    /// status read for that user gives them and as the listing does (both
    /// zero: the user is absent from the listing).
    pub async fn assert_user(&self, period: Period, u: &str, committed: i64, reserved: i64) {
        let want = UserSpend {
            committed: m(committed),
            reserved: m(reserved),
        };
        let status = self
            .store
            .status_with_user(&self.community, period, Some(&user(u)))
            .await
            .unwrap();
        assert_eq!(status.user, Some(want), "{period}: status of user {u}");
        let users = self.users(period).await;
        let listed = users.get(&user(u)).copied();
        let want = (want != UserSpend::default()).then_some(want);
        assert_eq!(listed, want, "{period}: sums of user {u} in {users:?}");
    }

    /// Asserts a period's committed, reserved and hold count.
    pub async fn assert_counters(&self, period: Period, committed: i64, reserved: i64, holds: u64) {
        let status = self.status(period).await;
        assert_eq!(
            (status.committed, status.reserved, status.holds),
            (m(committed), m(reserved), holds),
            "{period}: (committed, reserved, holds)"
        );
    }
}

/// Every user of `community`'s `period` with sums, read through
/// [`BudgetStore::users`] in pages of two (a scanning store may return a
/// scan step more), so that every scenario also walks the cursor. A user listed twice (allowed on a scanning store) must
/// carry the same sums both times: nothing changes during the listing.
pub async fn listing(
    store: &dyn BudgetStore,
    community: &CommunityId,
    period: Period,
) -> BTreeMap<UserId, UserSpend> {
    listing_in_pages(store, community, period, PageSize::new(2).unwrap()).await
}

/// [`listing`] in pages of `size`: the model test reads after every step
/// and pages of the largest size keep it at one call.
pub async fn listing_in_pages(
    store: &dyn BudgetStore,
    community: &CommunityId,
    period: Period,
    size: PageSize,
) -> BTreeMap<UserId, UserSpend> {
    let mut users = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .users(community, period, cursor.as_ref(), size)
            .await
            .unwrap();
        assert!(
            page.users.len() <= usize::from(USERS_PAGE_MAX),
            "a page of {}",
            page.users.len()
        );
        for (user, spend) in page.users {
            assert!(
                spend != UserSpend::default(),
                "{user} listed with zero sums"
            );
            if let Some(before) = users.insert(user.clone(), spend) {
                assert_eq!(before, spend, "{user} listed twice with other sums");
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return users,
        }
    }
}
