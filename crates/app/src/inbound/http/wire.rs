//! The JSON the API speaks: request bodies as they arrive (every field
//! optional, so that a missing field is a 422 naming it rather than a
//! serde message) and the answers.
//!
//! Money crosses the wire as a decimal USD string exact to the micro-dollar
//! (`"0.012345"`, parsed by [`Micros::parse_usd`]: a seventh decimal is
//! refused, never rounded) or as integer micro-USD in the `*_micros`
//! fields. Answers carry both forms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spendgate_domain::{Micros, Ttl, UserId, UserSpend};
use utoipa::ToSchema;

use super::problem::ApiError;

/// `amount` as a USD decimal with all six decimals (`"0.012345"`,
/// `"12.000000"`), which [`Micros::parse_usd`] reads back exactly.
pub fn usd(amount: Micros) -> String {
    let micros = amount.get();
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `amount` in micro-USD.
pub fn micros_i64(amount: Micros) -> i64 {
    amount.get()
}

/// One amount given either as `<name>_usd` or `<name>_micros`: exactly one
/// when `required`, at most one otherwise.
pub(crate) fn money(
    name: &str,
    usd_text: Option<&str>,
    micros: Option<i64>,
) -> Result<Option<Micros>, ApiError> {
    match (usd_text, micros) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            name,
            format!("give either {name}_usd or {name}_micros, not both"),
        )),
        (Some(text), None) => Micros::parse_usd(text)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("{name}_usd"), e)),
        (None, Some(m)) => Micros::new(m)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("{name}_micros"), e)),
        (None, None) => Ok(None),
    }
}

/// [`money`], for an amount that must be there.
pub(crate) fn required_money(
    name: &str,
    usd_text: Option<&str>,
    micros: Option<i64>,
) -> Result<Micros, ApiError> {
    money(name, usd_text, micros)?
        .ok_or_else(|| ApiError::invalid(name, format!("{name}_usd or {name}_micros is required")))
}

/// A required field, or a 422 naming it.
pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

/// A TTL in milliseconds, checked against the supported range.
pub(crate) fn ttl(field: &str, ms: i64) -> Result<Ttl, ApiError> {
    Ttl::from_millis(ms).map_err(|e| ApiError::invalid(field, e))
}

/// `POST …/reservations`: a call to reserve budget for. Either token counts
/// (`prompt_tokens` and `max_completion_tokens`, priced with the
/// community's prices) or the caller's own estimate (`estimate_usd` or
/// `estimate_micros`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    /// Who makes the call.
    #[schema(example = "alice")]
    pub user: Option<String>,
    /// The model alias to call.
    #[schema(example = "cheap")]
    pub model: Option<String>,
    /// The community's tier, 1 to 9.
    #[schema(example = 1)]
    pub tier: Option<i64>,
    /// Prompt tokens (token-priced reserve).
    pub prompt_tokens: Option<u64>,
    /// The most completion tokens the call may produce (token-priced
    /// reserve).
    pub max_completion_tokens: Option<u64>,
    /// Whether the call uses tools (the tool-use multiplier applies);
    /// false by default.
    pub tool_use: Option<bool>,
    /// The caller's own estimate, USD decimal string.
    #[schema(example = "0.012345")]
    pub estimate_usd: Option<String>,
    /// The caller's own estimate, micro-USD.
    pub estimate_micros: Option<i64>,
    /// The hold's lifetime in ms; the server default when absent.
    pub ttl_ms: Option<i64>,
    /// A trace id carried into the usage log (at most 256 bytes).
    pub trace_id: Option<String>,
}

/// `POST …/finalize`: what the call used. Either the provider's cost
/// (`actual_usd` or `actual_micros`, optionally with the token counts for
/// the usage log) or token counts alone (`prompt_tokens` and
/// `completion_tokens`, costed with the hold's model prices).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinalizeBody {
    /// What the call cost, USD decimal string.
    #[schema(example = "0.000425")]
    pub actual_usd: Option<String>,
    /// What the call cost, micro-USD.
    pub actual_micros: Option<i64>,
    /// Prompt tokens used.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens used.
    pub completion_tokens: Option<u64>,
    /// A trace id carried into the usage log (at most 256 bytes).
    pub trace_id: Option<String>,
    /// The hold's model, as the reserve answered it. Needed with token
    /// counts when the store has lost the hold; otherwise the store's
    /// record is used.
    #[schema(example = "cheap")]
    pub model: Option<String>,
    /// The hold's period (`YYYY-MM`), as the reserve answered it: where the
    /// cost is charged if the store has lost the hold (else the current
    /// period).
    #[schema(example = "2026-12")]
    pub period: Option<String>,
    /// When the hold was made (`created_at_ms` of the reserve's answer):
    /// tells this use of the key from an earlier one if the store has lost
    /// the hold.
    pub created_at_ms: Option<i64>,
}

