//! The protocol's JSON shapes, as the spec defines them: requests refuse
//! fields the spec does not name, answers carry only fields it names and
//! leave absent values out (never `null`). Also the unit conversion and the
//! scope derivation every route shares.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spendgate_domain::{CommunityId, Micros, ModelAlias};
use utoipa::ToSchema;

use super::error::CyclesError;

/// The one unit spendgate budgets in.
pub const USD_MICROCENTS: &str = "USD_MICROCENTS";
/// The units the spec knows; any of them but [`USD_MICROCENTS`] is a
/// `UNIT_MISMATCH`, anything else an invalid request.
const UNITS: [&str; 4] = [USD_MICROCENTS, "TOKENS", "CREDITS", "RISK_POINTS"];
/// USD_MICROCENTS per micro-USD (1 USD = 10^8 microcents = 10^6 micros).
const MICROCENTS_PER_MICRO: i64 = 100;
/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The subject levels, in the spec's canonical order.
pub const LEVELS: [&str; 6] = ["tenant", "workspace", "app", "workflow", "agent", "toolset"];

/// Who a request is for: a bag of hierarchy levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The tenant; when given it must be the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// An application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// A workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// An agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A toolset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolset: Option<String>,
    /// Free dimensions, kept and returned, never budgeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<BTreeMap<String, String>>,
}

impl Subject {
    /// The value of a standard level, by its name in [`LEVELS`].
    pub fn level(&self, name: &str) -> Option<&str> {
        match name {
            "tenant" => self.tenant.as_deref(),
            "workspace" => self.workspace.as_deref(),
            "app" => self.app.as_deref(),
            "workflow" => self.workflow.as_deref(),
            "agent" => self.agent.as_deref(),
            "toolset" => self.toolset.as_deref(),
            _ => None,
        }
    }

    /// The spec's rules: one standard level at least, each value a
    /// canonical identifier (`[A-Za-z0-9_.-]`, 1–128 characters), at most
    /// 16 dimensions of at most 256 characters.
    pub fn check(&self) -> Result<(), CyclesError> {
        let mut any = false;
        for name in LEVELS {
            if let Some(value) = self.level(name) {
                any = true;
                check_identifier(&format!("subject.{name}"), value, 128)?;
            }
        }
        if !any {
            return Err(CyclesError::invalid(
                "subject",
                "at least one of tenant, workspace, app, workflow, agent or toolset is required",
            ));
        }
        if let Some(dimensions) = &self.dimensions {
            if dimensions.len() > 16 {
                return Err(CyclesError::invalid(
                    "subject.dimensions",
                    "at most 16 entries",
                ));
            }
            if dimensions.values().any(|v| v.chars().count() > 256) {
                return Err(CyclesError::invalid(
                    "subject.dimensions",
                    "values are at most 256 characters",
                ));
            }
        }
        Ok(())
    }

    /// The canonical scope path, the tenant first, then each given level
    /// in canonical order, and every prefix of it (`affected_scopes`).
    pub fn scopes(&self, tenant: &CommunityId) -> (String, Vec<String>) {
        let mut path = format!("tenant:{tenant}");
        let mut affected = vec![path.clone()];
        for name in &LEVELS[1..] {
            if let Some(value) = self.level(name) {
                path = format!("{path}/{name}:{value}");
                affected.push(path.clone());
            }
        }
        (path, affected)
    }
}

/// A value used in scope paths: `[A-Za-z0-9_.-]`, 1..=`max` characters.
pub fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), CyclesError> {
    if value.is_empty() || value.len() > max {
        return Err(CyclesError::invalid(
            field,
            format!("1 to {max} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(CyclesError::invalid(
            field,
            "only letters, digits, '_', '.' and '-' are accepted",
        ));
    }
    Ok(())
}

/// What is being paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The kind, such as `llm.completion`.
    pub kind: String,
    /// The model or tool, such as `openai:gpt-4o-mini`.
    pub name: String,
    /// Policy tags, kept and returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl Action {
    /// The spec's lengths, and a name spendgate can keep as the usage
    /// log's model alias (printable ASCII without spaces or braces, at most
    /// 128 bytes).
    pub fn model(&self) -> Result<ModelAlias, CyclesError> {
        if self.kind.chars().count() > 64 {
            return Err(CyclesError::invalid("action.kind", "at most 64 characters"));
        }
        if let Some(tags) = &self.tags
            && (tags.len() > 10 || tags.iter().any(|t| t.chars().count() > 64))
        {
            return Err(CyclesError::invalid(
                "action.tags",
                "at most 10 tags of at most 64 characters",
            ));
        }
        ModelAlias::parse(self.name.as_str()).map_err(|e| CyclesError::invalid("action.name", e))
    }
}

