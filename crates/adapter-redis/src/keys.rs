//! The key layout of one community, and how ids become keys and fields.
//!
//! Every key of community `c` starts with the prefix `sg:{c}:`; the braces
//! are the Cluster hash tag, so all of them live on one slot and every
//! script runs on one node. [`CommunityId`] allows neither braces nor
//! whitespace, so no id can end the tag early or forge another
//! community's prefix (law 7).
//!
//! This module is the one place key names are defined: the adapter builds
//! every key a script touches here and declares it in the script's `KEYS`;
//! no script appends a suffix. Declared keys are what keeps a Cluster
//! resharding safe: while a slot migrates, Redis decides per call from the
//! declared keys whether the source node runs it, sends it to the target
//! (`ASK`, when none of them is left on the source) or refuses it
//! (`TRYAGAIN`, when they are split between the nodes, or a key the call
//! would create is missing). A script whose real keys were undeclared would
//! run on whichever node the declared ones pointed to, and read (or write)
//! a community that is not, or not all, there: a finalize answering
//! "unknown hold" and losing the cost, a `set_limits` creating a record
//! hash on the target that `MIGRATE` then refuses to overwrite (`BUSYKEY`).
//! Where a key is known only after a read (the due expiry buckets of a
//! reap), the adapter reads first and declares what it read; the script
//! copes with the read being stale. The scripts check only that every key
//! is the community's (it starts with `KEYS[1]`'s `sg:{c}:`), and that a
//! key named after a bucket or a period ends with `:` and that value.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sg:{c}:r` | hash | the community's records: one per (user, key) digest (a live hold, a finalize marker or a reap tombstone), `V` → the layout header, `L` → limits, `LV` → their configuration version, `<YYYY-MM>` → that period's totals, `<YYYY-MM>:<user>` → that user's sums in the period |
//! | `sg:{c}:x` | zset | expiry buckets that have a list: member and score = `expires_at / 100 ms` |
//! | `sg:{c}:e:<bucket>` | list | digests of the holds whose expiry falls in that 100 ms bucket ([`expiry_bucket`]; entries of settled or extended holds are skipped by reap) |
//! | `sg:{c}:q` | list | marker clean-up queue: digest ‖ marker `expires_at` (6 bytes, big-endian ms), oldest first |
//! | `sg:{c}:u:<YYYY-MM>` | set | the users with sums in the period (for status): added by a user's first reserve of the period, or by a commit_unheld that found no hold |
//! | `sg:{c}:tiers` | string | the tier-override cache entry (`RedisTierCache`): `{"v":2,"n":<configuration version>,"t":{"<tier>":"<level>",…}}`, never replaced by an older `n` (`lua/tier_put.lua`); the only community key with a Redis TTL (a cache, not budget state; `{"v":2,"n":…,"t":{}}` caches "no overrides") |
//! | `sg:{due}:at` | zset | the due index, not a community key: member = community id, score = a lower bound (ms) of the expiry of the community's earliest unreaped hold; read by `due_communities` (`ZRANGEBYSCORE -inf now`) |
//! | `sg:{due}:gen` | hash | community id → the generation of its entry (a number from `sg:{due}:seq`, renewed by every touch after a reserve, and given by a reap's update to an entry it creates); present exactly when the community is in `sg:{due}:at`; compared by the reap's index update |
//! | `sg:{due}:seq` | string | the generation sequence (`INCR`), shared by every community so that a generation value never repeats |
//! | `sg:{c}:i:<digest>` | hash | one Cycles request idempotency record (`RedisIdempotency`), digest = 32 hex digits of (operation, resource, key): `f` → the request fingerprint, `s` → `0` while pending or the answer's HTTP status, `b` → the answer's body (once completed), `k` → keep_until (decimal ms); expires by its Redis TTL (keep_until − the claim's now) |
//! | `sg:{lease:<name>}` | string | a worker lease (`RedisLease`), not a community key: the holder token, expiring by its Redis TTL (`PX`); tagged on the lease name, one slot per lease (lease names follow the id rules, so no community key, which always goes on after the tag, equals one) |
//!
//! The three `{due}` keys share one hash tag of their own: a Cluster script
//! touches one slot, so the index is written by its own small scripts
//! (`due_touch` after a reserve, `due_update` after a reap), never inside
//! a community's script. A community id cannot contain braces, so none
//! can change the index's tag or end a community's tag early; but `due` is
//! itself a valid community id. That community's keys would share the
//! index's slot (a busier slot, nothing worse) and never one of its keys:
//! community keys end in `r`, `x`, `q`, `tiers`, `e:<bucket>` or
//! `u:<period>`, the index's in `at`, `gen` and `seq` (a suffix added to
//! either family must keep them apart). The community ids stored in the
//! index are members and fields, never key names.
//!
//! Fields of `sg:{c}:r` never collide: a digest's first byte is at least
//! `0x80`, every other field starts with an ASCII character (`L`, `LV`,
//! `V`, or the digits of a period).
//!
//! * live hold: `H<estimate> <created_at> <expires_at> <period> <user> <model>`;
//! * finalize marker: `F` ‖ marker `expires_at` (6 bytes, big-endian ms) ‖ `<actual>`
//!   (also what a commit_unheld without a hold leaves, queued the same way);
//! * reap tombstone: `R<marker expires_at> <estimate> <created_at> <expires_at> <period> <user> <model>`;
//! * header: `"<layout>[ <period>]..."`, the layout version (`1`) of
//!   everything stored under the community, and the periods with totals
//!   in the hash; every script refuses a hash of another layout before it
//!   reads anything else, and reap prunes the listed periods that ended
//!   long ago (`store::prune`); absent on a hash written before headers
//!   existed, which reads as layout 1 with no period listed;
//! * limits: `"<limit>"` or `"<limit> <per-user cap>"`; their version
//!   (`LV`): the canonical decimal of the configuration version they were
//!   set with (set_limits keeps limits of a newer version; absent on a
//!   hash whose limits were set before versions existed, read as 0);
//! * totals: `"<committed> <reserved> <holds> <warned 0|1>"`;
//! * user sums: `"<committed> <reserved>"` (`"0 0"` is reported as absent).
//!
//! Why this shape:
//!
//! * No budget key carries a Redis TTL: expiry is logical, compared with
//!   the caller's `now`. (The tier cache and the idempotency records do:
//!   they are not budget state, and their TTL only collects them; an
//!   idempotency record's liveness is still its `k` field against the
//!   caller's `now`.) The expiry index points at the record hash, whose
//!   records nothing but a script removes, so the reaper always finds the
//!   estimate, period and user it must release, however late it runs.
//! * The expiry index is a list per 100 ms bucket of expiry rather than a
//!   zset member per hold: an `RPUSH` (about 14 bytes per entry) instead of
//!   a `ZADD` (about 110 bytes and a skiplist insert), and finalize does
//!   not touch it at all. Reap reads only due buckets, each entry once
//!   (the current bucket is re-read until it is past): O(due entries),
//!   never O(live holds).
//! * A hold records its period, so finalize, cancel and reap change the
//!   counters of the month it was made in (law 4).
//! * One `HMGET` on the record hash gives reserve everything it decides
//!   on: the (user, key) record (replays), the limits, the period's totals
//!   and the user's sums; one `HSET` writes them back. Finalize reads and
//!   writes the same way (with the current period as its guess of the
//!   hold's), so reserve is 3 commands and finalize 3.
//! * The field is a 12-byte digest of (user, key) rather than the 80-odd
//!   byte pair, and it is the only copy of the identity: the expiry index
//!   and the marker queue name the same 12 bytes. Two different pairs of one community
//!   share a digest with probability about n²/2⁹⁷ (n = live records);
//!   finding such a pair on purpose costs about 2⁴⁸ SHA-256 evaluations
//!   and could only merge two calls of the same attacker-chosen ids.
//! * Markers are cleaned without SCAN: each marker is queued with its
//!   expiry; reap pops the due head of the queue in bounded batches.
//! * Markers are the most numerous records (kept 24 h), so their expiry is
//!   packed in 6 bytes: a marker value fits 16 bytes and a queue entry 18.

