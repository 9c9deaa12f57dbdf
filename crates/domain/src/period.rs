//! Budget periods: UTC calendar months.
//!
//! A hold remembers the period it was made in (law 4), so a period must be
//! cheap to compute from a timestamp, to print as `YYYY-MM` (it is part of
//! Redis keys and SQL rows) and to parse back strictly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

const MS_PER_DAY: i64 = 86_400_000;

/// One UTC calendar month, `1970-01` to `9999-12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: u16,
    month: u8,
}

/// Why a period was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeriodError {
    /// The text is not `YYYY-MM` with a month from 01 to 12.
    #[error("malformed period {0:?}: expected YYYY-MM")]
    Malformed(String),
    /// The month lies outside `1970-01..=9999-12`.
    #[error("period out of range")]
    OutOfRange,
}

/// Days since 1970-01-01 to (year, month); proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u8) {
    // Howard Hinnant's algorithm, restricted to non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u8::try_from(month).unwrap_or(1))
}

/// (year, month) to days since 1970-01-01 of that month's first day.
fn days_from_civil(year: i64, month: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Period {
    /// The month containing `at`.
    ///
    /// # Errors
    /// [`PeriodError::OutOfRange`] after 9999-12.
    pub fn containing(at: Timestamp) -> Result<Self, PeriodError> {
        let (year, month) = civil_from_days(at.as_millis() / MS_PER_DAY);
        Self::new(year, month)
    }

    /// A month from its parts.
    ///
    /// # Errors
    /// [`PeriodError::OutOfRange`] outside `1970-01..=9999-12` or for a
    /// month outside 1–12.
    pub fn new(year: i64, month: u8) -> Result<Self, PeriodError> {
        if !(1..=12).contains(&month) {
            return Err(PeriodError::OutOfRange);
        }
        let year = u16::try_from(year).map_err(|_| PeriodError::OutOfRange)?;
        if !(1970..=9999).contains(&year) {
            return Err(PeriodError::OutOfRange);
        }
        Ok(Self { year, month })
    }

    /// Parses `YYYY-MM` strictly.
    ///
    /// # Errors
    /// [`PeriodError::Malformed`] for any other shape,
    /// [`PeriodError::OutOfRange`] for a year before 1970.
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let malformed = || PeriodError::Malformed(text.to_owned());
        let bytes = text.as_bytes();
        if bytes.len() != 7 || bytes[4] != b'-' {
            return Err(malformed());
        }
        let digits = |s: &[u8]| -> Result<i64, PeriodError> {
            s.iter().try_fold(0i64, |acc, b| {
                if b.is_ascii_digit() {
                    Ok(acc * 10 + i64::from(b - b'0'))
                } else {
                    Err(malformed())
                }
            })
        };
        let year = digits(&bytes[..4])?;
        let month = u8::try_from(digits(&bytes[5..])?).map_err(|_| malformed())?;
        if !(1..=12).contains(&month) {
            return Err(malformed());
        }
        Self::new(year, month)
    }

    /// The calendar year.
    pub const fn year(self) -> u16 {
        self.year
    }

    /// The month, 1–12.
    pub const fn month(self) -> u8 {
        self.month
    }

    /// The first millisecond of the month.
    pub fn start(self) -> Timestamp {
        let ms = days_from_civil(i64::from(self.year), self.month) * MS_PER_DAY;
        Timestamp::from_millis(ms).unwrap_or_default()
    }

    /// The following month.
    ///
    /// # Errors
    /// [`PeriodError::OutOfRange`] after 9999-12.
    pub fn next(self) -> Result<Self, PeriodError> {
        if self.month == 12 {
            Self::new(i64::from(self.year) + 1, 1)
        } else {
            Self::new(i64::from(self.year), self.month + 1)
        }
    }

    /// The preceding month.
    ///
    /// # Errors
    /// [`PeriodError::OutOfRange`] before 1970-01.
    pub fn previous(self) -> Result<Self, PeriodError> {
        if self.month == 1 {
            Self::new(i64::from(self.year) - 1, 12)
        } else {
            Self::new(i64::from(self.year), self.month - 1)
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Period {
    type Error = PeriodError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Period> for String {
    fn from(value: Period) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    #[test]
    fn month_boundary_is_exact_to_the_millisecond() {
        // 2026-12-01T00:00:00Z
        let december = 1_796_083_200_000;
        assert_eq!(
            Period::containing(at(december - 1)).unwrap().to_string(),
            "2026-11"
        );
        assert_eq!(
            Period::containing(at(december)).unwrap().to_string(),
            "2026-12"
        );
        assert_eq!(Period::parse("2026-12").unwrap().start(), at(december));
    }

    #[test]
    fn epoch_and_leap_day() {
        assert_eq!(Period::containing(at(0)).unwrap().to_string(), "1970-01");
        // 2024-02-29T12:00:00Z
        assert_eq!(
            Period::containing(at(1_709_208_000_000))
                .unwrap()
                .to_string(),
            "2024-02"
        );
    }

    #[test]
    fn next_and_previous_cross_years() {
        let dec = Period::parse("2026-12").unwrap();
        assert_eq!(dec.next().unwrap().to_string(), "2027-01");
        assert_eq!(dec.next().unwrap().previous().unwrap(), dec);
        assert_eq!(
            Period::parse("1970-01").unwrap().previous(),
            Err(PeriodError::OutOfRange)
        );
        assert_eq!(
            Period::parse("9999-12").unwrap().next(),
            Err(PeriodError::OutOfRange)
        );
    }

    #[test]
    fn malformed_periods_are_rejected() {
        for bad in [
            "", "2026-1", "2026-13", "2026-00", "2026/11", "202-011", "2026-11 ", "+026-11",
            "2026-1a",
        ] {
            assert!(
                matches!(Period::parse(bad), Err(PeriodError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(Period::parse("1969-12"), Err(PeriodError::OutOfRange));
    }

    proptest! {
        #[test]
        fn every_instant_lies_inside_its_period(ms in 0i64..253_402_300_799_999) {
            let p = Period::containing(at(ms)).unwrap();
            prop_assert!(p.start() <= at(ms));
            if let Ok(next) = p.next() {
                prop_assert!(at(ms) < next.start());
            }
            prop_assert_eq!(Period::parse(&p.to_string()).unwrap(), p);
        }
    }
}
