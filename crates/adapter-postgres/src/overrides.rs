//! The JSON shapes of the per-community override columns, and their strict
//! parsing into domain types.
//!
//! ## `tier_overrides`
//! An object from tier number (a decimal string, `"1"` to `"9"`, no sign or
//! leading zero) to access level (`"free"`, `"pro"` or `"enterprise"`,
//! lower case):
//!
//! ```json
//! {"4": "enterprise", "7": "pro"}
//! ```
//!
//! ## `pricing_overrides`
//! An object from model alias to its prices in integer micro-USD per
//! million tokens; both fields are required and no other field is allowed:
//!
//! ```json
//! {"cheap": {"input_per_million": 150000, "output_per_million": 600000}}
//! ```
//!
//! An alias is accepted only if it is a valid [`ModelAlias`] **and** one of
//! the aliases spendgate ships prices for ([`DEFAULT_PRICES`]: `cheap`,
//! `fast-code`, `reviewer`, `reasoning`, `native`). Access levels only ever
//! allow those five, so a price for any other alias could never be used: it
//! is almost certainly a typo (`reasonning`), and a typo in a price must be
//! reported, not silently ignored.
//!
//! ## Both
//! SQL `NULL` and JSON `null` mean "no overrides". Documents longer than
//! [`MAX_OVERRIDE_BYTES`] (as JSON text) are refused unread. Anything else
//! that does not fit these shapes — wrong JSON types, out-of-range tiers,
//! unknown levels or aliases, negative, fractional, exponent-form or
//! out-of-range prices, malformed JSON text (SQLite does not check it) — is a
//! [`RepoError::BadData`] naming the community and the JSON path at fault.
//! Nothing is dropped silently.

use serde_json::{Map, Value};
use spendgate_domain::pricing::DEFAULT_PRICES;
use spendgate_domain::{
    AccessLevel, Micros, ModelAlias, ModelPrice, PricingOverrides, Tier, TierOverrides,
};
use spendgate_ports::RepoError;

/// The largest override document read, in bytes of JSON text.
pub const MAX_OVERRIDE_BYTES: usize = 64 * 1024;

/// Column name of the tier overrides.
pub const TIER_OVERRIDES: &str = "tier_overrides";
/// Column name of the pricing overrides.
pub const PRICING_OVERRIDES: &str = "pricing_overrides";

const INPUT: &str = "input_per_million";
const OUTPUT: &str = "output_per_million";