use sha2::{Digest, Sha256};
use spendgate_domain::{CommunityId, IdempotencyKey, Period, Timestamp, UserId};
use spendgate_ports::RequestId;

/// Length in bytes of a hold digest.
pub const DIGEST_LEN: usize = 12;

/// The prefix `sg:{<community>}:` every key of the community starts with
/// (never a key itself).
pub fn community_prefix(community: &CommunityId) -> String {
    format!("sg:{{{}}}:", community.as_str())
}

/// The record hash: holds, markers, tombstones, limits and period totals.
pub fn records_key(community: &CommunityId) -> String {
    format!("{}r", community_prefix(community))
}

/// The zset naming the expiry buckets that hold entries.
pub fn expiry_key(community: &CommunityId) -> String {
    format!("{}x", community_prefix(community))
}

/// Width in ms of one expiry bucket.
pub const BUCKET_MS: i64 = 100;

/// The expiry bucket of `expires_at`: its ms divided by [`BUCKET_MS`]
/// (`lua/include/bucket.lua`'s `bucket` says the same, and the
/// scripts check that a bucket list's key ends with its bucket).
pub fn expiry_bucket(expires_at: Timestamp) -> i64 {
    expires_at.as_millis().div_euclid(BUCKET_MS)
}

/// The list of holds whose expiry falls in one 100 ms bucket
/// ([`expiry_bucket`]).
pub fn expiry_bucket_key(community: &CommunityId, bucket: i64) -> String {
    format!("{}e:{bucket}", community_prefix(community))
}

/// The list of markers queued for clean-up.
pub fn marker_queue_key(community: &CommunityId) -> String {
    format!("{}q", community_prefix(community))
}

/// The set of users with sums in one period.
pub fn user_sums_key(community: &CommunityId, period: Period) -> String {
    format!("{}u:{period}", community_prefix(community))
}