/// `POST …/cancel` and `…/hand-over`: an optional body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    /// A trace id carried into the usage log (at most 256 bytes).
    pub trace_id: Option<String>,
}

/// `POST …/extend`: the hold's new lifetime from now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// Milliseconds from now; the expiry never moves earlier.
    #[schema(example = 300000)]
    pub ttl_ms: Option<i64>,
}

/// `PUT …/budget`: the community's monthly limit and optional per-user
/// cap. A community without configuration gets one, with AI enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// The monthly limit, USD decimal string.
    #[schema(example = "10.00")]
    pub limit_usd: Option<String>,
    /// The monthly limit, micro-USD.
    pub limit_micros: Option<i64>,
    /// The most one user may spend, USD decimal string.
    pub per_user_cap_usd: Option<String>,
    /// The same in micro-USD.
    pub per_user_cap_micros: Option<i64>,
}

/// `PUT …/tiers`: the community's tier overrides, replacing the old ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TiersBody {
    /// Tier (`"1"` to `"9"`) → access level (`free`, `pro`, `enterprise`).
    #[schema(example = json!({"2": "enterprise"}))]
    pub overrides: Option<BTreeMap<String, String>>,
}

/// A hold as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HoldView {
    /// The community charged.
    pub community: String,
    /// Who makes the call.
    pub user: String,
    /// The call's idempotency key.
    pub key: String,
    /// The call's id, unique across communities, users and reuses of the
    /// key: pass it to the provider with the call, so that reconciliation
    /// can ask for this call's usage if the stream drops.
    #[schema(example = "sgc1_5f0c6a524a3e4b8e9d631b2f3c4d5e6f")]
    pub call_id: String,
    /// The model alias the estimate was priced for.
    pub model: String,
    /// What is held, USD.
    pub estimate_usd: String,
    /// What is held, micro-USD.
    pub estimate_micros: i64,
    /// The period (`YYYY-MM`) the cost goes to.
    pub period: String,
    /// When the hold was made, Unix ms.
    pub created_at_ms: i64,
    /// From this instant on (Unix ms) the reaper may release it.
    pub expires_at_ms: i64,
}

/// The answer to an accepted reserve (201), or to its replay (200,
/// `replay: true`, the original hold, no `remaining`/`limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReservationView {
    /// The hold.
    #[serde(flatten)]
    pub hold: HoldView,
    /// Community headroom left after this hold, USD (`null` on a replay).
    pub remaining_usd: Option<String>,
    /// The same in micro-USD.
    pub remaining_micros: Option<i64>,
    /// The community limit, USD (`null` on a replay).
    pub limit_usd: Option<String>,
    /// The same in micro-USD.
    pub limit_micros: Option<i64>,
    /// This reserve crossed the warning threshold (once per period).
    pub warning: bool,
    /// This is a replay of an earlier reserve with the same key.
    pub replay: bool,
}

/// What a finalize or cancel did (200; 202 when `result` is `queued`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SettlementView {
    /// The community.
    pub community: String,
    /// The user.
    pub user: String,
    /// The key.
    pub key: String,
    /// `finalized` (the hold was live), `late_finalized` (it had been
    /// reaped), `already_finalized` (a replay: the first actual is
    /// answered), `committed_without_hold`, or `queued` (the store could
    /// not answer; the cost is kept and applied when it is back).
    pub result: String,
    /// The committed cost, USD.
    pub actual_usd: String,
    /// The same in micro-USD.
    pub actual_micros: i64,
    /// The estimate that was released, USD (absent on a replay or queued).
    pub estimate_usd: Option<String>,
    /// The same in micro-USD.
    pub estimate_micros: Option<i64>,
    /// How far the period stands past its limit after this, USD.
    pub overshoot_usd: Option<String>,
    /// The same in micro-USD.
    pub overshoot_micros: Option<i64>,
    /// The period the cost went to (`YYYY-MM`).
    pub period: Option<String>,
    /// The call was settled before; nothing changed.
    pub replay: bool,
}