fn bad(community: &str, field: impl Into<String>, reason: impl Into<String>) -> RepoError {
    RepoError::BadData {
        community: community.to_owned(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a stored document: size check, then JSON parse; `None` for SQL
/// `NULL` or JSON `null`.
fn document(
    community: &str,
    field: &str,
    text: Option<&str>,
) -> Result<Option<Map<String, Value>>, RepoError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if text.len() > MAX_OVERRIDE_BYTES {
        return Err(bad(
            community,
            field,
            format!(
                "document is {} bytes; at most {MAX_OVERRIDE_BYTES} are read",
                text.len()
            ),
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(community, field, format!("not valid JSON: {e}")))?;
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(bad(
            community,
            field,
            format!("expected an object, found {}", type_name(&other)),
        )),
    }
}

/// Parses a stored `tier_overrides` document.
///
/// # Errors
/// [`RepoError::BadData`] naming `community` and the path at fault.
pub fn parse_tier_overrides(
    community: &str,
    text: Option<&str>,
) -> Result<TierOverrides, RepoError> {
    let mut overrides = TierOverrides::new();
    let Some(map) = document(community, TIER_OVERRIDES, text)? else {
        return Ok(overrides);
    };
    for (key, value) in map {
        let path = format!("{TIER_OVERRIDES}.{key}");
        let canonical = key.parse::<u8>().ok().filter(|n| n.to_string() == key);
        let tier = canonical
            .ok_or_else(|| {
                bad(
                    community,
                    &path,
                    format!("tier {key:?} is not a number from 1 to 9"),
                )
            })
            .and_then(|n| {
                Tier::new(i64::from(n)).map_err(|e| bad(community, &path, e.to_string()))
            })?;
        let Value::String(level) = &value else {
            return Err(bad(
                community,
                &path,
                format!(
                    "expected an access level string, found {}",
                    type_name(&value)
                ),
            ));
        };
        let level: AccessLevel = level
            .parse()
            .map_err(|e: spendgate_domain::TierError| bad(community, &path, e.to_string()))?;
        overrides.insert(tier, level);
    }
    Ok(overrides)
}

/// Whether pricing overrides may name `alias` (see the module docs).
pub fn is_known_alias(alias: &str) -> bool {
    DEFAULT_PRICES.iter().any(|(known, _, _)| *known == alias)
}

fn price_field(
    community: &str,
    path: &str,
    object: &Map<String, Value>,
    name: &str,
) -> Result<Micros, RepoError> {
    let path = format!("{path}.{name}");
    let value = object
        .get(name)
        .ok_or_else(|| bad(community, &path, "missing"))?;
    let Value::Number(number) = value else {
        return Err(bad(
            community,
            &path,
            format!(
                "expected an integer of micro-USD, found {}",
                type_name(value)
            ),
        ));
    };
    if let Some(micros) = number.as_i64() {
        return Micros::new(micros).map_err(|e| bad(community, &path, e.to_string()));
    }
    let reason = if number.is_u64() {
        format!("{number} overflows the micro-USD range")
    } else {
        format!("{number} is not an integer of micro-USD")
    };
    Err(bad(community, &path, reason))
}

/// Parses a stored `pricing_overrides` document.
///
/// # Errors
/// [`RepoError::BadData`] naming `community` and the path at fault.
pub fn parse_pricing_overrides(
    community: &str,
    text: Option<&str>,
) -> Result<PricingOverrides, RepoError> {
    let mut overrides = PricingOverrides::new();
    let Some(map) = document(community, PRICING_OVERRIDES, text)? else {
        return Ok(overrides);
    };
    for (key, value) in map {
        let path = format!("{PRICING_OVERRIDES}.{key}");
        let alias =
            ModelAlias::parse(key.as_str()).map_err(|e| bad(community, &path, e.to_string()))?;
        if !is_known_alias(alias.as_str()) {
            return Err(bad(
                community,
                &path,
                format!("unknown model alias {key:?}"),
            ));
        }
        let Value::Object(object) = &value else {
            return Err(bad(
                community,
                &path,
                format!("expected an object, found {}", type_name(&value)),
            ));
        };
        if let Some(extra) = object.keys().find(|k| *k != INPUT && *k != OUTPUT) {
            return Err(bad(community, format!("{path}.{extra}"), "unknown field"));
        }
        let price = ModelPrice::new(
            price_field(community, &path, object, INPUT)?,
            price_field(community, &path, object, OUTPUT)?,
        );
        overrides.insert(alias, price);
    }
    Ok(overrides)
}

/// The JSON document stored for `overrides`.
pub fn tier_overrides_json(overrides: &TierOverrides) -> Value {
    Value::Object(
        overrides
            .iter()
            .map(|(tier, level)| (tier.get().to_string(), Value::from(level.as_str())))
            .collect(),
    )
}

/// The JSON document stored for `overrides`.
///
/// # Errors
/// [`RepoError::InvalidInput`] for an alias [`parse_pricing_overrides`]
/// would refuse, so nothing is written that cannot be read back.
pub fn pricing_overrides_json(overrides: &PricingOverrides) -> Result<Value, RepoError> {
    let mut map = Map::new();
    for (alias, price) in overrides {
        if !is_known_alias(alias.as_str()) {
            return Err(RepoError::InvalidInput(format!(
                "pricing override for unknown model alias {alias:?}"
            )));
        }
        let mut object = Map::new();
        object.insert(INPUT.into(), Value::from(price.input_per_million.get()));
        object.insert(OUTPUT.into(), Value::from(price.output_per_million.get()));
        map.insert(alias.to_string(), Value::Object(object));
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let tiers = TierOverrides::from([(Tier::new(4).unwrap(), AccessLevel::Enterprise)]);
        let text = tier_overrides_json(&tiers).to_string();
        assert_eq!(text, r#"{"4":"enterprise"}"#);
        assert_eq!(parse_tier_overrides("c", Some(&text)).unwrap(), tiers);

        let prices = PricingOverrides::from([(
            ModelAlias::parse("cheap").unwrap(),
            ModelPrice::new(Micros::new(150_000).unwrap(), Micros::new(600_000).unwrap()),
        )]);
        let text = pricing_overrides_json(&prices).unwrap().to_string();
        assert_eq!(parse_pricing_overrides("c", Some(&text)).unwrap(), prices);
    }

    #[test]
    fn null_means_none() {
        assert!(parse_tier_overrides("c", None).unwrap().is_empty());
        assert!(parse_tier_overrides("c", Some("null")).unwrap().is_empty());
        assert!(
            parse_pricing_overrides("c", Some("null"))
                .unwrap()
                .is_empty()
        );
        assert!(parse_pricing_overrides("c", Some("{}")).unwrap().is_empty());
    }
}
