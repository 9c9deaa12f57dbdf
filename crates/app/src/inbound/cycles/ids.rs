//! Reservation and event ids, made by the server and deterministic.
//!
//! A reservation id is `rsv_<tag><hash>_<user>`:
//! * `tag`: 8 hex digits of SHA-256 over the tenant, so an id made for
//!   another tenant is refused from the id alone (as an unknown id, 404)
//!   and never looked up in that tenant's holds;
//! * `hash`: 32 hex digits of SHA-256 over (tenant, create idempotency
//!   key); the hold's key in the store is `cy.<hash>`;
//! * `user`: the spendgate user the hold belongs to (the configured
//!   subject level's value, or `~tenant` when the subject has none).
//!
//! So the id alone names the hold (community, user, key), and a replayed
//! create makes the same id. Ids stay within the spec's 128 characters:
//! the user part is at most [`MAX_USER_LEN`] characters.

use sha2::{Digest, Sha256};
use spendgate_domain::{CommunityId, HoldRef, IdempotencyKey, UserId};

use super::error::CyclesError;

const PREFIX: &str = "rsv_";
const TAG_LEN: usize = 8;
const HASH_LEN: usize = 32;
/// The longest user (subject level value) an id can carry.
pub const MAX_USER_LEN: usize = 128 - PREFIX.len() - TAG_LEN - HASH_LEN - 1;
/// The user of holds whose subject does not name the user level.
pub const TENANT_USER: &str = "~tenant";

/// A reservation's id and the hold it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationId {
    /// The id as clients see it.
    pub text: String,
    /// The tenant tag inside it.
    pub tag: String,
    /// The hold in the store.
    pub hold: HoldRef,
}

fn hex(bytes: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    for byte in bytes {
        if out.len() >= len {
            break;
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out.truncate(len);
    out
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

/// The tenant tag of ids made for `tenant`.
pub fn tenant_tag(tenant: &CommunityId) -> String {
    hex(
        &digest(&["spendgate-cycles-tenant", tenant.as_str()]),
        TAG_LEN,
    )
}

/// The hash of (tenant, key) for `purpose` (`reservation` or `event`).
fn key_hash(purpose: &str, tenant: &CommunityId, key: &str) -> String {
    hex(&digest(&[purpose, tenant.as_str(), key]), HASH_LEN)
}

/// The store key of a hold or event: printable, well under the 128 bytes
/// of [`IdempotencyKey`].
fn store_key(prefix: &str, hash: &str) -> Result<IdempotencyKey, CyclesError> {
    IdempotencyKey::parse(format!("{prefix}.{hash}"))
        .map_err(|e| CyclesError::Internal(format!("derived key rejected: {e}")))
}

/// The id of the reservation created by `tenant` with `key` for `user`.
///
/// # Errors
/// `INVALID_REQUEST` when the user is longer than [`MAX_USER_LEN`].
pub fn reservation(
    tenant: &CommunityId,
    key: &str,
    user: &UserId,
) -> Result<ReservationId, CyclesError> {
    if user.as_str().len() > MAX_USER_LEN {
        return Err(CyclesError::invalid(
            "subject",
            format!(
                "spendgate keeps the user level's value in the reservation id: at most {MAX_USER_LEN} characters"
            ),
        ));
    }
    let tag = tenant_tag(tenant);
    let hash = key_hash("reservation", tenant, key);
    Ok(ReservationId {
        text: format!("{PREFIX}{tag}{hash}_{user}"),
        tag,
        hold: HoldRef {
            user: user.clone(),
            key: store_key("cy", &hash)?,
        },
    })
}

/// Reads an id made by [`reservation`]; `None` for anything else (an id
/// this server never made).
pub fn parse(text: &str) -> Option<ReservationId> {
    let rest = text.strip_prefix(PREFIX)?;
    let (tag, rest) = split_hex(rest, TAG_LEN)?;
    let (hash, rest) = split_hex(rest, HASH_LEN)?;
    let user = rest.strip_prefix('_')?;
    if user.len() > MAX_USER_LEN {
        return None;
    }
    Some(ReservationId {
        text: text.to_owned(),
        tag: tag.to_owned(),
        hold: HoldRef {
            user: UserId::parse(user).ok()?,
            key: store_key("cy", hash).ok()?,
        },
    })
}

fn split_hex(text: &str, len: usize) -> Option<(&str, &str)> {
    let head = text.get(..len)?;
    head.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then(|| (head, &text[len..]))
}

/// The id and the store key of the event `tenant` posted with `key`: a
/// retried event commits once, whatever the user.
///
/// # Errors
/// `INTERNAL_ERROR` if the derived key were rejected (it cannot be).
pub fn event(tenant: &CommunityId, key: &str) -> Result<(String, IdempotencyKey), CyclesError> {
    let hash = key_hash("event", tenant, key);
    let store = store_key("ev", &hash)?;
    Ok((format!("evt_{hash}"), store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> CommunityId {
        CommunityId::parse(name).unwrap()
    }

    #[test]
    fn an_id_names_its_hold_and_is_the_same_for_the_same_key() {
        let user = UserId::parse("agent-7").unwrap();
        let made = reservation(&tenant("acme"), "k1", &user).unwrap();
        assert_eq!(made, reservation(&tenant("acme"), "k1", &user).unwrap());
        assert!(made.text.len() <= 128);
        assert_eq!(parse(&made.text), Some(made.clone()));
        assert_eq!(made.hold.user, user);
        assert_ne!(made, reservation(&tenant("acme"), "k2", &user).unwrap());
        let other = reservation(&tenant("beta"), "k1", &user).unwrap();
        assert_ne!(other.tag, made.tag);
        assert_ne!(other.hold.key, made.hold.key);
    }

    #[test]
    fn foreign_text_is_not_an_id() {
        for text in [
            "",
            "rsv_",
            "rsv_zz",
            "abc",
            "rsv_0123456789abcdef0123456789abcdef0123456789_",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        let long = UserId::parse("u".repeat(MAX_USER_LEN + 1)).unwrap();
        assert!(reservation(&tenant("acme"), "k", &long).is_err());
    }
}
