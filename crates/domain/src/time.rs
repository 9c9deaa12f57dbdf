//! Instants and durations in milliseconds.
//!
//! The domain never reads a clock: every operation is handed `now`, so the
//! same inputs give the same result in a test, on Redis and in SQL.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC, from 1970 to the end of 9999
/// (so every instant has a [`crate::Period`], and the value is exact in a
/// double).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Timestamp(i64);

/// Why a time value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The instant lies before 1970-01-01T00:00:00Z or after 9999-12-31.
    #[error("timestamp {0} ms lies outside 1970..=9999")]
    OutOfRange(i64),
    /// Adding the duration leaves the representable range.
    #[error("time arithmetic overflowed")]
    Overflow,
    /// A TTL outside the accepted range.
    #[error("ttl of {got_ms} ms is outside 1..={max_ms} ms")]
    TtlOutOfRange {
        /// The TTL given, in milliseconds (saturated for display).
        got_ms: u64,
        /// The largest accepted TTL.
        max_ms: u64,
    },
}

impl Timestamp {
    /// The first millisecond of 1970-01-01: before every other instant.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The last millisecond of 9999-12-31.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// Wraps milliseconds since the epoch.
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] before 1970 or after [`Timestamp::MAX`].
    pub fn from_millis(ms: i64) -> Result<Self, TimeError> {
        if !(0..=Self::MAX.0).contains(&ms) {
            return Err(TimeError::OutOfRange(ms));
        }
        Ok(Self(ms))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + ms`.
    ///
    /// # Errors
    /// [`TimeError::Overflow`] outside the range of [`Timestamp`].
    pub fn plus_millis(self, ms: i64) -> Result<Self, TimeError> {
        self.0
            .checked_add(ms)
            .and_then(|v| Self::from_millis(v).ok())
            .ok_or(TimeError::Overflow)
    }

    /// `self + ttl`.
    ///
    /// # Errors
    /// [`TimeError::Overflow`] past [`Timestamp::MAX`].
    pub fn plus(self, ttl: Ttl) -> Result<Self, TimeError> {
        self.plus_millis(ttl.as_millis())
    }
}

impl TryFrom<i64> for Timestamp {
    type Error = TimeError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::from_millis(value)
    }
}

impl From<Timestamp> for i64 {
    fn from(value: Timestamp) -> Self {
        value.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// How long a hold (or a retained marker) lives: 1 ms to [`Ttl::MAX_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Ttl(i64);

impl Ttl {
    /// Thirty days: no hold or marker is meant to outlive a period by more.
    pub const MAX_MS: i64 = 30 * 24 * 60 * 60 * 1000;
    /// One day, the default retention of settled markers.
    pub const DAY: Ttl = Ttl(24 * 60 * 60 * 1000);

    /// A TTL in milliseconds.
    ///
    /// # Errors
    /// [`TimeError::TtlOutOfRange`] outside `1..=MAX_MS`.
    pub fn from_millis(ms: i64) -> Result<Self, TimeError> {
        if !(1..=Self::MAX_MS).contains(&ms) {
            return Err(TimeError::TtlOutOfRange {
                got_ms: u64::try_from(ms).unwrap_or(0),
                max_ms: Self::MAX_MS.unsigned_abs(),
            });
        }
        Ok(Self(ms))
    }

    /// A TTL from a [`Duration`].
    ///
    /// # Errors
    /// [`TimeError::TtlOutOfRange`] outside `1 ms..=30 days`.
    pub fn from_duration(duration: Duration) -> Result<Self, TimeError> {
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self::from_millis(ms)
    }

    /// Whole seconds, for configuration constants.
    ///
    /// # Errors
    /// [`TimeError::TtlOutOfRange`] outside `1 ms..=30 days`.
    pub fn from_secs(secs: u32) -> Result<Self, TimeError> {
        Self::from_millis(i64::from(secs) * 1000)
    }

    /// The TTL in milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Ttl {
    type Error = TimeError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::from_millis(value)
    }
}

impl From<Ttl> for i64 {
    fn from(value: Ttl) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_1970_to_9999_are_rejected() {
        assert_eq!(Timestamp::from_millis(-1), Err(TimeError::OutOfRange(-1)));
        assert_eq!(
            Timestamp::from_millis(i64::MAX),
            Err(TimeError::OutOfRange(i64::MAX))
        );
    }

    #[test]
    fn timestamp_arithmetic_is_checked() {
        let late = Timestamp::MAX;
        assert_eq!(late.plus_millis(1), Err(TimeError::Overflow));
        assert_eq!(
            Timestamp::from_millis(1).unwrap().plus_millis(-2),
            Err(TimeError::Overflow)
        );
    }

    #[test]
    fn ttl_must_be_positive_and_bounded() {
        assert!(matches!(
            Ttl::from_millis(0),
            Err(TimeError::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            Ttl::from_millis(-5),
            Err(TimeError::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            Ttl::from_millis(Ttl::MAX_MS + 1),
            Err(TimeError::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            Ttl::from_duration(Duration::from_secs(u64::MAX)),
            Err(TimeError::TtlOutOfRange { .. })
        ));
        assert_eq!(Ttl::from_secs(60).unwrap().as_millis(), 60_000);
    }
}
