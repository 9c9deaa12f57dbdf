//! Work queues kept in memory: the embedded default (nothing survives a
//! restart), the fallback the finalize queue uses while its database is
//! down, and the double the services are tested against.
//!
//! Claims never scan the queue: every live item is in exactly one of two
//! ordered indexes, `ready` (no running lease, by due time) or `leased`
//! (by the end of its lease), and dead letters are in neither. A claim
//! first moves the leases that ended back to `ready`, then takes the
//! earliest due items, so a claim of k items costs O((k + ended leases) ·
//! log n), however many items wait for a later time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, HoldRef, Timestamp, Ttl};
use spendgate_ports::{Claimed, DeadLetter, QueueItem, RepoError, WorkQueue, same_use};

/// The longest error text kept per item, in bytes.
const MAX_ERROR_LEN: usize = 2_000;

/// An item's key: (community, user, key) and which use of the key it is.
type Id = (CommunityId, HoldRef, Option<Timestamp>);

#[derive(Debug)]
struct Entry<T> {
    item: T,
    due_at: Timestamp,
    claimed_until: Option<Timestamp>,
    attempts: u32,
    last_error: Option<String>,
    dead_at: Option<Timestamp>,
}

impl<T: Clone> Entry<T> {
    fn claimed(&self) -> Claimed<T> {
        Claimed {
            item: self.item.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }
}

/// The entries and the three indexes over them.
#[derive(Debug)]
struct Entries<T> {
    by_id: BTreeMap<Id, Entry<T>>,
    /// Live entries without a running lease, by due time.
    ready: BTreeSet<(Timestamp, Id)>,
    /// Leased entries, by the end of their lease.
    leased: BTreeSet<(Timestamp, Id)>,
    /// Dead letters, by when they died.
    dead: BTreeSet<(Timestamp, Id)>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            ready: BTreeSet::new(),
            leased: BTreeSet::new(),
            dead: BTreeSet::new(),
        }
    }
}

impl<T> Entries<T> {
    /// The queued item that may be the same call as (community, hold,
    /// instance): the same use of the key, or one whose use is unknown on
    /// either side (see [`same_use`]); a live one before a dead letter.
    fn same_call(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Option<(&Id, &Entry<T>)> {
        let uses = (community.clone(), hold.clone(), None)
            ..=(community.clone(), hold.clone(), Some(Timestamp::MAX));
        self.by_id
            .range(uses)
            .filter(|((_, _, queued), _)| same_use(*queued, instance))
            .min_by_key(|(_, entry)| entry.dead_at.is_some())
    }

    /// Takes the entry of `id` out of whichever index holds it.
    fn unindex(&mut self, id: &Id) {
        let Some(entry) = self.by_id.get(id) else {
            return;
        };
        // The id is cloned for the look-up key: a set of tuples has no
        // borrowed form of its key.
        match (entry.dead_at, entry.claimed_until) {
            (Some(at), _) => self.dead.remove(&(at, id.clone())),
            (None, Some(until)) => self.leased.remove(&(until, id.clone())),
            (None, None) => self.ready.remove(&(entry.due_at, id.clone())),
        };
    }

    /// Moves the entries whose lease ended by `now` back to `ready`.
    fn release_ended_leases(&mut self, now: Timestamp) {
        while let Some((until, _)) = self.leased.first() {
            if *until > now {
                break;
            }
            let Some((_, id)) = self.leased.pop_first() else {
                break;
            };
            if let Some(entry) = self.by_id.get_mut(&id) {
                entry.claimed_until = None;
                self.ready.insert((entry.due_at, id));
            }
        }
    }
}

/// A [`WorkQueue`] in process memory, keyed by (community, user, key),
/// optionally bounded.
#[derive(Debug)]
pub struct MemoryWorkQueue<T> {
    entries: Mutex<Entries<T>>,
    capacity: Option<usize>,
}

impl<T> Default for MemoryWorkQueue<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: None,
        }
    }
}

