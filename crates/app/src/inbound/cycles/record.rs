//! The protocol's idempotency, on the [`IdempotencyStore`] port, and the
//! per-reservation record the store's holds do not keep.
//!
//! Every write (and `decide`) is claimed per (tenant, operation,
//! reservation, key) with the SHA-256 of its canonical JSON body before
//! anything is done: a completed record replays its first answer byte for
//! byte, a different body is `IDEMPOTENCY_MISMATCH`, a pending one (an
//! attempt that crashed or is still running) does the work again, which is
//! safe because every store call is idempotent per hold. The answer is
//! completed after the work; if that write fails the record stays pending
//! and a replay redoes the (idempotent) work.
//!
//! The reservation record keeps what a Cycles reservation has and a hold
//! has not (subject, action, overage policy, grace period, the create's
//! key). It is written once, before the hold, under the operation
//! `reservation` with a fixed fingerprint, and read back by claiming it
//! again: a completed claim returns it.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{Claim, RepoError, RequestId, StoredResponse};

use super::CyclesState;
use super::error::{CyclesError, Reply};
use super::wire::{Action, OveragePolicy, Subject};

/// The fingerprint of every reservation record.
const RECORD_FINGERPRINT: &[u8] = b"spendgate-cycles-reservation-record-v1";

/// A claimed request: do the work, then [`Claimed::finish`].
pub(super) struct Claimed {
    id: RequestId,
    fingerprint: Vec<u8>,
    /// An earlier attempt was claimed but never completed: the store may
    /// already have applied it.
    pub(super) retried: bool,
}

/// What a claim found.
pub(super) enum Begun {
    /// Do the work.
    Fresh(Claimed),
    /// The first answer, to send again.
    Replay(Reply),
}

/// `value` serialised with object keys sorted at every level, so two
/// bodies that differ only in key order or spacing are the same request.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (n, (key, item)) in entries.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The fingerprint of a request body.
pub(super) fn fingerprint(body: &Value) -> Vec<u8> {
    let mut text = String::new();
    canonical(body, &mut text);
    Sha256::digest(text.as_bytes()).to_vec()
}

fn repo_error(error: RepoError) -> CyclesError {
    match error {
        RepoError::InvalidInput(message) => CyclesError::InvalidRequest(message),
        other => CyclesError::Internal(format!(
            "idempotency records unavailable; nothing was done, retry with the same key: {other}"
        )),
    }
}

impl CyclesState {
    fn keep_until(&self, now: Timestamp) -> Timestamp {
        now.plus(self.keep_records).unwrap_or(Timestamp::MAX)
    }

    /// Claims `operation` on `resource` with `key` for `body`.
    pub(super) async fn begin(
        &self,
        tenant: &CommunityId,
        operation: &str,
        resource: &str,
        key: &str,
        body: &Value,
    ) -> Result<Begun, CyclesError> {
        let id = RequestId {
            tenant: tenant.clone(),
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            key: key.to_owned(),
        };
        let fingerprint = fingerprint(body);
        let now = self.now();
        let claim = self
            .records()
            .claim(&id, &fingerprint, now, self.keep_until(now))
            .await
            .map_err(repo_error)?;
        let retried = match claim {
            Claim::Started => false,
            Claim::Pending => true,
            Claim::Completed(stored) => {
                let status = StatusCode::from_u16(stored.status)
                    .map_err(|e| CyclesError::Internal(format!("stored answer unreadable: {e}")))?;
                return Ok(Begun::Replay(Reply {
                    status,
                    body: stored.body,
                }));
            }
            Claim::Mismatch => return Err(CyclesError::IdempotencyMismatch),
        };
        Ok(Begun::Fresh(Claimed {
            id,
            fingerprint,
            retried,
        }))
    }
}

impl Claimed {
    /// Keeps `reply` as the request's answer and returns it. A failed write
    /// is logged, not returned: the work is done, and a replay redoes it.
    pub(super) async fn finish(self, state: &CyclesState, reply: Reply) -> Reply {
        let stored = StoredResponse {
            status: reply.status.as_u16(),
            body: reply.body.clone(),
        };
        if let Err(error) = state
            .records()
            .complete(&self.id, &self.fingerprint, &stored)
            .await
        {
            tracing::warn!(%error, operation = %self.id.operation, "idempotency record not completed; a replay redoes the work");
        }
        reply
    }
}

/// What a Cycles reservation has and a hold has not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReservationRecord {
    /// The create's idempotency key.
    pub(super) idempotency_key: String,
    /// The subject as sent.
    pub(super) subject: Subject,
    /// The action as sent.
    pub(super) action: Action,
    /// What commit does with an actual above the estimate.
    pub(super) overage_policy: OveragePolicy,
    /// Milliseconds after the expiry during which commit and release are
    /// still accepted (part of the hold's lifetime in the store).
    pub(super) grace_period_ms: i64,
    /// When the create was made, in ms.
    pub(super) created_at_ms: i64,
    /// The requested TTL, in ms.
    pub(super) ttl_ms: i64,
    /// The estimate held, in micro-USD.
    pub(super) estimate_micros: i64,
}

impl CyclesState {
    fn record_id(tenant: &CommunityId, reservation: &str) -> RequestId {
        RequestId {
            tenant: tenant.clone(),
            operation: "reservation".to_owned(),
            resource: reservation.to_owned(),
            key: "record".to_owned(),
        }
    }

    /// Writes the record of `reservation` (once; an existing one stays).
    pub(super) async fn save_record(
        &self,
        tenant: &CommunityId,
        reservation: &str,
        record: &ReservationRecord,
    ) -> Result<(), CyclesError> {
        let id = Self::record_id(tenant, reservation);
        let now = self.now();
        let claim = self
            .records()
            .claim(&id, RECORD_FINGERPRINT, now, self.keep_until(now))
            .await
            .map_err(repo_error)?;
        if matches!(claim, Claim::Completed(_)) {
            return Ok(());
        }
        let body = serde_json::to_vec(record)
            .map_err(|e| CyclesError::Internal(format!("record not serialisable: {e}")))?;
        let stored = StoredResponse { status: 200, body };
        self.records()
            .complete(&id, RECORD_FINGERPRINT, &stored)
            .await
            .map_err(repo_error)?;
        Ok(())
    }

    /// The record of `reservation`, `None` when it was never written or
    /// is no longer kept.
    pub(super) async fn load_record(
        &self,
        tenant: &CommunityId,
        reservation: &str,
    ) -> Result<Option<ReservationRecord>, CyclesError> {
        let id = Self::record_id(tenant, reservation);
        let now = self.now();
        let claim = self
            .records()
            .claim(&id, RECORD_FINGERPRINT, now, self.keep_until(now))
            .await
            .map_err(repo_error)?;
        Ok(match claim {
            Claim::Completed(stored) => serde_json::from_slice(&stored.body).ok(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_spacing_do_not_change_the_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
