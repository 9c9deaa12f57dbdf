//! Request idempotency records: the first answer to a request, kept so a
//! replay of the same request gets it again and a key reused for another
//! request is refused.
//!
//! The budget stores are idempotent per hold and compare no payloads; a
//! protocol that promises "same key, same body, same answer" (Cycles) needs
//! this record on top. It is written ahead of the store call and completed
//! after it: a record left pending by a crash sends the retry to the store
//! again, which is safe because the store call itself is idempotent.

use async_trait::async_trait;
use spendgate_domain::{CommunityId, Timestamp};

use crate::config::RepoError;

/// The longest operation name, in bytes.
pub const MAX_OPERATION_LEN: usize = 32;
/// The longest resource name or request key, in bytes.
pub const MAX_REQUEST_KEY_LEN: usize = 256;
/// The largest stored request fingerprint or response body, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Which request a record answers for: idempotency is per (tenant,
/// operation, resource, key), so one key may serve a create and, say, the
/// commit of the reservation it made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The tenant (community) that sent the request.
    pub tenant: CommunityId,
    /// The operation, such as `create` or `commit`.
    pub operation: String,
    /// The resource acted on (a reservation id), or empty for a create.
    pub resource: String,
    /// The caller's idempotency key.
    pub key: String,
}

impl RequestId {
    /// The rule every [`IdempotencyStore`] applies before anything else:
    /// `operation` is 1..=[`MAX_OPERATION_LEN`] bytes, `resource` at most
    /// and `key` 1..=[`MAX_REQUEST_KEY_LEN`] bytes, all printable ASCII.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] naming the field at fault.
    pub fn check(&self) -> Result<(), RepoError> {
        for (field, value, min, max) in [
            ("operation", self.operation.as_str(), 1, MAX_OPERATION_LEN),
            ("resource", self.resource.as_str(), 0, MAX_REQUEST_KEY_LEN),
            ("key", self.key.as_str(), 1, MAX_REQUEST_KEY_LEN),
        ] {
            if value.len() < min || value.len() > max {
                return Err(RepoError::InvalidInput(format!(
                    "request {field} is {} bytes long; {min}..={max} are allowed",
                    value.len()
                )));
            }
            if let Some(position) = value.bytes().position(|b| !b.is_ascii_graphic()) {
                return Err(RepoError::InvalidInput(format!(
                    "request {field} contains a forbidden character at byte {position}"
                )));
            }
        }
        Ok(())
    }
}

/// The rule every [`IdempotencyStore`] applies to a request fingerprint
/// before anything else: 1..=[`MAX_RECORD_BYTES`] bytes. An empty
/// fingerprint would make every body the same request.
///
/// # Errors
/// [`RepoError::InvalidInput`] saying how long it is.
pub fn check_fingerprint(fingerprint: &[u8]) -> Result<(), RepoError> {
    if fingerprint.is_empty() || fingerprint.len() > MAX_RECORD_BYTES {
        return Err(RepoError::InvalidInput(format!(
            "request fingerprint is {} bytes long; 1..={MAX_RECORD_BYTES} are allowed",
            fingerprint.len()
        )));
    }
    Ok(())
}

/// A first answer, as it went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as sent (JSON), at most [`MAX_RECORD_BYTES`].
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// The rule every [`IdempotencyStore`] applies before keeping an
    /// answer: an HTTP status (100..=599, so every backend stores it
    /// as it is) and a body of at most [`MAX_RECORD_BYTES`] (an empty body
    /// is an answer too).
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] naming the field at fault.
    pub fn check(&self) -> Result<(), RepoError> {
        if !(100..=599).contains(&self.status) {
            return Err(RepoError::InvalidInput(format!(
                "response status {} is not an HTTP status (100..=599)",
                self.status
            )));
        }
        if self.body.len() > MAX_RECORD_BYTES {
            return Err(RepoError::InvalidInput(format!(
                "response body is {} bytes long; at most {MAX_RECORD_BYTES} are allowed",
                self.body.len()
            )));
        }
        Ok(())
    }
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// There was no record; one is now pending for this request. Do the
    /// work, then [`IdempotencyStore::complete`] it.
    Started,
    /// A record for this same request is pending: an earlier attempt did
    /// not complete (it crashed, or is still running). Doing the work again
    /// is the caller's call; it is safe when the work is idempotent.
    Pending,
    /// The request was answered before; replay this answer.
    Completed(StoredResponse),
    /// The key was used before for a different request (another
    /// fingerprint); refuse this one.
    Mismatch,
}