impl<T: QueueItem> MemoryWorkQueue<T> {
    /// An empty queue without a bound.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue holding at most `capacity` items, dead letters
    /// included; past it [`WorkQueue::enqueue`] is refused with
    /// [`RepoError::Full`], so a long outage of what it stands in for
    /// cannot exhaust the process's memory.
    pub fn bounded(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: Some(capacity),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Entries<T>>, RepoError> {
        self.entries
            .lock()
            .map_err(|_| RepoError::Unavailable("memory queue lock poisoned".into()))
    }

    /// Every item, dead letters included, in (community, user, key) order.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] if the lock was poisoned.
    pub fn items(&self) -> Result<Vec<Claimed<T>>, RepoError> {
        Ok(self.lock()?.by_id.values().map(Entry::claimed).collect())
    }
}

fn cut(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl<T: QueueItem> WorkQueue<T> for MemoryWorkQueue<T> {
    async fn enqueue(&self, item: &T, due_at: Timestamp) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let (community, hold, instance) = (item.community(), item.hold_ref(), item.instance());
        let mut replaces = false;
        if let Some((queued, entry)) = entries.same_call(community, &hold, instance) {
            if entry.dead_at.is_none() {
                return Ok(false);
            }
            // A new settlement of a call whose last one was parked takes
            // its place: the dead letter never ran and never will.
            let queued = queued.clone();
            entries.unindex(&queued);
            entries.by_id.remove(&queued);
            replaces = true;
        }
        let id = (community.clone(), hold, instance);
        if let Some(capacity) = self.capacity
            && !replaces
            && entries.by_id.len() >= capacity
        {
            return Err(RepoError::Full {
                capacity: count(capacity),
            });
        }
        entries.ready.insert((due_at, id.clone()));
        entries.by_id.insert(
            id,
            Entry {
                item: item.clone(),
                due_at,
                claimed_until: None,
                attempts: 0,
                last_error: None,
                dead_at: None,
            },
        );
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<T>>, RepoError> {
        let until = now
            .plus(lease)
            .map_err(|e| RepoError::InvalidInput(e.to_string()))?;
        let mut entries = self.lock()?;
        entries.release_ended_leases(now);
        let mut claimed = Vec::new();
        while claimed.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
            match entries.ready.first() {
                Some((due_at, _)) if *due_at <= now => {}
                _ => break,
            }
            let Some((_, id)) = entries.ready.pop_first() else {
                break;
            };
            let Some(entry) = entries.by_id.get_mut(&id) else {
                continue;
            };
            entry.claimed_until = Some(until);
            claimed.push(entry.claimed());
            entries.leased.insert((until, id));
        }
        Ok(claimed)
    }

    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let id = (community.clone(), hold.clone(), instance);
        entries.unindex(&id);
        Ok(entries.by_id.remove(&id).is_some())
    }

    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let id = (community.clone(), hold.clone(), instance);
        match entries.by_id.get(&id) {
            Some(entry) if entry.dead_at.is_none() => {}
            _ => return Ok(false),
        }
        entries.unindex(&id);
        let Some(entry) = entries.by_id.get_mut(&id) else {
            return Ok(false);
        };
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_error = Some(cut(error));
        entry.claimed_until = None;
        entry.due_at = due_at;
        entries.ready.insert((due_at, id));
        Ok(true)
    }

    async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let id = (community.clone(), hold.clone(), instance);
        entries.unindex(&id);
        let Some(entry) = entries.by_id.get_mut(&id) else {
            return Ok(false);
        };
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_error = Some(cut(error));
        entry.claimed_until = None;
        entry.dead_at = Some(at);
        entries.dead.insert((at, id));
        Ok(true)
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter<T>>, RepoError> {
        let entries = self.lock()?;
        Ok(entries
            .dead
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .filter_map(|(dead_at, id)| {
                entries.by_id.get(id).map(|entry| DeadLetter {
                    item: entry.item.clone(),
                    attempts: entry.attempts,
                    error: entry.last_error.clone().unwrap_or_default(),
                    dead_at: *dead_at,
                })
            })
            .collect())
    }

    async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        Ok(count(self.lock()?.dead.len()))
    }

    async fn len(&self) -> Result<u64, RepoError> {
        let entries = self.lock()?;
        Ok(count(
            entries.by_id.len().saturating_sub(entries.dead.len()),
        ))
    }

    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        let entries = self.lock()?;
        Ok(count(
            entries
                .by_id
                .iter()
                .filter(|((c, _, _), entry)| c == community && entry.dead_at.is_none())
                .count(),
        ))
    }
}
