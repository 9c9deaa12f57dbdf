//! Work queues kept in memory: the embedded default (nothing survives a
//! restart) and the double the services are tested against.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::{CommunityId, HoldRef, Timestamp, Ttl};
use spendgate_ports::{Claimed, QueueItem, RepoError, WorkQueue};

/// The longest error text kept per item, in bytes.
const MAX_ERROR_LEN: usize = 2_000;

#[derive(Debug)]
struct Entry<T> {
    item: T,
    due_at: Timestamp,
    claimed_until: Option<Timestamp>,
    attempts: u32,
    last_error: Option<String>,
}

type Entries<T> = BTreeMap<(CommunityId, HoldRef), Entry<T>>;

/// A [`WorkQueue`] in process memory, keyed by (community, user, key).
#[derive(Debug)]
pub struct MemoryWorkQueue<T> {
    entries: Mutex<Entries<T>>,
}

impl<T> Default for MemoryWorkQueue<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T: QueueItem> MemoryWorkQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Entries<T>>, RepoError> {
        self.entries
            .lock()
            .map_err(|_| RepoError::Unavailable("memory queue lock poisoned".into()))
    }

    /// Every queued item, in (community, user, key) order.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] if the lock was poisoned.
    pub fn items(&self) -> Result<Vec<Claimed<T>>, RepoError> {
        Ok(self
            .lock()?
            .values()
            .map(|e| Claimed {
                item: e.item.clone(),
                attempts: e.attempts,
                last_error: e.last_error.clone(),
            })
            .collect())
    }
}

fn cut(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

#[async_trait]
impl<T: QueueItem> WorkQueue<T> for MemoryWorkQueue<T> {
    async fn enqueue(&self, item: &T, due_at: Timestamp) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let id = (item.community().clone(), item.hold_ref());
        if entries.contains_key(&id) {
            return Ok(false);
        }
        entries.insert(
            id,
            Entry {
                item: item.clone(),
                due_at,
                claimed_until: None,
                attempts: 0,
                last_error: None,
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
        let mut due: Vec<&mut Entry<T>> = entries
            .values_mut()
            .filter(|e| e.due_at <= now && e.claimed_until.is_none_or(|c| c <= now))
            .collect();
        due.sort_by_key(|e| e.due_at);
        Ok(due
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|e| {
                e.claimed_until = Some(until);
                Claimed {
                    item: e.item.clone(),
                    attempts: e.attempts,
                    last_error: e.last_error.clone(),
                }
            })
            .collect())
    }

    async fn complete(&self, community: &CommunityId, hold: &HoldRef) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        Ok(entries.remove(&(community.clone(), hold.clone())).is_some())
    }

    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut entries = self.lock()?;
        let Some(entry) = entries.get_mut(&(community.clone(), hold.clone())) else {
            return Ok(false);
        };
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_error = Some(cut(error));
        entry.claimed_until = None;
        entry.due_at = due_at;
        Ok(true)
    }

    async fn len(&self) -> Result<u64, RepoError> {
        Ok(u64::try_from(self.lock()?.len()).unwrap_or(u64::MAX))
    }
}