/// An amount in a unit; the unit is kept as text so a unit spendgate does
/// not budget is told apart from one that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// The unit.
    pub unit: String,
    /// The amount (signed only in a balance's `remaining`).
    pub amount: i64,
}

impl Amount {
    /// `micros` in USD_MICROCENTS, exactly.
    pub fn of(micros: Micros) -> Self {
        Self::microcents(micros.get().saturating_mul(MICROCENTS_PER_MICRO))
    }

    /// An amount already in USD_MICROCENTS.
    pub fn microcents(amount: i64) -> Self {
        Self {
            unit: USD_MICROCENTS.to_owned(),
            amount,
        }
    }

    /// The amount in whole micro-USD, rounded up so a call is never
    /// under-charged (the rounding is under one micro-USD per call).
    ///
    /// # Errors
    /// `UNIT_MISMATCH` for another known unit; `INVALID_REQUEST` for an
    /// unknown unit, a negative amount, or one past the micro-USD range.
    pub fn to_micros(&self, field: &str, scope: &str) -> Result<Micros, CyclesError> {
        if self.unit != USD_MICROCENTS {
            return Err(if UNITS.contains(&self.unit.as_str()) {
                CyclesError::UnitMismatch {
                    requested: self.unit.clone(),
                    scope: scope.to_owned(),
                }
            } else {
                CyclesError::invalid(&format!("{field}.unit"), "not a unit of the protocol")
            });
        }
        if self.amount < 0 {
            return Err(CyclesError::invalid(
                &format!("{field}.amount"),
                "must not be negative",
            ));
        }
        let micros =
            self.amount / MICROCENTS_PER_MICRO + i64::from(self.amount % MICROCENTS_PER_MICRO != 0);
        Micros::new(micros).map_err(|e| CyclesError::invalid(&format!("{field}.amount"), e))
    }
}

/// What the server does when a commit's actual exceeds the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = CommitOveragePolicy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OveragePolicy {
    /// Refuse the commit; the reservation stays active.
    Reject,
    /// Commit the full actual (spendgate never caps a real cost).
    #[default]
    AllowIfAvailable,
    /// The same as [`OveragePolicy::AllowIfAvailable`]: without a debt
    /// ledger the overdraft limit is 0.
    AllowWithOverdraft,
}

/// `POST /v1/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ReservationCreateRequest)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub estimate: Amount,
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    #[serde(default)]
    pub grace_period_ms: Option<i64>,
    #[serde(default)]
    pub overage_policy: Option<OveragePolicy>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default, rename = "metadata")]
    #[schema(value_type = Option<Object>)]
    _metadata: Option<Value>,
}

/// `POST /v1/reservations/{id}/commit`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CommitRequest)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    pub idempotency_key: String,
    pub actual: Amount,
    #[serde(default, rename = "metrics")]
    #[schema(value_type = Option<Object>)]
    _metrics: Option<Value>,
    #[serde(default, rename = "metadata")]
    #[schema(value_type = Option<Object>)]
    _metadata: Option<Value>,
}

/// `POST /v1/reservations/{id}/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ReleaseRequest)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub idempotency_key: String,
    #[serde(default, rename = "reason")]
    _reason: Option<String>,
}

/// `POST /v1/reservations/{id}/extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ReservationExtendRequest)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    pub idempotency_key: String,
    pub extend_by_ms: i64,
    #[serde(default, rename = "metadata")]
    #[schema(value_type = Option<Object>)]
    _metadata: Option<Value>,
}

/// `POST /v1/decide`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = DecisionRequest)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub estimate: Amount,
    #[serde(default, rename = "metadata")]
    #[schema(value_type = Option<Object>)]
    _metadata: Option<Value>,
}

/// `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = EventCreateRequest)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub actual: Amount,
    #[serde(default)]
    pub overage_policy: Option<OveragePolicy>,
    #[serde(default, rename = "metrics")]
    #[schema(value_type = Option<Object>)]
    _metrics: Option<Value>,
    #[serde(default, rename = "client_time_ms")]
    _client_time_ms: Option<i64>,
    #[serde(default, rename = "metadata")]
    #[schema(value_type = Option<Object>)]
    _metadata: Option<Value>,
}

