//! Model prices and request estimates.
//!
//! An estimate is what `reserve` holds before the call. It is computed once
//! per request, in `u128`, and rounded up once, so splitting a request into
//! components can never round the budget away.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::ModelAlias;
use crate::money::Micros;

/// Prices of one model alias, in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Price of one million prompt (input) tokens.
    pub input_per_million: Micros,
    /// Price of one million completion (output) tokens.
    pub output_per_million: Micros,
}

impl ModelPrice {
    /// A price from raw micro-USD values; both are non-negative by type.
    pub const fn new(input_per_million: Micros, output_per_million: Micros) -> Self {
        Self {
            input_per_million,
            output_per_million,
        }
    }
}

/// A multiplier applied to tool-using calls, in thousandths (2000 = 2×).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multiplier(u32);

impl Multiplier {
    /// No change (1×).
    pub const ONE: Multiplier = Multiplier(1000);
    /// The default for tool-using calls (2×).
    pub const DEFAULT_TOOL_USE: Multiplier = Multiplier(2000);

    /// A multiplier in thousandths; must be at least 1× so tool use never
    /// makes a call cheaper, and at most 1000×.
    ///
    /// # Errors
    /// [`PricingError::InvalidMultiplier`] outside `1000..=1_000_000`.
    pub fn from_per_mille(per_mille: u32) -> Result<Self, PricingError> {
        if !(1000..=1_000_000).contains(&per_mille) {
            return Err(PricingError::InvalidMultiplier(per_mille));
        }
        Ok(Self(per_mille))
    }

    /// The multiplier in thousandths.
    pub const fn per_mille(self) -> u32 {
        self.0
    }
}

/// Why a price or an estimate could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PricingError {
    /// No price is known for the alias; spendgate never guesses one.
    #[error("unknown model alias {0:?}")]
    UnknownAlias(String),
    /// The estimate exceeds the micro-USD range.
    #[error("estimate overflows the micro-USD range")]
    Overflow,
    /// The multiplier is below 1× or above 1000×.
    #[error("tool-use multiplier {0}‰ is outside 1000..=1000000")]
    InvalidMultiplier(u32),
}

/// The five aliases spendgate ships prices for, with (input, output) prices
/// per million tokens in micro-USD.
pub const DEFAULT_PRICES: [(&str, i64, i64); 5] = [
    ("cheap", 150_000, 600_000),
    ("fast-code", 800_000, 2_400_000),
    ("reviewer", 1_500_000, 6_000_000),
    ("reasoning", 15_000_000, 60_000_000),
    ("native", 3_000_000, 12_000_000),
];

/// Token counts of one request (or of a finished call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
}

/// Per-community replacements of alias prices.
pub type PricingOverrides = BTreeMap<ModelAlias, ModelPrice>;

/// Prices for every known alias plus the tool-use multiplier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    prices: BTreeMap<ModelAlias, ModelPrice>,
    tool_use: Multiplier,
}

impl Default for PriceTable {
    fn default() -> Self {
        let prices = DEFAULT_PRICES
            .iter()
            .filter_map(|(alias, input, output)| {
                Some((
                    ModelAlias::parse(*alias).ok()?,
                    ModelPrice::new(Micros::new(*input).ok()?, Micros::new(*output).ok()?),
                ))
            })
            .collect();
        Self {
            prices,
            tool_use: Multiplier::DEFAULT_TOOL_USE,
        }
    }
}

impl PriceTable {
    /// The table with `overrides` replacing the prices of their aliases.
    ///
    /// An override may also price an alias the defaults lack: a community
    /// can be given a model of its own.
    #[must_use]
    pub fn with_overrides(mut self, overrides: &PricingOverrides) -> Self {
        for (alias, price) in overrides {
            self.prices.insert(alias.clone(), *price);
        }
        self
    }

    /// The table with another tool-use multiplier.
    #[must_use]
    pub fn with_tool_use_multiplier(mut self, multiplier: Multiplier) -> Self {
        self.tool_use = multiplier;
        self
    }

    /// The price of an alias.
    ///
    /// # Errors
    /// [`PricingError::UnknownAlias`] when the table has none.
    pub fn price(&self, alias: &ModelAlias) -> Result<ModelPrice, PricingError> {
        self.prices
            .get(alias)
            .copied()
            .ok_or_else(|| PricingError::UnknownAlias(alias.to_string()))
    }

