//! Money as integer micro-USD.
//!
//! Every amount spendgate stores or compares is a [`Micros`]: a non-negative
//! count of millionths of a US dollar. Integers keep sums exact across
//! millions of calls; floats enter only through [`Micros::from_usd_f64`],
//! which rejects what cannot be money.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-USD per US dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Digits after the decimal point that a USD string may carry.
const MAX_DECIMALS: usize = 6;

/// A non-negative amount of money in micro-USD (1 USD = 1,000,000), at most
/// [`Micros::MAX`].
///
/// The range stops at 2^53 − 1 (about 9 billion USD) so that every amount
/// and every sum check is exact in a double: Redis' Lua, JSON clients in
/// other languages. Arithmetic is checked: leaving the range is a
/// [`MoneyError`], never a wrap or a clamp.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Micros(i64);

/// Why a value could not become (or stay) [`Micros`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The amount is below zero; money in spendgate never is.
    #[error("amount {0} is negative")]
    Negative(String),
    /// The float is NaN or infinite.
    #[error("amount is not a finite number")]
    NotFinite,
    /// The amount does not fit in an `i64` of micro-USD.
    #[error("amount overflows the micro-USD range")]
    Overflow,
    /// The USD text is not a plain decimal (`12`, `0.07`, `0.000001`).
    #[error("malformed USD amount {0:?}: expected digits with at most 6 decimals")]
    Malformed(String),
}

impl Micros {
    /// Zero dollars.
    pub const ZERO: Micros = Micros(0);
    /// The largest amount: 2^53 − 1 micro-USD.
    pub const MAX: Micros = Micros((1 << 53) - 1);

    /// Integer micro-USD.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] when `micros < 0`, [`MoneyError::Overflow`]
    /// above [`Micros::MAX`].
    pub fn new(micros: i64) -> Result<Self, MoneyError> {
        if micros < 0 {
            return Err(MoneyError::Negative(micros.to_string()));
        }
        if micros > Self::MAX.0 {
            return Err(MoneyError::Overflow);
        }
        Ok(Self(micros))
    }

    /// Whole dollars; every `u32` fits (4.3 billion USD < [`Micros::MAX`]).
    pub fn from_usd(dollars: u32) -> Self {
        Self(i64::from(dollars) * MICROS_PER_USD)
    }

    /// Parses a USD decimal string: digits, optionally a point and 1 to 6
    /// more digits. Signs, exponents, spaces and empty strings are rejected.
    ///
    /// # Errors
    /// [`MoneyError::Malformed`] for anything but that shape,
    /// [`MoneyError::Overflow`] when the value does not fit.
    pub fn parse_usd(text: &str) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed(text.to_owned());
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) {
            return Err(malformed());
        }
        let mut micros: i64 = 0;
        for digit in whole.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                .ok_or(MoneyError::Overflow)?;
        }
        micros = micros
            .checked_mul(MICROS_PER_USD)
            .ok_or(MoneyError::Overflow)?;
        if let Some(fraction) = fraction {
            if !all_digits(fraction) || fraction.len() > MAX_DECIMALS {
                return Err(malformed());
            }
            let mut frac: i64 = 0;
            for digit in fraction.bytes() {
                frac = frac * 10 + i64::from(digit - b'0');
            }
            for _ in fraction.len()..MAX_DECIMALS {
                frac *= 10;
            }
            micros = micros.checked_add(frac).ok_or(MoneyError::Overflow)?;
        }
        Self::new(micros)
    }

    /// Converts a float amount of USD, rounding to the nearest micro-USD.
    ///
    /// Floats are inexact, so this is the only place they may enter.
    ///
    /// # Errors
    /// [`MoneyError::NotFinite`] for NaN and infinities,
    /// [`MoneyError::Negative`] below zero, [`MoneyError::Overflow`] past
    /// the `i64` range.
    pub fn from_usd_f64(usd: f64) -> Result<Self, MoneyError> {
        if !usd.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if usd < 0.0 {
            return Err(MoneyError::Negative(usd.to_string()));
        }
        let micros = (usd * 1_000_000.0).round();
        // 2^53 is exactly representable; anything at or above it overflows.
        if micros >= 9_007_199_254_740_992.0 {
            return Err(MoneyError::Overflow);
        }
        #[allow(clippy::cast_possible_truncation)] // range checked just above
        let micros = micros as i64;
        Self::new(micros)
    }

    /// The raw micro-USD count.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] past [`Micros::MAX`] (the sum of two
    /// amounts always fits an `i64`).
    pub fn checked_add(self, other: Micros) -> Result<Micros, MoneyError> {
        Micros::new(self.0 + other.0)
    }

    /// `self - other`, which must not go below zero.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] when `other > self`: a counter that would go
    /// negative is drift to report, not to clamp.
    pub fn checked_sub(self, other: Micros) -> Result<Micros, MoneyError> {
        if other.0 > self.0 {
            return Err(MoneyError::Negative(format!("{} - {}", self.0, other.0)));
        }
        Ok(Micros(self.0 - other.0))
    }

    /// `self - other`, or zero when `other` is larger.
    ///
    /// Only for *reporting* headroom (`remaining`), never for counters.
    pub fn headroom_after(self, used: Micros) -> Micros {
        Micros(self.0.saturating_sub(used.0).max(0))
    }
}

