//! The named scenarios of the `IdempotencyStore` port: one behaviour each.
//!
//! Every scenario gets a fresh, empty store (the factory's promise), so a
//! purge of everything counts exactly the records the scenario wrote; that
//! is how "nothing was written" is checked. Times are milliseconds around
//! mid-November 2026; records are kept a day unless a scenario says
//! otherwise.

use std::sync::Arc;

use spendgate_domain::{CommunityId, Timestamp};
use spendgate_ports::{
    Claim, IdempotencyStore, MAX_OPERATION_LEN, MAX_RECORD_BYTES, MAX_REQUEST_KEY_LEN, RepoError,
    RequestId, StoredResponse,
};

use crate::fixture::{at, mid_november};

type Store = Arc<dyn IdempotencyStore>;

/// How long scenarios keep a record: a day.
pub const KEEP_MS: i64 = 86_400_000;

/// The instant scenarios start at.
pub fn t0() -> Timestamp {
    mid_november(0)
}

/// `t0` plus [`KEEP_MS`]: when a record claimed at `t0` may go.
pub fn kept() -> Timestamp {
    at(t0(), KEEP_MS)
}

/// The request (`tenant`, `operation`, `resource`, `key`).
pub fn request(tenant: &str, operation: &str, resource: &str, key: &str) -> RequestId {
    RequestId {
        tenant: CommunityId::parse(tenant).unwrap(),
        operation: operation.to_owned(),
        resource: resource.to_owned(),
        key: key.to_owned(),
    }
}

/// A create of tenant `acme` with idempotency key `key`.
pub fn create(key: &str) -> RequestId {
    request("acme", "create", "", key)
}

/// An answer.
pub fn answer(status: u16, body: &[u8]) -> StoredResponse {
    StoredResponse {
        status,
        body: body.to_vec(),
    }
}

async fn claim(store: &Store, id: &RequestId, fingerprint: &[u8], now: Timestamp) -> Claim {
    store
        .claim(id, fingerprint, now, at(now, KEEP_MS))
        .await
        .unwrap()
}

/// Deletes every record; returns how many there were.
async fn purge_all(store: &Store) -> u64 {
    store.purge(Timestamp::MAX, u32::MAX).await.unwrap()
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, RepoError>, what: &str) {
    assert!(
        matches!(result, Err(RepoError::InvalidInput(_))),
        "{what}: {result:?}"
    );
}

/// The first claim of a request starts it.
pub async fn claim_of_a_new_request_starts(store: Store) {
    assert_eq!(
        claim(&store, &create("k1"), b"body", t0()).await,
        Claim::Started
    );
    assert_eq!(purge_all(&store).await, 1);
}

/// A replay while the first attempt has not completed is pending, again
/// and again, up to the last millisecond the record is kept.
pub async fn same_fingerprint_while_pending_is_pending(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"body", t0()).await;
    for now in [t0(), at(t0(), 1), at(t0(), KEEP_MS - 1)] {
        assert_eq!(
            store.claim(&id, b"body", now, at(now, KEEP_MS)).await,
            Ok(Claim::Pending),
            "at {now:?}"
        );
    }
}

/// A replay after completion gets the stored answer, byte for byte
/// (non-UTF-8 bytes included), and an empty body stays an empty body.
pub async fn completed_request_replays_the_stored_bytes(store: Store) {
    let bytes: Vec<u8> = (0..=255).collect();
    let (full, empty) = (create("full"), create("empty"));
    for (id, body) in [(&full, bytes.as_slice()), (&empty, b"".as_slice())] {
        claim(&store, id, &bytes, t0()).await;
        assert_eq!(
            store.complete(id, &bytes, &answer(201, body)).await,
            Ok(true)
        );
        assert_eq!(
            claim(&store, id, &bytes, at(t0(), 5)).await,
            Claim::Completed(answer(201, body))
        );
    }
}

/// Another fingerprint under a pending record's key is a mismatch, and
/// leaves the record pending for its own request.
pub async fn other_fingerprint_while_pending_is_a_mismatch(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"first", t0()).await;
    assert_eq!(claim(&store, &id, b"second", t0()).await, Claim::Mismatch);
    assert_eq!(claim(&store, &id, b"firs", t0()).await, Claim::Mismatch);
    assert_eq!(claim(&store, &id, b"first", t0()).await, Claim::Pending);
}

/// Another fingerprint under a completed record's key is a mismatch, never
/// the stored answer.
pub async fn other_fingerprint_once_completed_is_a_mismatch(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"first", t0()).await;
    store
        .complete(&id, b"first", &answer(200, b"{}"))
        .await
        .unwrap();
    assert_eq!(claim(&store, &id, b"second", t0()).await, Claim::Mismatch);
    assert_eq!(
        claim(&store, &id, b"first", t0()).await,
        Claim::Completed(answer(200, b"{}"))
    );
}

