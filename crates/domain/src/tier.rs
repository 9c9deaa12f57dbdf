//! Tiers, access levels and the models each may call.
//!
//! A community's tier (1–9) maps to an access level, which allows a set of
//! model aliases. Communities may override the level of a tier; the tier
//! itself is validated first, so no override can make tier 0 or 42 valid.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::ModelAlias;

/// A subscription tier, 1 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Tier(u8);

/// What a tier unlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Tiers 1–3 by default: `cheap` only.
    Free,
    /// Tiers 4–6 by default: `cheap`, `fast-code`, `reviewer`.
    Pro,
    /// Tiers 7–9 by default: pro's models plus `reasoning` and `native`.
    Enterprise,
}

/// Why a tier or a model choice was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The tier lies outside 1–9.
    #[error("tier {0} is outside 1..=9")]
    OutOfRange(i64),
    /// The access level name is not free, pro or enterprise.
    #[error("unknown access level {0:?}")]
    UnknownAccessLevel(String),
    /// The alias is not among the models the caller's level allows.
    #[error("model {0:?} is not allowed at this access level")]
    ModelNotAllowed(String),
}

impl Tier {
    /// Validates a tier number.
    ///
    /// # Errors
    /// [`TierError::OutOfRange`] outside 1–9.
    pub fn new(tier: i64) -> Result<Self, TierError> {
        match u8::try_from(tier) {
            Ok(t @ 1..=9) => Ok(Self(t)),
            _ => Err(TierError::OutOfRange(tier)),
        }
    }

    /// The tier number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The level this tier has when no override applies.
    pub const fn default_level(self) -> AccessLevel {
        match self.0 {
            1..=3 => AccessLevel::Free,
            4..=6 => AccessLevel::Pro,
            _ => AccessLevel::Enterprise,
        }
    }
}

impl TryFrom<i64> for Tier {
    type Error = TierError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Tier> for u8 {
    fn from(value: Tier) -> Self {
        value.0
    }
}

impl AccessLevel {
    /// Aliases this level allows.
    pub const fn allowed_aliases(self) -> &'static [&'static str] {
        match self {
            AccessLevel::Free => &["cheap"],
            AccessLevel::Pro => &["cheap", "fast-code", "reviewer"],
            AccessLevel::Enterprise => &["cheap", "fast-code", "reviewer", "reasoning", "native"],
        }
    }

    /// The level's lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Free => "free",
            AccessLevel::Pro => "pro",
            AccessLevel::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessLevel {
    type Err = TierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(AccessLevel::Free),
            "pro" => Ok(AccessLevel::Pro),
            "enterprise" => Ok(AccessLevel::Enterprise),
            other => Err(TierError::UnknownAccessLevel(other.to_owned())),
        }
    }
}

/// A community's replacements of the default tier → level mapping.
pub type TierOverrides = BTreeMap<Tier, AccessLevel>;

/// Resolves a raw tier number to an access level.
///
/// # Errors
/// [`TierError::OutOfRange`] for a tier outside 1–9, checked before any
/// override is looked at.
pub fn access_level(tier: i64, overrides: &TierOverrides) -> Result<AccessLevel, TierError> {
    let tier = Tier::new(tier)?;
    Ok(overrides
        .get(&tier)
        .copied()
        .unwrap_or_else(|| tier.default_level()))
}

/// Checks that `alias` is one of `allowed`.
///
/// # Errors
/// [`TierError::ModelNotAllowed`] otherwise.
pub fn validate_model(alias: &ModelAlias, allowed: &[&str]) -> Result<(), TierError> {
    if allowed.contains(&alias.as_str()) {
        Ok(())
    } else {
        Err(TierError::ModelNotAllowed(alias.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tiers_map_to_levels() {
        let none = TierOverrides::new();
        assert_eq!(access_level(1, &none).unwrap(), AccessLevel::Free);
        assert_eq!(access_level(3, &none).unwrap(), AccessLevel::Free);
        assert_eq!(access_level(4, &none).unwrap(), AccessLevel::Pro);
        assert_eq!(access_level(6, &none).unwrap(), AccessLevel::Pro);
        assert_eq!(access_level(7, &none).unwrap(), AccessLevel::Enterprise);
        assert_eq!(access_level(9, &none).unwrap(), AccessLevel::Enterprise);
    }

    #[test]
    fn override_changes_the_level_of_a_tier() {
        let overrides = TierOverrides::from([(Tier::new(2).unwrap(), AccessLevel::Enterprise)]);
        assert_eq!(
            access_level(2, &overrides).unwrap(),
            AccessLevel::Enterprise
        );
        assert_eq!(access_level(3, &overrides).unwrap(), AccessLevel::Free);
    }

    #[test]
    fn out_of_range_tier_is_rejected_before_overrides() {
        let everything = (1..=9)
            .map(|t| (Tier::new(t).unwrap(), AccessLevel::Enterprise))
            .collect();
        for bad in [0, 10, -1, 256, i64::MIN, i64::MAX] {
            assert_eq!(
                access_level(bad, &everything),
                Err(TierError::OutOfRange(bad))
            );
        }
    }

    #[test]
    fn validate_model_allows_only_the_levels_aliases() {
        let cheap = ModelAlias::parse("cheap").unwrap();
        let reasoning = ModelAlias::parse("reasoning").unwrap();
        assert!(validate_model(&cheap, AccessLevel::Free.allowed_aliases()).is_ok());
        assert_eq!(
            validate_model(&reasoning, AccessLevel::Pro.allowed_aliases()),
            Err(TierError::ModelNotAllowed("reasoning".into()))
        );
        assert!(validate_model(&reasoning, AccessLevel::Enterprise.allowed_aliases()).is_ok());
    }

    #[test]
    fn access_level_names_parse_strictly() {
        assert_eq!("pro".parse::<AccessLevel>().unwrap(), AccessLevel::Pro);
        assert_eq!(
            "Pro".parse::<AccessLevel>(),
            Err(TierError::UnknownAccessLevel("Pro".into()))
        );
    }
}
