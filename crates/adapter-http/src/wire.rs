//! The usage body: JSON in, [`ProviderUsage`] out, every field checked.

use serde::Deserialize;
use serde_json::Value;
use spendgate_domain::{Micros, Timestamp, TokenCounts};
use spendgate_ports::ProviderUsage;

/// The provider's answer as sent; unknown fields are ignored, missing or
/// duplicate ones rejected. Each value is checked below, so that every
/// reason names its field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageBody {
    cost_usd: Value,
    model: Value,
    prompt_tokens: Value,
    completion_tokens: Value,
    completed_at: Value,
}

/// Parses a `200` body; `Err` is the reason it is not valid usage.
pub(crate) fn parse_usage(body: &[u8]) -> Result<ProviderUsage, String> {
    // serde would also read a struct from a JSON array, by position.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("usage body is not a JSON object".to_owned());
    }
    let body: UsageBody =
        serde_json::from_slice(body).map_err(|e| format!("usage body is not valid: {e}"))?;
    let cost = parse_cost(&body.cost_usd)?;
    let model = string_field("model", body.model)?;
    if model.trim().is_empty() {
        return Err("`model` is empty".to_owned());
    }
    let prompt = token_count("promptTokens", &body.prompt_tokens)?;
    let completion = token_count("completionTokens", &body.completion_tokens)?;
    let completed_at = parse_rfc3339(&string_field("completedAt", body.completed_at)?)?;
    Ok(ProviderUsage {
        cost,
        model,
        tokens: TokenCounts { prompt, completion },
        completed_at,
    })
}

fn string_field(name: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!(
            "`{name}` must be a string, got {}",
            json_type(&other)
        )),
    }
}

/// A non-negative integer that fits a `u64`; `1.0`, `1e3` and `"12"` are
/// not token counts.
fn token_count(name: &str, value: &Value) -> Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("`{name}` must be a non-negative integer, got {value}"))
}

/// A decimal string is exact (at most six decimals); a JSON number is
/// rounded to the nearest micro-USD.
fn parse_cost(cost: &Value) -> Result<Micros, String> {
    match cost {
        Value::String(text) => Micros::parse_usd(text)
            .map_err(|e| format!("`costUsd` {text:?} is not a USD amount: {e}")),
        Value::Number(number) => {
            let usd = number
                .as_f64()
                .ok_or_else(|| format!("`costUsd` {number} is not a finite number"))?;
            Micros::from_usd_f64(usd)
                .map_err(|e| format!("`costUsd` {number} is not a USD amount: {e}"))
        }
        other => Err(format!(
            "`costUsd` must be a decimal string or a number, got {}",
            json_type(other)
        )),
    }
}

fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`completedAt` {text:?} is not an RFC 3339 timestamp: {e}"))?;
    Timestamp::from_millis(parsed.timestamp_millis())
        .map_err(|e| format!("`completedAt` {text:?} is out of range: {e}"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