/// The answer to a create (or a dry run).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReservationCreateResponse)]
pub struct CreateView {
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    pub scope_path: String,
    pub affected_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
}

/// The answer to `POST /v1/decide`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DecisionResponse)]
pub struct DecideView {
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    pub affected_scopes: Vec<String>,
}

/// The answer to a commit.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CommitResponse)]
pub struct CommitView {
    pub status: &'static str,
    pub charged: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<Amount>,
}

/// The answer to a release.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReleaseResponse)]
pub struct ReleaseView {
    pub status: &'static str,
    pub released: Amount,
}

/// The answer to an extend.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReservationExtendResponse)]
pub struct ExtendView {
    pub status: &'static str,
    pub expires_at_ms: i64,
}

/// The answer to an event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventCreateResponse)]
pub struct EventView {
    pub status: &'static str,
    pub event_id: String,
    pub charged: Amount,
}

/// A reservation as `GET /v1/reservations/{id}` (`ReservationDetail`) and
/// the list (`ReservationSummary`) show it: the list's row is the detail's
/// subset, so one shape serves both.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReservationDetail)]
pub struct ReservationView {
    pub reservation_id: String,
    pub status: &'static str,
    pub idempotency_key: String,
    pub subject: Subject,
    pub action: Action,
    pub reserved: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<Amount>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub scope_path: String,
    pub affected_scopes: Vec<String>,
}

/// `GET /v1/reservations`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReservationListResponse)]
pub struct ListView {
    pub reservations: Vec<ReservationView>,
    pub has_more: bool,
}

/// One scope's ledger.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Balance)]
pub struct BalanceView {
    pub scope: String,
    pub scope_path: String,
    pub remaining: Amount,
    pub reserved: Amount,
    pub spent: Amount,
    pub allocated: Amount,
}

/// `GET /v1/balances`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BalanceResponse)]
pub struct BalancesView {
    pub balances: Vec<BalanceView>,
    pub has_more: bool,
}

/// An idempotency key as the spec and the record store accept it: 1–256
/// printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), CyclesError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CyclesError::invalid(
            "idempotency_key",
            format!("1 to {MAX_KEY_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(unit: &str, amount: i64) -> Amount {
        Amount {
            unit: unit.to_owned(),
            amount,
        }
    }

    #[test]
    fn microcents_round_up_to_whole_micros_and_go_out_exactly() {
        let micros = |a: i64| amount(USD_MICROCENTS, a).to_micros("estimate", "tenant:t");
        assert_eq!(micros(0).unwrap(), Micros::ZERO);
        assert_eq!(micros(1).unwrap().get(), 1);
        assert_eq!(micros(100).unwrap().get(), 1);
        assert_eq!(micros(101).unwrap().get(), 2);
        assert_eq!(Amount::of(Micros::MAX).amount, Micros::MAX.get() * 100);
        assert!(matches!(micros(-1), Err(CyclesError::InvalidRequest(_))));
        assert!(matches!(
            micros(i64::MAX),
            Err(CyclesError::InvalidRequest(_))
        ));
        assert!(matches!(
            amount("TOKENS", 1).to_micros("estimate", "tenant:t"),
            Err(CyclesError::UnitMismatch { .. })
        ));
        assert!(matches!(
            amount("JOULES", 1).to_micros("estimate", "tenant:t"),
            Err(CyclesError::InvalidRequest(_))
        ));
    }

    #[test]
    fn scopes_follow_the_canonical_order_and_skip_gaps() {
        let subject = Subject {
            toolset: Some("search".to_owned()),
            app: Some("chat".to_owned()),
            ..Subject::default()
        };
        let tenant = CommunityId::parse("acme").unwrap();
        let (path, affected) = subject.scopes(&tenant);
        assert_eq!(path, "tenant:acme/app:chat/toolset:search");
        assert_eq!(
            affected,
            [
                "tenant:acme",
                "tenant:acme/app:chat",
                "tenant:acme/app:chat/toolset:search"
            ]
        );
        assert!(subject.check().is_ok());
        assert!(Subject::default().check().is_err());
        let spaced = Subject {
            agent: Some("a b".to_owned()),
            ..Subject::default()
        };
        assert!(spaced.check().is_err());
    }
}