/// The string caching the community's tier overrides (expires by its
/// Redis TTL).
pub fn tier_cache_key(community: &CommunityId) -> String {
    format!("{}tiers", community_prefix(community))
}

/// Length in hex digits of the digest that names an idempotency record.
pub const REQUEST_DIGEST_HEX: usize = 32;

/// The hash holding the idempotency record of `id` (`RedisIdempotency`):
/// `sg:{<tenant>}:i:` and the first 16 bytes, in hex, of
/// SHA-256(`operation` ‖ `\n` ‖ `resource` ‖ `\n` ‖ `key`). On the tenant's
/// tag, so a request's record lives beside its budget; the fields are
/// printable ASCII without whitespace ([`RequestId::check`]), so the
/// newlines separate them unambiguously. Two requests of one tenant share
/// a record with probability about n²/2¹²⁹, and even then only a replay
/// with the same fingerprint could be answered from the other's record.
pub fn request_key(id: &RequestId) -> String {
    let mut hasher = Sha256::new();
    hasher.update(id.operation.as_bytes());
    hasher.update(b"\n");
    hasher.update(id.resource.as_bytes());
    hasher.update(b"\n");
    hasher.update(id.key.as_bytes());
    let full = hasher.finalize();
    let digest: String = full[..REQUEST_DIGEST_HEX / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{}i:{digest}", community_prefix(&id.tenant))
}

/// The due index (zset): community id → lower bound (ms) of its earliest
/// unreaped hold expiry.
pub const DUE_AT_KEY: &str = "sg:{due}:at";

/// The due index's generations (hash): community id → the generation of
/// its entry, renewed by every index touch after a reserve.
pub const DUE_GEN_KEY: &str = "sg:{due}:gen";

/// The due index's generation sequence (string, `INCR`).
pub const DUE_SEQ_KEY: &str = "sg:{due}:seq";

/// The string holding the worker lease `name` (`RedisLease`): hash-tagged
/// on the name, so each lease is one key on one slot. `name` must not hold
/// braces (the lease checks it before building the key).
pub fn lease_key(name: &str) -> String {
    format!("sg:{{lease:{name}}}")
}

/// The record field of (user, key): the first 12 bytes of
/// SHA-256(`user` ‖ `\n` ‖ `key`), with the top bit of the first byte set
/// (so no digest equals a limits, totals or user-sums field, which all start
/// with ASCII). Ids hold no whitespace, so the newline separates them
/// unambiguously.
pub fn hold_digest(user: &UserId, key: &IdempotencyKey) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(user.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(key.as_str().as_bytes());
    let full = hasher.finalize();
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full[..DIGEST_LEN]);
    out[0] |= 0x80;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_community_tag() {
        let c = CommunityId::parse("8f0c6a52-4a3e-4b8e-9d63-1b2f3c4d5e6f").unwrap();
        let p = Period::parse("2026-11").unwrap();
        for key in [
            records_key(&c),
            expiry_key(&c),
            marker_queue_key(&c),
            user_sums_key(&c, p),
        ] {
            assert!(
                key.starts_with("sg:{8f0c6a52-4a3e-4b8e-9d63-1b2f3c4d5e6f}:"),
                "{key}"
            );
        }
        assert_eq!(
            user_sums_key(&c, p),
            "sg:{8f0c6a52-4a3e-4b8e-9d63-1b2f3c4d5e6f}:u:2026-11"
        );
    }

    #[test]
    fn expiry_buckets_are_100_ms_wide_and_name_their_list() {
        let c = CommunityId::parse("acme").unwrap();
        let bucket = |ms| expiry_bucket(Timestamp::from_millis(ms).unwrap());
        assert_eq!((bucket(0), bucket(99), bucket(100)), (0, 0, 1));
        assert_eq!(bucket(1_794_700_860_042), 17_947_008_600);
        assert_eq!(
            expiry_bucket_key(&c, bucket(1_794_700_860_042)),
            "sg:{acme}:e:17947008600"
        );
    }

    #[test]
    fn request_keys_stay_on_the_tenant_tag_and_separate_the_fields() {
        let id = |operation: &str, resource: &str, key: &str| RequestId {
            tenant: CommunityId::parse("acme").unwrap(),
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            key: key.to_owned(),
        };
        let key = request_key(&id("create", "", "k"));
        assert!(key.starts_with("sg:{acme}:i:"), "{key}");
        assert_eq!(key.len(), "sg:{acme}:i:".len() + REQUEST_DIGEST_HEX);
        assert_ne!(
            request_key(&id("commit", "r1", "k")),
            request_key(&id("commit", "r", "1k"))
        );
        assert_ne!(
            request_key(&id("commit", "", "k")),
            request_key(&id("commitk", "", ""))
        );
    }

    #[test]
    fn digests_separate_user_and_key() {
        let a = hold_digest(
            &UserId::parse("ab").unwrap(),
            &IdempotencyKey::parse("c").unwrap(),
        );
        let b = hold_digest(
            &UserId::parse("a").unwrap(),
            &IdempotencyKey::parse("bc").unwrap(),
        );
        assert_ne!(a, b);
    }
}
