//! Request idempotency records kept in process memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use spendgate_domain::Timestamp;
use spendgate_ports::{
    Claim, IdempotencyStore, RepoError, RequestId, StoredResponse, check_fingerprint,
};

/// One request's record: its fingerprint, its answer once completed, and
/// when it may go.
#[derive(Debug)]
struct Record {
    fingerprint: Vec<u8>,
    response: Option<StoredResponse>,
    keep_until: Timestamp,
}

/// An [`IdempotencyStore`] in one process: a mutex over id → record.
///
/// Every call checks its input first ([`RequestId::check`],
/// [`check_fingerprint`], [`StoredResponse::check`]) and then does all of
/// its work under the one lock, so overlapping claims of a new request
/// see exactly one [`Claim::Started`]. Expiry is judged by the caller's
/// `now` only. `purge` scans every record (it sorts the expired ones to
/// delete the oldest first): fine for the embedded default and tests, which
/// keep few records; nothing survives a restart and replicas share
/// nothing.
#[derive(Default)]
pub struct MemoryIdempotency {
    records: Mutex<HashMap<RequestId, Record>>,
}

impl std::fmt::Debug for MemoryIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryIdempotency").finish_non_exhaustive()
    }
}

impl MemoryIdempotency {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<RequestId, Record>>, RepoError> {
        self.records
            .lock()
            .map_err(|_| RepoError::Unavailable("memory idempotency lock poisoned".into()))
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        let mut records = self.lock()?;
        if let Some(record) = records.get(id).filter(|r| r.keep_until > now) {
            return Ok(if record.fingerprint != fingerprint {
                Claim::Mismatch
            } else {
                match &record.response {
                    Some(response) => Claim::Completed(response.clone()),
                    None => Claim::Pending,
                }
            });
        }
        records.insert(
            id.clone(),
            Record {
                fingerprint: fingerprint.to_vec(),
                response: None,
                keep_until,
            },
        );
        Ok(Claim::Started)
    }

    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError> {
        id.check()?;
        check_fingerprint(fingerprint)?;
        response.check()?;
        let mut records = self.lock()?;
        match records.get_mut(id) {
            Some(record) if record.fingerprint == fingerprint => {
                record.response.get_or_insert_with(|| response.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, RepoError> {
        let mut records = self.lock()?;
        let mut expired: Vec<(Timestamp, RequestId)> = records
            .iter()
            .filter(|(_, r)| r.keep_until <= now)
            .map(|(id, r)| (r.keep_until, id.clone()))
            .collect();
        expired.sort_by_key(|(keep_until, _)| *keep_until);
        let mut purged = 0_u64;
        for (_, id) in expired
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
        {
            records.remove(&id);
            purged += 1;
        }
        Ok(purged)
    }
}
