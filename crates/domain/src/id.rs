//! Validated identifiers.
//!
//! Ids end up inside Redis keys (`sg:{<community>}:…`), SQL rows and log
//! lines. Restricting them to printable ASCII without whitespace or braces
//! means no id can leave its community's Cluster hash tag, collide with
//! another key, or smuggle a separator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was rejected; each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("{field} is empty")]
    Empty {
        /// Which id (`community_id`, `user_id`, …).
        field: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("{field} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Which id.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a byte outside printable ASCII, whitespace, `{` or `}`.
    #[error("{field} contains a forbidden character at byte {position}")]
    ForbiddenCharacter {
        /// Which id.
        field: &'static str,
        /// Byte offset of the first forbidden character.
        position: usize,
    },
}

fn validate(field: &'static str, raw: &str, max_len: usize) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { field });
    }
    if raw.len() > max_len {
        return Err(IdError::TooLong {
            field,
            len: raw.len(),
        });
    }
    if let Some(position) = raw
        .bytes()
        .position(|b| !b.is_ascii_graphic() || b == b'{' || b == b'}')
    {
        return Err(IdError::ForbiddenCharacter { field, position });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Field name used in errors and logs.
            pub const FIELD: &'static str = $field;

            /// Validates and wraps an id.
            ///
            /// # Errors
            /// [`IdError`] naming this field when the text is empty, too
            /// long, or holds a forbidden character.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                validate($field, &raw, $max)?;
                Ok(Self(raw))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A tenant: a Discord or Telegram server, a team, an org.
    CommunityId,
    "community_id",
    MAX_ID_LEN
);
id_type!(
    /// A member of a community (for example a `0x…` wallet address).
    UserId,
    "user_id",
    MAX_ID_LEN
);
id_type!(
    /// The caller's key for one agent call; replays with the same key
    /// (per community and user) have exactly one effect.
    IdempotencyKey,
    "idempotency_key",
    MAX_ID_LEN
);
id_type!(
    /// A model alias (`cheap`, `reasoning`, …) as priced and tier-gated.
    ModelAlias,
    "model_alias",
    64
);

impl ModelAlias {
    /// The text of [`ModelAlias::unknown`].
    pub const UNKNOWN: &'static str = "~unknown";

    /// The model of a cost whose hold nobody knows any more (the store lost
    /// it) and whose caller did not name the model: what the usage log
    /// records for it. No price table prices it.
    pub fn unknown() -> Self {
        Self(Self::UNKNOWN.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_model_is_a_valid_alias() {
        assert_eq!(
            ModelAlias::parse(ModelAlias::UNKNOWN).unwrap(),
            ModelAlias::unknown()
        );
    }

    #[test]
    fn accepts_realistic_ids() {
        assert!(CommunityId::parse("8f0c6a52-4a3e-4b8e-9d63-1b2f3c4d5e6f").is_ok());
        assert!(UserId::parse("0x52908400098527886E0F7030069857D2E4169EE7").is_ok());
        assert!(IdempotencyKey::parse("a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn empty_id_names_its_field() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty { field: "user_id" }));
    }

    #[test]
    fn oversized_id_is_rejected() {
        assert_eq!(
            CommunityId::parse("c".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong {
                field: "community_id",
                len: MAX_ID_LEN + 1
            })
        );
        assert!(matches!(
            ModelAlias::parse("m".repeat(65)),
            Err(IdError::TooLong {
                field: "model_alias",
                ..
            })
        ));
    }

    #[test]
    fn ids_that_could_break_a_hash_tag_or_key_are_rejected() {
        for (bad, position) in [
            ("a{b", 1),
            ("}", 0),
            ("a b", 1),
            ("a\tb", 1),
            ("a\nb", 1),
            ("é", 0),
            ("a\0", 1),
            ("a\u{7f}", 1),
        ] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdError::ForbiddenCharacter {
                    field: "idempotency_key",
                    position
                }),
                "{bad:?}"
            );
        }
    }
}