impl TryFrom<i64> for Micros {
    type Error = MoneyError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Micros::new(value)
    }
}

impl From<Micros> for i64 {
    fn from(value: Micros) -> Self {
        value.0
    }
}

impl FromStr for Micros {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Micros::parse_usd(s)
    }
}

/// Formats as a USD decimal without trailing zeros (`0.07`, `12`), so that
/// [`Micros::parse_usd`] reads back exactly what was written.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_USD;
        let frac = self.0 % MICROS_PER_USD;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_usd_decimals() {
        assert_eq!(Micros::parse_usd("0.07").unwrap().get(), 70_000);
        assert_eq!(Micros::parse_usd("12").unwrap().get(), 12_000_000);
        assert_eq!(Micros::parse_usd("0.000001").unwrap().get(), 1);
        assert_eq!(Micros::parse_usd("007.5").unwrap().get(), 7_500_000);
    }

    #[test]
    fn rejects_malformed_usd_text() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "1E3",
            " 1",
            "1 ",
            "0.0000001",
            "1,5",
            "0x10",
            "1.2.3",
            "NaN",
            "inf",
            "١",
        ] {
            assert!(
                matches!(Micros::parse_usd(bad), Err(MoneyError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn rejects_usd_text_past_the_range() {
        assert_eq!(
            Micros::parse_usd("9223372036855"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(Micros::parse_usd("9007199254.740991").unwrap(), Micros::MAX);
        assert_eq!(
            Micros::parse_usd("9007199254.740992"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(Micros::new(1 << 53), Err(MoneyError::Overflow));
        assert_eq!(
            Micros::parse_usd("99999999999999999999999"),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn rejects_negative_integer_micros() {
        assert!(matches!(Micros::new(-1), Err(MoneyError::Negative(_))));
        assert!(matches!(
            Micros::try_from(i64::MIN),
            Err(MoneyError::Negative(_))
        ));
    }

    #[test]
    fn float_conversion_rejects_what_is_not_money() {
        assert_eq!(Micros::from_usd_f64(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(
            Micros::from_usd_f64(f64::INFINITY),
            Err(MoneyError::NotFinite)
        );
        assert_eq!(
            Micros::from_usd_f64(f64::NEG_INFINITY),
            Err(MoneyError::NotFinite)
        );
        assert!(matches!(
            Micros::from_usd_f64(-0.01),
            Err(MoneyError::Negative(_))
        ));
        assert_eq!(Micros::from_usd_f64(1e13), Err(MoneyError::Overflow));
        assert_eq!(Micros::from_usd_f64(0.07).unwrap().get(), 70_000);
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(
            Micros::MAX.checked_add(Micros(1)),
            Err(MoneyError::Overflow)
        );
        assert!(matches!(
            Micros(1).checked_sub(Micros(2)),
            Err(MoneyError::Negative(_))
        ));
        assert_eq!(Micros(5).headroom_after(Micros(7)), Micros::ZERO);
    }

    proptest! {
        #[test]
        fn display_round_trips_through_parse(m in 0i64..=Micros::MAX.get()) {
            let money = Micros::new(m).unwrap();
            prop_assert_eq!(Micros::parse_usd(&money.to_string()).unwrap(), money);
        }
    }
}
