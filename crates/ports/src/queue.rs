//! Durable work queues: settlements on their way to the store and the usage
//! log, and dropped calls waiting for reconciliation.
//!
//! Both queues have the same shape, so one trait serves both: an item is
//! a call, identified by (community, user, key) and which use of the key
//! it is ([`QueueItem::instance`], when known: a key used again after the
//! store forgot it is another call, with an item of its own that no call
//! on the other use touches), queued at most once, leased to one claimer
//! at a time, and removed only when its work is done. Work done twice is
//! harmless because every store and log operation behind it is idempotent
//! per call; work lost is not, so an item leaves the queue only through
//! [`WorkQueue::complete`].
//!
//! Work that can never be done (the store refused it for good: a cost
//! that would overflow a counter, input it rejects, data it cannot read)
//! is not retried forever: [`WorkQueue::dead_letter`] parks it as a dead
//! letter, out of every claim, kept for an operator to read
//! ([`WorkQueue::dead_letters`]) until it is completed.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spendgate_domain::{
    CallId, CommunityId, Hold, HoldRef, Micros, ModelAlias, Period, Settlement, Timestamp,
    TokenCounts, Ttl,
};

use crate::config::RepoError;
use crate::usage::CostSource;

/// What a queue needs to know of an item: whose call it is.
pub trait QueueItem: Clone + Send + Sync + 'static {
    /// The community charged.
    fn community(&self) -> &CommunityId;
    /// The call's (user, key) inside the community.
    fn hold_ref(&self) -> HoldRef;
    /// Which use of the key: when its hold was made, if known.
    fn instance(&self) -> Option<Timestamp>;
}

/// Whether two instances ([`QueueItem::instance`]) may be the same use of
/// a key: equal, or at least one unknown.
pub fn same_use(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A settlement kept durably until both the store and the usage log have
/// it: written before the store is called (so a crash between the store's
/// commit and the log write loses nothing) and completed after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSettlement {
    /// The community charged.
    pub community: CommunityId,
    /// User, key and actual cost.
    pub settlement: Settlement,
    /// The period the reservation was made in (law 4).
    pub period: Period,
    /// The model alias of the call.
    pub model: ModelAlias,
    /// The estimate that was held (0 when unknown).
    pub estimate: Micros,
    /// When the hold was made, when the caller knew it: which use of the
    /// key this settlement is for (the usage log keeps every use).
    pub hold_created_at: Option<Timestamp>,
    /// Tokens used, when the caller knows them.
    pub tokens: TokenCounts,
    /// Trace id, if any.
    pub trace_id: Option<String>,
    /// Which path commits the cost.
    pub source: CostSource,
}

impl QueueItem for PendingSettlement {
    fn community(&self) -> &CommunityId {
        &self.community
    }

    fn hold_ref(&self) -> HoldRef {
        HoldRef {
            user: self.settlement.user.clone(),
            key: self.settlement.key.clone(),
        }
    }

    fn instance(&self) -> Option<Timestamp> {
        self.hold_created_at
    }
}

/// A hold whose guard was dropped before the call was settled: the call
/// may have cost money, so it is neither cancelled nor forgotten, but
/// handed to reconciliation, which asks the provider for the real cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The community charged.
    pub community: CommunityId,
    /// The hold as the reserve made it (user, key, estimate, model,
    /// period, created_at, expires_at).
    pub hold: Hold,
    /// Trace id, if any.
    pub trace_id: Option<String>,
    /// When the hold was handed over.
    pub handed_at: Timestamp,
}

impl Handover {
    /// The id the provider knows the call by.
    pub fn call_id(&self) -> CallId {
        CallId::of(&self.community, &self.hold)
    }
}

impl QueueItem for Handover {
    fn community(&self) -> &CommunityId {
        &self.community
    }

    fn hold_ref(&self) -> HoldRef {
        self.hold.hold_ref()
    }

    fn instance(&self) -> Option<Timestamp> {
        Some(self.hold.created_at)
    }
}

