//! [`CommunityGate`]: how many writes of one community may hold or wait
//! for a pooled connection at once, so that waiters on one hot (or
//! locked) community never take every connection of the pool and the
//! other communities keep being served.
//!
//! Writes of one community run one at a time under its row lock anyway:
//! a few connections per community keep its queue busy, more only wait on
//! the lock. A write takes its community's pass before it asks the pool
//! for a connection and keeps it until its statement or transaction
//! ends; a write that gets no pass within the pool's acquire timeout fails
//! with [`StoreError::Unavailable`], as one that waited that long for a
//! connection would (`reserve` denies). A burst on one community thus
//! waits as long as it would have waited for the pool, while the rest of
//! the pool stays free for the other communities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spendgate_domain::CommunityId;
use spendgate_ports::StoreError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One semaphore per community with writes in flight; an entry goes when
/// its last pass or waiter does, so the map holds at most as many
/// communities as there are writes in flight.
#[derive(Debug)]
pub(super) struct CommunityGate {
    per_community: usize,
    wait: Duration,
    entries: Mutex<HashMap<CommunityId, Arc<Semaphore>>>,
}

/// A community's pass: one of its `per_community` places, released (and
/// the community's entry dropped when idle) on drop.
#[derive(Debug)]
pub(super) struct Pass {
    gate: Arc<CommunityGate>,
    community: CommunityId,
    permit: Option<OwnedSemaphorePermit>,
}

impl CommunityGate {
    /// A gate letting `per_community` writes of one community (at least
    /// one) hold or wait for a connection at once, the others waiting up to
    /// `wait` for a place.
    pub(super) fn new(per_community: usize, wait: Duration) -> Self {
        Self {
            per_community: per_community.max(1),
            wait,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How many writes of one community may hold or wait for a connection.
    pub(super) fn per_community(&self) -> usize {
        self.per_community
    }

    /// The longest wait for a place.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// Waits for a pass of `community`, at most the gate's wait.
    pub(super) async fn enter(
        self: &Arc<Self>,
        community: &CommunityId,
    ) -> Result<Pass, StoreError> {
        let wait = self.wait;
        let semaphore = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                entries
                    .entry(community.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_community))),
            )
        };
        let acquired = tokio::time::timeout(wait, Arc::clone(&semaphore).acquire_owned()).await;
        let refused = |why: &str| {
            StoreError::Unavailable(format!(
                "{} writes of community {community} already hold or wait for a connection; {why}",
                self.per_community
            ))
        };
        let permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                self.forget_if_idle(community, semaphore);
                return Err(refused("its gate is closed"));
            }
            Err(_elapsed) => {
                self.forget_if_idle(community, semaphore);
                return Err(refused(&format!("no place within {wait:?}")));
            }
        };
        drop(semaphore);
        Ok(Pass {
            gate: Arc::clone(self),
            community: community.clone(),
            permit: Some(permit),
        })
    }

    /// Drops `semaphore` (a clone of the community's entry) and the entry
    /// itself when nothing else holds it: every clone is taken under the
    /// map's lock, so none can appear while it is held.
    fn forget_if_idle(&self, community: &CommunityId, semaphore: Arc<Semaphore>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        drop(semaphore);
        if entries
            .get(community)
            .is_some_and(|entry| Arc::strong_count(entry) == 1)
        {
            entries.remove(community);
        }
    }

    #[cfg(test)]
    fn communities(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let semaphore = Arc::clone(permit.semaphore());
            drop(permit);
            self.gate.forget_if_idle(&self.community, semaphore);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn community(name: &str) -> CommunityId {
        CommunityId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn a_full_community_refuses_after_the_wait_while_others_pass() {
        let gate = Arc::new(CommunityGate::new(2, Duration::from_millis(10)));
        let hot = community("hot");
        let _first = gate.enter(&hot).await.unwrap();
        let _second = gate.enter(&hot).await.unwrap();
        let third = gate.enter(&hot).await;
        assert!(
            matches!(third, Err(StoreError::Unavailable(_))),
            "{third:?}"
        );
        let other = gate.enter(&community("other")).await;
        assert!(other.is_ok());
    }

    #[tokio::test]
    async fn a_released_place_lets_the_next_waiter_in() {
        let gate = Arc::new(CommunityGate::new(1, Duration::from_secs(60)));
        let hot = community("hot");
        let first = gate.enter(&hot).await.unwrap();
        let waiter = {
            let (gate, hot) = (Arc::clone(&gate), hot.clone());
            tokio::spawn(async move { gate.enter(&hot).await.is_ok() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn idle_communities_leave_the_map() {
        let gate = Arc::new(CommunityGate::new(1, Duration::from_millis(10)));
        let passes: Vec<Pass> = passes_of(&gate, 3).await;
        assert_eq!(gate.communities(), 3);
        drop(passes);
        assert_eq!(gate.communities(), 0);
        let hot = community("hot");
        let held = gate.enter(&hot).await.unwrap();
        let refused = gate.enter(&hot).await;
        assert!(refused.is_err());
        assert_eq!(gate.communities(), 1, "the holder keeps its entry");
        drop(held);
        assert_eq!(gate.communities(), 0);
    }

    async fn passes_of(gate: &Arc<CommunityGate>, n: usize) -> Vec<Pass> {
        let mut passes = Vec::new();
        for i in 0..n {
            let c = community(&format!("c{i}"));
            passes.push(gate.enter(&c).await.unwrap());
        }
        passes
    }
}