/// Keeps one record per [`RequestId`].
///
/// A record holds the request's fingerprint (the caller's canonical form
/// of the body, compared byte for byte), a state (pending or completed with
/// a response) and an instant after which it may be purged.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Looks the request up and, when it has no live record (none, or one
    /// whose `keep_until` is `<= now`, which it replaces), creates a
    /// pending one kept until `keep_until`.
    ///
    /// Atomic per [`RequestId`]: of two overlapping claims of a new
    /// request, exactly one returns [`Claim::Started`]; the other sees
    /// [`Claim::Pending`] (same fingerprint) or [`Claim::Mismatch`].
    /// Implementations MUST compare fingerprints on every path: a
    /// different fingerprint is [`Claim::Mismatch`] whether the record is
    /// pending or completed.
    ///
    /// # Errors
    /// - [`RepoError::InvalidInput`]: the id fails [`RequestId::check`],
    ///   or the fingerprint fails [`check_fingerprint`] (empty or over
    ///   [`MAX_RECORD_BYTES`]); nothing was written.
    /// - [`RepoError::Unavailable`]: nothing is known; the caller MUST NOT
    ///   do the work (it cannot tell a replay from a new request).
    async fn claim(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        now: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Claim, RepoError>;

    /// Stores the answer of a pending record with this fingerprint.
    /// Idempotent: completing an already completed record keeps the first
    /// answer. Returns whether the record now holds `response` or an
    /// earlier answer (`false`: no such record, or another fingerprint).
    ///
    /// # Errors
    /// - [`RepoError::InvalidInput`]: as for `claim`, or the response
    ///   fails [`StoredResponse::check`] (a body over [`MAX_RECORD_BYTES`],
    ///   a status outside 100..=599); nothing was written.
    /// - [`RepoError::Unavailable`]: the record stays pending; a replay
    ///   does the (idempotent) work again.
    async fn complete(
        &self,
        id: &RequestId,
        fingerprint: &[u8],
        response: &StoredResponse,
    ) -> Result<bool, RepoError>;

    /// Deletes up to `limit` records whose `keep_until` is `<= now`,
    /// oldest first; returns how many it deleted.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`]: nothing or part was deleted; the next
    /// pass goes on.
    async fn purge(&self, now: Timestamp, limit: u32) -> Result<u64, RepoError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(operation: &str, resource: &str, key: &str) -> RequestId {
        RequestId {
            tenant: CommunityId::parse("t").unwrap(),
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            key: key.to_owned(),
        }
    }

    #[test]
    fn request_ids_are_checked_field_by_field() {
        assert!(id("create", "", "k").check().is_ok());
        let long_key = "k".repeat(MAX_REQUEST_KEY_LEN + 1);
        let long_op = "o".repeat(MAX_OPERATION_LEN + 1);
        for bad in [
            id("", "", "k"),
            id(&long_op, "", "k"),
            id("create", "", ""),
            id("create", "", &long_key),
            id("create", "a b", "k"),
            id("create", "", "k\n"),
            id("create", "", "é"),
        ] {
            assert!(
                matches!(bad.check(), Err(RepoError::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fingerprints_and_responses_are_bounded() {
        assert!(check_fingerprint(b"f").is_ok());
        assert!(check_fingerprint(&[0; MAX_RECORD_BYTES]).is_ok());
        assert!(check_fingerprint(b"").is_err());
        assert!(check_fingerprint(&[0; MAX_RECORD_BYTES + 1]).is_err());
        let response = |status, len| StoredResponse {
            status,
            body: vec![b'x'; len],
        };
        for ok in [response(100, 0), response(599, MAX_RECORD_BYTES)] {
            assert!(ok.check().is_ok(), "{}", ok.status);
        }
        for bad in [
            response(99, 0),
            response(600, 0),
            response(u16::MAX, 0),
            response(200, MAX_RECORD_BYTES + 1),
        ] {
            assert!(
                matches!(bad.check(), Err(RepoError::InvalidInput(_))),
                "{} {}",
                bad.status,
                bad.body.len()
            );
        }
    }
}
