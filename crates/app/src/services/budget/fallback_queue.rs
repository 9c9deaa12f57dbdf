//! The finalize queue the service writes to: the deployment's durable
//! queue, with process memory as a fallback while it cannot answer.
//!
//! When the database holding the queue is down, a settlement that reached
//! the store must still reach the usage log later. It is kept in memory
//! and replayed with the rest; it survives a database outage, not a
//! process crash during one (the drift monitor reports such a loss). The
//! first replay pass that finds the durable queue answering again moves
//! every entry kept in memory there, dead letters included, so a crash
//! after the outage loses nothing and an operator sees every dead letter.
//!
//! The memory is bounded ([`super::BudgetSettings::fallback_queue_capacity`]
//! entries): past it an enqueue is refused with [`RepoError::Full`], as if
//! the queue were down, so a settlement the store cannot take either is
//! [`super::FinalizeError::NotKept`] (the caller must retry it) instead of
//! growing the process without limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use spendgate_adapter_memory::MemoryWorkQueue;
use spendgate_domain::{CommunityId, HoldRef, Timestamp, Ttl};
use spendgate_ports::{
    Claimed, DeadLetter, FinalizeQueue, PendingSettlement, QueueItem, RepoError, WorkQueue,
};

use crate::services::telemetry::{self, DEGRADED};

/// A queued settlement's identity: its call and which use of the key.
type Call = (CommunityId, HoldRef, Option<Timestamp>);

/// A [`WorkQueue`] over a durable queue, falling back to memory.
pub(crate) struct FallbackQueue {
    durable: Arc<FinalizeQueue>,
    memory: MemoryWorkQueue<PendingSettlement>,
}

impl FallbackQueue {
    /// `durable`, with at most `capacity` settlements kept in memory while
    /// it cannot answer.
    pub(crate) fn new(durable: Arc<FinalizeQueue>, capacity: usize) -> Self {
        Self {
            durable,
            memory: MemoryWorkQueue::bounded(capacity),
        }
    }

    /// Moves what memory holds to the durable queue, due at `now`; stops
    /// at the first durable write that fails (the rest stays in memory).
    /// A call the durable queue already holds keeps the durable entry.
    async fn flush(&self, now: Timestamp) {
        let Ok(items) = self.memory.items() else {
            return;
        };
        if items.is_empty() {
            return;
        }
        let dead: BTreeMap<Call, DeadLetter<PendingSettlement>> = self
            .memory
            .dead_letters(u32::MAX)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                (
                    (
                        d.item.community.clone(),
                        d.item.hold_ref(),
                        d.item.instance(),
                    ),
                    d,
                )
            })
            .collect();
        for entry in items {
            let community = entry.item.community.clone();
            let hold = entry.item.hold_ref();
            let instance = entry.item.instance();
            let Ok(moved) = self.durable.enqueue(&entry.item, now).await else {
                return;
            };
            if moved
                && let Some(letter) = dead.get(&(community.clone(), hold.clone(), instance))
                && self
                    .durable
                    .dead_letter(&community, &hold, instance, &letter.error, letter.dead_at)
                    .await
                    .is_err()
            {
                return;
            }
            if let Err(error) = self.memory.complete(&community, &hold, instance).await {
                tracing::warn!(%error, "settlement moved to the durable queue but still in memory");
            }
        }
    }
}

#[async_trait]
impl WorkQueue<PendingSettlement> for FallbackQueue {
    async fn enqueue(
        &self,
        item: &PendingSettlement,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        match self.durable.enqueue(item, due_at).await {
            Ok(queued) => Ok(queued),
            Err(error) => {
                tracing::warn!(%error, "finalize queue unavailable; keeping the settlement in memory");
                telemetry::count(DEGRADED, "what", "finalize_queue_in_memory");
                self.memory.enqueue(item, due_at).await
            }
        }
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Ttl,
    ) -> Result<Vec<Claimed<PendingSettlement>>, RepoError> {
        self.flush(now).await;
        let mut claimed = self.memory.claim_due(now, limit, lease).await?;
        let left = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
        if left == 0 {
            return Ok(claimed);
        }
        match self.durable.claim_due(now, left, lease).await {
            Ok(durable) => {
                claimed.extend(durable);
                Ok(claimed)
            }
            Err(_) if !claimed.is_empty() => Ok(claimed),
            Err(error) => Err(error),
        }
    }

    async fn complete(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
    ) -> Result<bool, RepoError> {
        let in_memory = self.memory.complete(community, hold, instance).await?;
        match self.durable.complete(community, hold, instance).await {
            Ok(durable) => Ok(in_memory || durable),
            Err(_) if in_memory => Ok(true),
            Err(error) => Err(error),
        }
    }

    async fn retry_at(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        due_at: Timestamp,
    ) -> Result<bool, RepoError> {
        if self
            .memory
            .retry_at(community, hold, instance, error, due_at)
            .await?
        {
            return Ok(true);
        }
        self.durable
            .retry_at(community, hold, instance, error, due_at)
            .await
    }

    async fn dead_letter(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        instance: Option<Timestamp>,
        error: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        if self
            .memory
            .dead_letter(community, hold, instance, error, at)
            .await?
        {
            return Ok(true);
        }
        self.durable
            .dead_letter(community, hold, instance, error, at)
            .await
    }

    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<Vec<DeadLetter<PendingSettlement>>, RepoError> {
        let mut dead = self.memory.dead_letters(limit).await?;
        let left = limit.saturating_sub(u32::try_from(dead.len()).unwrap_or(u32::MAX));
        if left > 0 {
            dead.extend(self.durable.dead_letters(left).await?);
        }
        Ok(dead)
    }

    async fn dead_letter_count(&self) -> Result<u64, RepoError> {
        let in_memory = self.memory.dead_letter_count().await?;
        Ok(in_memory.saturating_add(self.durable.dead_letter_count().await?))
    }

    async fn len(&self) -> Result<u64, RepoError> {
        let in_memory = self.memory.len().await?;
        Ok(in_memory.saturating_add(self.durable.len().await?))
    }

    async fn pending(&self, community: &CommunityId) -> Result<u64, RepoError> {
        let in_memory = self.memory.pending(community).await?;
        Ok(in_memory.saturating_add(self.durable.pending(community).await?))
    }
}
