//! [`ConfigVersion`]: the version of a community's configuration, so that
//! every copy of it (the budget store's limits, the caches) can tell a
//! newer value from an older one and keep the newer.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The version of a community's configuration row: every write of the row
/// issues a greater one, and every copy keeps the greatest it was given.
///
/// A write issues [`ConfigVersion::next`]: one more than the row had, and at
/// least the write's time in milliseconds. Versions therefore grow with
/// every write of a row and also across rows recreated from scratch (a new
/// database, a process restarted on memory), so a copy that outlived its
/// source still takes the source's next write. [`ConfigVersion::ZERO`] is
/// what nothing was ever written has; the range stops at 2^53 − 1, exact
/// in Lua's doubles and in JSON like [`crate::Micros`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct ConfigVersion(i64);

/// Why a version was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// Outside `0..=ConfigVersion::MAX`: negative, or beyond what Lua and
    /// JSON carry exactly.
    #[error("configuration version {0} is outside 0..=2^53-1")]
    OutOfRange(i64),
}

impl ConfigVersion {
    /// The version of a configuration never written.
    pub const ZERO: ConfigVersion = ConfigVersion(0);
    /// The greatest version, 2^53 − 1.
    pub const MAX: ConfigVersion = ConfigVersion((1 << 53) - 1);

    /// A version read back from storage.
    ///
    /// # Errors
    /// [`VersionError::OutOfRange`] outside `0..=MAX`.
    pub const fn new(version: i64) -> Result<Self, VersionError> {
        if version < 0 || version > Self::MAX.0 {
            return Err(VersionError::OutOfRange(version));
        }
        Ok(Self(version))
    }

    /// The number, as stored.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The version a write at `now` issues after `self`: `max(self + 1,
    /// now in ms)`.
    ///
    /// # Errors
    /// [`VersionError::OutOfRange`] past [`ConfigVersion::MAX`].
    pub fn next(self, now: Timestamp) -> Result<Self, VersionError> {
        Self::new(self.0.saturating_add(1).max(now.as_millis()))
    }
}

impl TryFrom<i64> for ConfigVersion {
    type Error = VersionError;

    fn try_from(version: i64) -> Result<Self, Self::Error> {
        Self::new(version)
    }
}

impl From<ConfigVersion> for i64 {
    fn from(version: ConfigVersion) -> Self {
        version.0
    }
}

impl std::fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    #[test]
    fn the_next_version_is_one_more_or_the_time_whichever_is_greater() {
        assert_eq!(ConfigVersion::ZERO.next(at(0)).unwrap().get(), 1);
        assert_eq!(ConfigVersion::ZERO.next(at(5_000)).unwrap().get(), 5_000);
        let v = ConfigVersion::new(5_000).unwrap();
        assert_eq!(v.next(at(5_000)).unwrap().get(), 5_001);
        assert_eq!(v.next(at(100)).unwrap().get(), 5_001);
        assert_eq!(v.next(at(9_000)).unwrap().get(), 9_000);
    }

    #[test]
    fn versions_outside_the_range_are_refused() {
        assert_eq!(ConfigVersion::new(-1), Err(VersionError::OutOfRange(-1)));
        assert!(ConfigVersion::new((1 << 53) - 1).is_ok());
        assert!(ConfigVersion::new(1 << 53).is_err());
        assert!(ConfigVersion::MAX.next(at(0)).is_err());
        assert_eq!(
            ConfigVersion::try_from(-3),
            Err(VersionError::OutOfRange(-3))
        );
    }
}