/// Completing twice is fine and keeps the first answer.
pub async fn complete_is_idempotent_and_keeps_the_first_answer(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"body", t0()).await;
    let first = answer(200, b"{\"id\":1}");
    assert_eq!(store.complete(&id, b"body", &first).await, Ok(true));
    assert_eq!(store.complete(&id, b"body", &first).await, Ok(true));
    assert_eq!(
        store.complete(&id, b"body", &answer(500, b"late")).await,
        Ok(true)
    );
    assert_eq!(
        claim(&store, &id, b"body", t0()).await,
        Claim::Completed(first)
    );
}

/// Completing with another fingerprint is refused and stores nothing: the
/// record stays pending until its own request completes it.
pub async fn complete_with_another_fingerprint_is_refused(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"body", t0()).await;
    assert_eq!(
        store.complete(&id, b"other", &answer(200, b"x")).await,
        Ok(false)
    );
    assert_eq!(claim(&store, &id, b"body", t0()).await, Claim::Pending);
    assert_eq!(
        store.complete(&id, b"body", &answer(200, b"y")).await,
        Ok(true)
    );
    assert_eq!(
        claim(&store, &id, b"body", t0()).await,
        Claim::Completed(answer(200, b"y"))
    );
}

/// Completing a request that was never claimed is refused and creates no
/// record.
pub async fn complete_of_an_unknown_request_is_refused(store: Store) {
    assert_eq!(
        store
            .complete(&create("never"), b"body", &answer(200, b"x"))
            .await,
        Ok(false)
    );
    assert_eq!(purge_all(&store).await, 0);
}

/// From its `keep_until` on, a record counts as absent: a claim (with any
/// fingerprint) replaces it, pending or completed, and starts anew.
pub async fn expired_record_is_replaced_by_a_new_claim(store: Store) {
    let (pending, done) = (create("pending"), create("done"));
    claim(&store, &pending, b"old", t0()).await;
    claim(&store, &done, b"old", t0()).await;
    store
        .complete(&done, b"old", &answer(200, b"old answer"))
        .await
        .unwrap();
    let later = kept();
    for id in [&pending, &done] {
        assert_eq!(
            claim(&store, id, b"new", at(later, -1)).await,
            Claim::Mismatch,
            "{} is kept until its last millisecond",
            id.key
        );
        assert_eq!(claim(&store, id, b"new", later).await, Claim::Started);
        // The new record is the request now, kept from the new claim on.
        assert_eq!(claim(&store, id, b"new", later).await, Claim::Pending);
        assert_eq!(claim(&store, id, b"old", later).await, Claim::Mismatch);
    }
    // The old request cannot complete the new record either.
    assert_eq!(
        store.complete(&done, b"old", &answer(200, b"x")).await,
        Ok(false)
    );
    assert_eq!(purge_all(&store).await, 2);
}

/// Purge deletes exactly the records with `keep_until <= now`.
pub async fn purge_removes_only_records_kept_until_now_or_before(store: Store) {
    for (key, keep_ms) in [("a", 10), ("b", 20), ("c", 30)] {
        store
            .claim(&create(key), b"f", t0(), at(t0(), keep_ms))
            .await
            .unwrap();
    }
    assert_eq!(store.purge(at(t0(), 9), 100).await, Ok(0));
    assert_eq!(store.purge(at(t0(), 20), 100).await, Ok(2));
    assert_eq!(store.purge(at(t0(), 20), 100).await, Ok(0));
    // The kept record is untouched.
    assert_eq!(
        claim(&store, &create("c"), b"f", t0()).await,
        Claim::Pending
    );
    assert_eq!(store.purge(at(t0(), 30), 100).await, Ok(1));
}

/// Purge deletes at most `limit` records a call, the oldest first.
pub async fn purge_respects_its_limit_oldest_first(store: Store) {
    for n in 0..5_i64 {
        store
            .claim(&create(&format!("k{n}")), b"f", t0(), at(t0(), 10 + n))
            .await
            .unwrap();
    }
    let now = at(t0(), 100);
    assert_eq!(store.purge(now, 0).await, Ok(0));
    assert_eq!(store.purge(now, 2).await, Ok(2));
    // k0 and k1 went: they are new again; k2 is still there.
    assert_eq!(
        claim(&store, &create("k2"), b"g", t0()).await,
        Claim::Mismatch
    );
    assert_eq!(
        claim(&store, &create("k1"), b"g", t0()).await,
        Claim::Started
    );
    assert_eq!(
        claim(&store, &create("k0"), b"g", t0()).await,
        Claim::Started
    );
    assert_eq!(store.purge(now, 2).await, Ok(2));
    assert_eq!(store.purge(now, 2).await, Ok(1));
    assert_eq!(store.purge(now, 2).await, Ok(0));
    assert_eq!(purge_all(&store).await, 2);
}

