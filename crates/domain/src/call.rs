//! The call id: how one agent call is named outside spendgate, to the
//! model provider and back.
//!
//! An idempotency key is chosen by a tenant for its own calls, so two
//! communities (or two users) may both send `msg-1`, and a key is used
//! again once the store has forgotten its first call. A provider asked
//! for the usage of `msg-1` could answer with another tenant's call. The
//! call id names exactly one call: it is derived from the community, the
//! user, the key and the instant the hold was made, so it differs
//! wherever one of them does, and it is the same every time the same hold
//! is read back (a replayed reserve, a look-up, a hand-over), with nothing
//! stored.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::hold::Hold;
use crate::id::{CommunityId, IdempotencyKey, UserId};
use crate::time::Timestamp;

/// One agent call's id outside spendgate: `sgc1_` and 32 lowercase hex
/// digits, safe in a URL path segment, a header or a JSON string.
///
/// The digits are the first 16 bytes of SHA-256 over
/// `spendgate call id v1`, the community, the user, the idempotency key
/// and the hold's creation instant (decimal Unix milliseconds), each
/// followed by a newline (ids hold no whitespace, so the newlines separate
/// them unambiguously). Finding another call with the same id is a
/// second preimage of a 128-bit digest; two calls share one by chance
/// with probability about n²/2¹²⁹.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(String);

impl CallId {
    /// What every call id starts with; the `1` is the derivation's version.
    pub const PREFIX: &'static str = "sgc1_";

    /// The id of the call of `user` under `key` in `community` whose hold
    /// was made at `created_at`.
    pub fn derive(
        community: &CommunityId,
        user: &UserId,
        key: &IdempotencyKey,
        created_at: Timestamp,
    ) -> Self {
        let mut hasher = Sha256::new();
        for part in [
            "spendgate call id v1",
            community.as_str(),
            user.as_str(),
            key.as_str(),
            &created_at.as_millis().to_string(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        let mut id = String::with_capacity(Self::PREFIX.len() + 32);
        id.push_str(Self::PREFIX);
        for byte in &digest[..16] {
            id.push(hex(byte >> 4));
            id.push(hex(byte & 0x0F));
        }
        Self(id)
    }

    /// The id of the call `hold` of `community` stands for.
    pub fn of(community: &CommunityId, hold: &Hold) -> Self {
        Self::derive(community, &hold.user, &hold.key, hold.created_at)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0F)])
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(community: &str, user: &str, key: &str, created_at: i64) -> CallId {
        CallId::derive(
            &CommunityId::parse(community).unwrap(),
            &UserId::parse(user).unwrap(),
            &IdempotencyKey::parse(key).unwrap(),
            Timestamp::from_millis(created_at).unwrap(),
        )
    }

    #[test]
    fn a_call_id_is_the_prefix_and_32_lowercase_hex_digits() {
        let id = call("guild-42", "alice", "msg-1", 1_794_700_800_000);
        let digits = id.as_str().strip_prefix(CallId::PREFIX).unwrap();
        assert_eq!(digits.len(), 32);
        assert!(
            digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(
            id,
            call("guild-42", "alice", "msg-1", 1_794_700_800_000),
            "derived, not random"
        );
    }

    #[test]
    fn the_same_key_in_another_community_user_or_hold_is_another_call() {
        let base = call("guild-a", "alice", "msg-1", 1_000);
        for other in [
            call("guild-b", "alice", "msg-1", 1_000),
            call("guild-a", "bob", "msg-1", 1_000),
            call("guild-a", "alice", "msg-2", 1_000),
            call("guild-a", "alice", "msg-1", 1_001),
            // The separators keep the parts apart.
            call("guild-aalice", "x", "msg-1", 1_000),
        ] {
            assert_ne!(base, other);
        }
    }
}