    /// Estimated cost of one request:
    /// `ceil((in × in_price + out × out_price) × multiplier / 10⁶)`.
    ///
    /// # Errors
    /// [`PricingError::UnknownAlias`] for an alias without a price,
    /// [`PricingError::Overflow`] when the estimate does not fit.
    pub fn estimate(
        &self,
        alias: &ModelAlias,
        tokens: TokenCounts,
        uses_tools: bool,
    ) -> Result<Micros, PricingError> {
        let price = self.price(alias)?;
        let multiplier = if uses_tools {
            self.tool_use
        } else {
            Multiplier::ONE
        };
        let per_million =
            |n: u64, p: Micros| -> u128 { u128::from(n) * u128::from(p.get().unsigned_abs()) };
        // u64 × i64 fits u128 twice over; only the multiplier can overflow.
        let numerator = (per_million(tokens.prompt, price.input_per_million)
            + per_million(tokens.completion, price.output_per_million))
        .checked_mul(u128::from(multiplier.per_mille()))
        .ok_or(PricingError::Overflow)?;
        let micros = numerator.div_ceil(1_000_000 * 1000);
        let micros = i64::try_from(micros).map_err(|_| PricingError::Overflow)?;
        Micros::new(micros).map_err(|_| PricingError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(a: &str) -> ModelAlias {
        ModelAlias::parse(a).unwrap()
    }

    fn tokens(prompt: u64, completion: u64) -> TokenCounts {
        TokenCounts { prompt, completion }
    }

    #[test]
    fn default_prices_match_the_published_table() {
        let table = PriceTable::default();
        let reasoning = table.price(&alias("reasoning")).unwrap();
        assert_eq!(reasoning.input_per_million.get(), 15_000_000);
        assert_eq!(reasoning.output_per_million.get(), 60_000_000);
        assert_eq!(
            table
                .price(&alias("cheap"))
                .unwrap()
                .output_per_million
                .get(),
            600_000
        );
    }

    #[test]
    fn estimate_rounds_up_once_per_request() {
        let table = PriceTable::default();
        // 1 prompt token of `cheap` costs 0.15 micros, 1 completion 0.6: the
        // sum 0.75 rounds up to 1 (per-component rounding would give 2).
        assert_eq!(
            table
                .estimate(&alias("cheap"), tokens(1, 1), false)
                .unwrap()
                .get(),
            1
        );
        // 1000 in + 500 out on reviewer: 1500 + 3000 = 4500 micros.
        assert_eq!(
            table
                .estimate(&alias("reviewer"), tokens(1000, 500), false)
                .unwrap()
                .get(),
            4500
        );
        assert_eq!(
            table
                .estimate(&alias("cheap"), tokens(0, 0), false)
                .unwrap(),
            Micros::ZERO
        );
    }

    #[test]
    fn tool_use_doubles_by_default_and_is_configurable() {
        let table = PriceTable::default();
        assert_eq!(
            table
                .estimate(&alias("reviewer"), tokens(1000, 500), true)
                .unwrap()
                .get(),
            9000
        );
        let table = table.with_tool_use_multiplier(Multiplier::from_per_mille(1500).unwrap());
        assert_eq!(
            table
                .estimate(&alias("reviewer"), tokens(1000, 500), true)
                .unwrap()
                .get(),
            6750
        );
    }

    #[test]
    fn multiplier_below_one_or_absurd_is_rejected() {
        assert_eq!(
            Multiplier::from_per_mille(999),
            Err(PricingError::InvalidMultiplier(999))
        );
        assert_eq!(
            Multiplier::from_per_mille(1_000_001),
            Err(PricingError::InvalidMultiplier(1_000_001))
        );
    }

    #[test]
    fn unknown_alias_is_an_error_not_a_fallback() {
        assert_eq!(
            PriceTable::default().estimate(&alias("gpt-9"), tokens(1, 1), false),
            Err(PricingError::UnknownAlias("gpt-9".into()))
        );
    }

    #[test]
    fn override_replaces_an_alias_price() {
        let overrides = PricingOverrides::from([(
            alias("cheap"),
            ModelPrice::new(Micros::new(1_000_000).unwrap(), Micros::ZERO),
        )]);
        let table = PriceTable::default().with_overrides(&overrides);
        assert_eq!(
            table
                .estimate(&alias("cheap"), tokens(10, 10), false)
                .unwrap()
                .get(),
            10
        );
    }

    #[test]
    fn estimate_past_the_range_is_an_overflow() {
        let table = PriceTable::default();
        assert_eq!(
            table.estimate(&alias("reasoning"), tokens(u64::MAX, u64::MAX), true),
            Err(PricingError::Overflow)
        );
    }
}