/// Tenant, operation, resource and key each tell records apart.
pub async fn records_are_separate_per_tenant_operation_resource_and_key(store: Store) {
    let base = request("acme", "commit", "r1", "k");
    let others = [
        request("globex", "commit", "r1", "k"),
        request("acme", "release", "r1", "k"),
        request("acme", "commit", "r2", "k"),
        request("acme", "commit", "", "k"),
        request("acme", "commit", "r1", "k2"),
    ];
    claim(&store, &base, b"base", t0()).await;
    store
        .complete(&base, b"base", &answer(200, b"base"))
        .await
        .unwrap();
    for other in &others {
        assert_eq!(
            claim(&store, other, b"other", t0()).await,
            Claim::Started,
            "{other:?}"
        );
        assert_eq!(
            store.complete(other, b"base", &answer(200, b"x")).await,
            Ok(false),
            "{other:?}"
        );
    }
    assert_eq!(
        claim(&store, &base, b"base", t0()).await,
        Claim::Completed(answer(200, b"base"))
    );
    assert_eq!(purge_all(&store).await, 6);
}

/// Ids failing [`RequestId::check`] are refused by every call, and nothing
/// is written.
pub async fn invalid_request_ids_are_invalid_input_and_write_nothing(store: Store) {
    let long_operation = "o".repeat(MAX_OPERATION_LEN + 1);
    let long_key = "k".repeat(MAX_REQUEST_KEY_LEN + 1);
    let bad = [
        request("acme", "", "", "k"),
        request("acme", &long_operation, "", "k"),
        request("acme", "create", "", ""),
        request("acme", "create", "", &long_key),
        request("acme", "create", &long_key, "k"),
        request("acme", "create", "r 1", "k"),
        request("acme", "create", "", "k\u{0}"),
        request("acme", "create", "", "clé"),
    ];
    for id in &bad {
        assert_invalid(
            store.claim(id, b"f", t0(), kept()).await,
            &format!("claim {id:?}"),
        );
        assert_invalid(
            store.complete(id, b"f", &answer(200, b"x")).await,
            &format!("complete {id:?}"),
        );
    }
    assert_eq!(purge_all(&store).await, 0);
    // The longest allowed fields are fine.
    let max_operation = "o".repeat(MAX_OPERATION_LEN);
    let max_key = "k".repeat(MAX_REQUEST_KEY_LEN);
    let longest = request("acme", &max_operation, &max_key, &max_key);
    assert_eq!(claim(&store, &longest, b"f", t0()).await, Claim::Started);
    assert_eq!(claim(&store, &longest, b"f", t0()).await, Claim::Pending);
}

/// An empty or oversized fingerprint is refused, and nothing is written; a
/// fingerprint of exactly [`MAX_RECORD_BYTES`] is kept and compared whole.
pub async fn empty_or_oversized_fingerprints_are_invalid_input_and_write_nothing(store: Store) {
    let id = create("k1");
    let oversized = vec![7_u8; MAX_RECORD_BYTES + 1];
    for fingerprint in [&[][..], oversized.as_slice()] {
        assert_invalid(store.claim(&id, fingerprint, t0(), kept()).await, "claim");
        assert_invalid(
            store.complete(&id, fingerprint, &answer(200, b"x")).await,
            "complete",
        );
    }
    assert_eq!(purge_all(&store).await, 0);
    let largest = vec![7_u8; MAX_RECORD_BYTES];
    let mut last_differs = largest.clone();
    if let Some(last) = last_differs.last_mut() {
        *last = 8;
    }
    assert_eq!(claim(&store, &id, &largest, t0()).await, Claim::Started);
    assert_eq!(claim(&store, &id, &largest, t0()).await, Claim::Pending);
    assert_eq!(
        claim(&store, &id, &last_differs, t0()).await,
        Claim::Mismatch
    );
}

/// An oversized body or a status that is no HTTP status is refused, and
/// the record stays pending; a body of exactly [`MAX_RECORD_BYTES`] is
/// stored whole.
pub async fn oversized_bodies_and_bad_statuses_are_invalid_input_and_change_nothing(store: Store) {
    let id = create("k1");
    claim(&store, &id, b"f", t0()).await;
    let oversized = vec![b'x'; MAX_RECORD_BYTES + 1];
    for bad in [
        answer(200, &oversized),
        answer(99, b"x"),
        answer(600, b"x"),
        answer(u16::MAX, b"x"),
    ] {
        assert_invalid(
            store.complete(&id, b"f", &bad).await,
            &format!("status {}", bad.status),
        );
    }
    assert_eq!(claim(&store, &id, b"f", t0()).await, Claim::Pending);
    let largest = answer(599, &vec![b'y'; MAX_RECORD_BYTES]);
    assert_eq!(store.complete(&id, b"f", &largest).await, Ok(true));
    assert_eq!(
        claim(&store, &id, b"f", t0()).await,
        Claim::Completed(largest)
    );
}