/// An item leased to one claimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed<T> {
    /// The item.
    pub item: T,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// An item parked because its work can never be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<T> {
    /// The item.
    pub item: T,
    /// Failed attempts, the last one included.
    pub attempts: u32,
    /// Why it can never be done.
    pub error: String,
    /// When it was parked.
    pub dead_at: Timestamp,
}

/// A durable queue of work items keyed by call.
///
/// An item is identified by (community, user, key, instance), where
/// `instance` names the use of the key ([`QueueItem::instance`]; `None`:
/// not known). Every call but [`WorkQueue::enqueue`] matches it exactly.
///
/// Implementations MUST keep an item until [`WorkQueue::complete`] removes
/// it (a claimer that dies leaves it to be claimed again when its lease
/// ends), MUST NOT hand one item to two claimers while a lease runs,
/// MUST NOT hand out a dead letter at all, and MUST make every call
/// atomic.
// `len` answers from storage and can fail; an `is_empty` would be a
// second round trip for nothing.
#[allow(clippy::len_without_is_empty)]
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WorkQueue<T: QueueItem>: Send + Sync {
    /// Queues `item`, first due at `due_at` (a caller that works on the
    /// item itself passes `now` plus the time it needs, so no claimer
    /// races it). Returns `false`, changing nothing, when a live item of
    /// the same call is already queued: the same (community, user, key)
    /// and a use that may be the same ([`same_use`]: equal, or not known
    /// on one side). A dead letter of the same call is replaced by `item`
    /// (it never ran and never will), and `true` returned: the new
    /// settlement owns the entry. An item of another known use of the key
    /// is left alone, and `item` queued beside it. Concurrent enqueues of
    /// one call queue it once.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] (nothing queued);
    /// [`RepoError::InvalidInput`] for a field the storage cannot hold;
    /// [`RepoError::Full`] from a bounded queue that holds as many items as
    /// it may (nothing queued).
    async fn enqueue(&self, item: &T, due_at: Timestamp) -> Result<bool, RepoError>;

    /// Leases up to `limit` items due at `now` (earliest due first) until
    /// `now + lease`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for an item that
    /// cannot be read back (it stays queued and leased).
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<T>>, RepoError>;

    /// Removes the item of (community, user, key) and `instance`: its work
    /// is done. Returns whether it was there.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError>;

    /// Records a failed attempt: one more attempt, `error` kept (cut to a
    /// bounded length), the lease dropped and the item due again at
    /// `due_at`. Returns whether it was there; a dead letter is left as
    /// it is (`false`).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError>;

    /// Records a failed attempt that can never succeed and parks the item
    /// as a dead letter: one more attempt, `error` kept (cut to a bounded
    /// length), the lease dropped, `at` kept as when it died. It is never
    /// claimed again; [`WorkQueue::complete`] still removes it, and
    /// [`WorkQueue::enqueue`] of the same call replaces it. Returns whether
    /// it was there.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError>;

    /// Up to `limit` dead letters, the earliest parked first.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]; [`RepoError::BadData`] for an item that
    /// cannot be read back.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter<T>>, RepoError>;

    /// How many dead letters the queue holds.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn dead_letter_count(&self) -> Result<u64, RepoError>;

    /// How many items are queued, due or not; dead letters are not
    /// counted (see [`WorkQueue::dead_letter_count`]).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn len(&self) -> Result<u64, RepoError>;

    /// How many items of `community` are queued, due, leased or waiting;
    /// dead letters are not counted. A rebuild of the community's counters
    /// asks it: a settlement still queued may be in the store and not yet
    /// in the usage log.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`].
    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError>;
}

/// Settlements kept until they reached the store and the usage log.
pub type FinalizeQueue = dyn WorkQueue<PendingSettlement>;

/// Dropped calls waiting for the provider's word on their cost.
pub type ReconciliationQueue = dyn WorkQueue<Handover>;
