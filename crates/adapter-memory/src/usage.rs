//! The usage log kept in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use spendgate_domain::{CommunityId, HoldRef, IdempotencyKey, Micros, Period, Timestamp, UserId};
use spendgate_ports::{RepoError, UsageLog, UsageRecord};

type RecordKey = (CommunityId, UserId, IdempotencyKey, Timestamp);

/// A [`UsageLog`] over a map keyed by (community, user, key,
/// hold_created_at), so appends are
/// idempotent exactly as the database's unique constraint makes them.
#[derive(Debug, Default)]
pub struct MemoryUsageLog {
    records: Mutex<BTreeMap<RecordKey, UsageRecord>>,
}

impl MemoryUsageLog {
    /// Every logged record, in key order.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] if the lock was poisoned.
    pub fn records(&self) -> Result<Vec<UsageRecord>, RepoError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        Ok(records.values().cloned().collect())
    }
}

fn poisoned() -> RepoError {
    RepoError::Unavailable("memory usage log lock poisoned".into())
}

#[async_trait]
impl UsageLog for MemoryUsageLog {
    async fn append(&self, batch: &[UsageRecord]) -> Result<u64, RepoError> {
        let mut records = self.records.lock().map_err(|_| poisoned())?;
        let mut added = 0;
        for record in batch {
            let key = (
                record.community.clone(),
                record.user.clone(),
                record.key.clone(),
                record.hold_created_at,
            );
            if let std::collections::btree_map::Entry::Vacant(slot) = records.entry(key) {
                slot.insert(record.clone());
                added += 1;
            }
        }
        Ok(added)
    }

    async fn logged(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        let uses = (
            community.clone(),
            hold.user.clone(),
            hold.key.clone(),
            Timestamp::EPOCH,
        )
            ..=(
                community.clone(),
                hold.user.clone(),
                hold.key.clone(),
                Timestamp::MAX,
            );
        Ok(records
            .range(uses)
            .map(|(_, record)| record)
            .filter(|record| record.created_at >= since)
            .max_by_key(|record| record.created_at)
            .cloned())
    }

    async fn logged_use(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        hold_created_at: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        let row = |created: Timestamp| {
            records.get(&(
                community.clone(),
                hold.user.clone(),
                hold.key.clone(),
                created,
            ))
        };
        let legacy = row(Timestamp::EPOCH).filter(|r| r.created_at >= hold_created_at);
        Ok(row(hold_created_at).or(legacy).cloned())
    }

    async fn total_cost(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<Micros, RepoError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        records
            .values()
            .filter(|r| &r.community == community && r.period == period)
            .try_fold(Micros::ZERO, |sum, r| sum.checked_add(r.cost))
            .map_err(|e| RepoError::BadData {
                community: community.to_string(),
                field: "cost_micros".into(),
                reason: e.to_string(),
            })
    }

    async fn committed_by_user(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BTreeMap<UserId, Micros>, RepoError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        let mut sums: BTreeMap<UserId, Micros> = BTreeMap::new();
        for record in records
            .values()
            .filter(|r| &r.community == community && r.period == period)
        {
            let sum = sums.entry(record.user.clone()).or_default();
            *sum = sum
                .checked_add(record.cost)
                .map_err(|e| RepoError::BadData {
                    community: community.to_string(),
                    field: "cost_micros".into(),
                    reason: e.to_string(),
                })?;
        }
        Ok(sums)
    }
}