/// What the store knows of one call (`GET …/reservations/{user}/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HoldStateView {
    /// The community.
    pub community: String,
    /// The user.
    pub user: String,
    /// The key.
    pub key: String,
    /// `held` (unsettled), `finalized` (finalized or cancelled: see
    /// `actual_*`) or `reaped` (released by the reaper; a finalize still
    /// commits).
    pub state: String,
    /// The hold, when `held` or `reaped`.
    pub hold: Option<HoldView>,
    /// The committed cost, USD, when `finalized` (0 for a cancel).
    pub actual_usd: Option<String>,
    /// The same in micro-USD.
    pub actual_micros: Option<i64>,
}

/// The answer to an extend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExtendView {
    /// The community.
    pub community: String,
    /// The user.
    pub user: String,
    /// The key.
    pub key: String,
    /// The hold's expiry now, Unix ms.
    pub expires_at_ms: i64,
}

/// The answer to a hand-over (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HandoverView {
    /// The community.
    pub community: String,
    /// The user.
    pub user: String,
    /// The key.
    pub key: String,
    /// Always true: reconciliation asks the provider and finalizes later.
    pub handed_over: bool,
}

/// One user's sums in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserSpendView {
    /// The user.
    pub user: String,
    /// Actual cost of the user's finished calls, USD.
    pub committed_usd: String,
    /// The same in micro-USD.
    pub committed_micros: i64,
    /// Estimates of the user's live holds, USD.
    pub reserved_usd: String,
    /// The same in micro-USD.
    pub reserved_micros: i64,
}

/// A community's budget for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BudgetView {
    /// The community.
    pub community: String,
    /// The period shown (`YYYY-MM`).
    pub period: String,
    /// The monthly limit, USD (`null` when the store has none).
    pub limit_usd: Option<String>,
    /// The same in micro-USD.
    pub limit_micros: Option<i64>,
    /// The per-user cap, USD (`null` when none).
    pub per_user_cap_usd: Option<String>,
    /// The same in micro-USD.
    pub per_user_cap_micros: Option<i64>,
    /// Actual cost of finished calls, USD.
    pub committed_usd: String,
    /// The same in micro-USD.
    pub committed_micros: i64,
    /// Estimates of calls in flight, USD.
    pub reserved_usd: String,
    /// The same in micro-USD.
    pub reserved_micros: i64,
    /// What new reservations may still take, USD.
    pub remaining_usd: String,
    /// The same in micro-USD.
    pub remaining_micros: i64,
    /// How far committed stands past the limit, USD.
    pub overspend_usd: String,
    /// The same in micro-USD.
    pub overspend_micros: i64,
    /// Holds not yet settled.
    pub holds: u64,
    /// Whether the warning fired this period.
    pub warned: bool,
    /// The sums of the user asked for with `?user=` (zeros when it has
    /// none); absent otherwise. Every user is listed, page by page, by
    /// `GET …/budget/users`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpendView>,
}

/// One page of a period's users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsersPageView {
    /// The community.
    pub community: String,
    /// The period listed (`YYYY-MM`).
    pub period: String,
    /// Users whose sums are not both zero, with those sums.
    pub users: Vec<UserSpendView>,
    /// Pass as `cursor` for the next page; `null` when the listing is
    /// complete.
    pub next_cursor: Option<String>,
}

impl UserSpendView {
    /// `spend` of `user`.
    pub fn of(user: &UserId, spend: UserSpend) -> Self {
        Self {
            user: user.to_string(),
            committed_usd: usd(spend.committed),
            committed_micros: micros_i64(spend.committed),
            reserved_usd: usd(spend.reserved),
            reserved_micros: micros_i64(spend.reserved),
        }
    }
}

/// The answer to a budget change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BudgetChangeView {
    /// The community.
    pub community: String,
    /// The new limit, USD.
    pub limit_usd: String,
    /// The same in micro-USD.
    pub limit_micros: i64,
    /// The new per-user cap, USD (`null` for none).
    pub per_user_cap_usd: Option<String>,
    /// The same in micro-USD.
    pub per_user_cap_micros: Option<i64>,
    /// False when the change is saved in the database but the budget
    /// store still has the old limits (202): the next config sync applies
    /// it.
    pub applied: bool,
}

/// A community's tier overrides and the access level of every tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TiersView {
    /// The community.
    pub community: String,
    /// The overrides: tier → access level.
    pub overrides: BTreeMap<String, String>,
    /// Every tier's access level with the overrides applied.
    pub levels: BTreeMap<String, String>,
    /// Where the overrides were read: `cache`, `database`, `last_known`
    /// or `defaults` (after a write: `database`).
    pub source: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReadyView {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Whether the budget store answered.
    pub store: bool,
    /// Whether the configuration database answered.
    pub database: bool,
}
