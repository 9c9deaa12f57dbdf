//! The suite must fail a store that drifts from the model; otherwise a
//! green contract run would prove nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use async_trait::async_trait;
use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_domain::{
    BudgetPolicy, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef, Limits,
    Period, Reaped, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

/// The memory store, except that its reaper forgets to release anything:
/// the leak the seed's layout had when the reaper ran late.
struct LeakyReaper(MemoryBudgetStore);

#[async_trait]
impl BudgetStore for LeakyReaper {
    async fn reserve(
        &self,
        c: &CommunityId,
        r: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        self.0.reserve(c, r, now).await
    }
    async fn extend(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        self.0.extend(c, h, ttl, now).await
    }
    async fn finalize(
        &self,
        c: &CommunityId,
        s: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.0.finalize(c, s, now).await
    }
    async fn commit_unheld(
        &self,
        c: &CommunityId,
        u: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.0.commit_unheld(c, u, now).await
    }
    async fn cancel(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.0.cancel(c, h, now).await
    }
    async fn reap(&self, _: &CommunityId, _: Timestamp) -> Result<Reaped, StoreError> {
        Ok(Reaped::default())
    }
    async fn status_with_user<'a>(
        &self,
        c: &CommunityId,
        p: Period,
        u: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        self.0.status_with_user(c, p, u).await
    }
    async fn users<'a>(
        &self,
        c: &CommunityId,
        p: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        self.0.users(c, p, cursor, size).await
    }
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        self.0.due_communities(now, limit).await
    }
    async fn lookup(
        &self,
        c: &CommunityId,
        h: &HoldRef,
        now: Timestamp,
    ) -> Result<spendgate_domain::HoldState, StoreError> {
        self.0.lookup(c, h, now).await
    }
    async fn restore_committed(
        &self,
        c: &CommunityId,
        p: Period,
        committed: &std::collections::BTreeMap<spendgate_domain::UserId, spendgate_domain::Micros>,
    ) -> Result<(), StoreError> {
        self.0.restore_committed(c, p, committed).await
    }
    async fn set_limits(
        &self,
        c: &CommunityId,
        l: Limits,
        v: ConfigVersion,
    ) -> Result<(), StoreError> {
        self.0.set_limits(c, l, v).await
    }
}

async fn leaky() -> Arc<dyn BudgetStore> {
    Arc::new(LeakyReaper(MemoryBudgetStore::new(BudgetPolicy::default())))
}

#[test]
fn property_test_fails_a_store_whose_reaper_leaks() {
    let outcome = catch_unwind(AssertUnwindSafe(|| spendgate_contract::model::check(leaky)));
    assert!(
        outcome.is_err(),
        "the property test passed a leaking reaper"
    );
}

#[test]
fn reap_scenario_fails_a_store_whose_reaper_leaks() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        spendgate_contract::run(
            leaky,
            spendgate_contract::scenarios::reap_at_the_expiry_millisecond_releases_the_hold,
        );
    }));
    assert!(outcome.is_err(), "the scenario passed a leaking reaper");
}

/// The memory idempotency store, except that it never compares
/// fingerprints: a key reused for another body replays as the first one.
struct Blind(spendgate_adapter_memory::MemoryIdempotency);

#[async_trait]
impl spendgate_ports::IdempotencyStore for Blind {
    async fn claim(
        &self,
        id: &spendgate_ports::RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<spendgate_ports::Claim, spendgate_ports::RepoError> {
        match self.0.claim(id, fingerprint, now, keep_until).await {
            Ok(spendgate_ports::Claim::Mismatch) => Ok(spendgate_ports::Claim::Pending),
            other => other,
        }
    }
    async fn complete(
        &self,
        id: &spendgate_ports::RequestId,
        fingerprint: &[u8],
        response: &spendgate_ports::StoredResponse,
    ) -> Result<bool, spendgate_ports::RepoError> {
        self.0.complete(id, fingerprint, response).await
    }
    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, spendgate_ports::RepoError> {
        self.0.purge(now, limit).await
    }
}

async fn blind() -> Arc<dyn spendgate_ports::IdempotencyStore> {
    Arc::new(Blind(spendgate_adapter_memory::MemoryIdempotency::new()))
}

#[test]
fn mismatch_scenario_fails_a_store_blind_to_fingerprints() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        spendgate_contract::run(
            blind,
            spendgate_contract::idempotency::other_fingerprint_while_pending_is_a_mismatch,
        );
    }));
    assert!(
        outcome.is_err(),
        "the scenario passed a store blind to fingerprints"
    );
}
