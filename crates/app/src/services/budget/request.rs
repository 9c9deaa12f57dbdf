//! What callers hand the budget service: reservation requests, usage at
//! finalize, and the ticket a caller without the guard passes back.

use serde::{Deserialize, Serialize};
use spendgate_domain::{
    CallId, CommunityId, Hold, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp,
    TokenCounts, Ttl, UserId,
};

/// The longest trace id kept, in bytes (the usage log's column).
pub const MAX_TRACE_ID_LEN: usize = 256;

/// How a reservation's estimate is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "basis", rename_all = "snake_case")]
pub enum CostBasis {
    /// Priced from the community's price table: one rounding per request.
    Tokens {
        /// Prompt tokens.
        prompt: u64,
        /// The most completion tokens the call may produce.
        max_completion: u64,
        /// Whether the call uses tools (the tool-use multiplier applies).
        tool_use: bool,
    },
    /// The caller's own estimate.
    Estimate {
        /// The amount to hold.
        amount: Micros,
    },
}

/// A request to reserve budget for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The community charged.
    pub community: CommunityId,
    /// Who makes the call.
    pub user: UserId,
    /// The call's idempotency key: a retried reserve with the same key
    /// returns the first hold.
    pub key: IdempotencyKey,
    /// The model alias to call.
    pub model: ModelAlias,
    /// The community's tier (1–9), which decides the models it may use.
    pub tier: i64,
    /// How the estimate is found.
    pub cost: CostBasis,
    /// The hold's lifetime; the service default when `None`.
    pub ttl: Option<Ttl>,
    /// A trace id carried into the usage log.
    pub trace_id: Option<String>,
}

impl ReserveRequest {
    /// A request priced from token counts, without tools, with the default
    /// TTL and no trace id.
    pub fn tokens(
        community: CommunityId,
        user: UserId,
        key: IdempotencyKey,
        model: ModelAlias,
        tier: i64,
        prompt: u64,
        max_completion: u64,
    ) -> Self {
        Self {
            community,
            user,
            key,
            model,
            tier,
            cost: CostBasis::Tokens {
                prompt,
                max_completion,
                tool_use: false,
            },
            ttl: None,
            trace_id: None,
        }
    }

    /// The same request for a call that uses tools.
    #[must_use]
    pub fn with_tools(mut self) -> Self {
        if let CostBasis::Tokens { tool_use, .. } = &mut self.cost {
            *tool_use = true;
        }
        self
    }

    /// The same request with a hold TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The same request with a trace id.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }
}

/// What a finished call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Usage {
    /// Token counts, costed with the same prices as the estimate (no
    /// tool-use multiplier: that is for estimates).
    Tokens {
        /// Tokens used.
        tokens: TokenCounts,
    },
    /// The provider's actual cost.
    Cost {
        /// What the call cost.
        actual: Micros,
        /// Tokens used, when known (kept in the usage log).
        tokens: Option<TokenCounts>,
    },
}

impl Usage {
    /// Usage from token counts.
    pub fn tokens(prompt: u64, completion: u64) -> Self {
        Usage::Tokens {
            tokens: TokenCounts { prompt, completion },
        }
    }

    /// Usage from the provider's cost.
    pub fn cost(actual: Micros) -> Self {
        Usage::Cost {
            actual,
            tokens: None,
        }
    }
}

/// Everything needed to settle or hand over a hold without its guard: what
/// a reserve answer gives a caller over HTTP, which passes it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldTicket {
    /// The community charged.
    pub community: CommunityId,
    /// The hold as the store made it; its period is where the cost goes.
    pub hold: Hold,
    /// A trace id carried into the usage log.
    pub trace_id: Option<String>,
}

impl HoldTicket {
    /// The hold's (user, key).
    pub fn hold_ref(&self) -> HoldRef {
        self.hold.hold_ref()
    }

    /// The id of the call, unique across communities, users and reuses of
    /// the key: what the gateway passes to the provider with the call, and
    /// what reconciliation asks the provider's usage endpoint by.
    pub fn call_id(&self) -> CallId {
        CallId::of(&self.community, &self.hold)
    }
}

/// What a caller settling by ids knows of the hold besides its ids.
///
/// The store's own record always wins; these facts are used only where the
/// store has none (it lost the hold, or cannot answer right now): the model
/// to cost token usage with and to log, the period to charge (law 4: the
/// period the hold was made in; without it, the current one), the estimate
/// and the hold's creation time for the usage log. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHold {
    /// The model alias the hold was reserved for.
    pub model: Option<ModelAlias>,
    /// The period the hold was made in.
    pub period: Option<Period>,
    /// The estimate that was held.
    pub estimate: Option<Micros>,
    /// When the hold was made.
    pub created_at: Option<Timestamp>,
}

impl From<&Hold> for KnownHold {
    fn from(hold: &Hold) -> Self {
        Self {
            model: Some(hold.model.clone()),
            period: Some(hold.period),
            estimate: Some(hold.estimate),
            created_at: Some(hold.created_at),
        }
    }
}

/// A settlement named by the call's ids: what a caller without the guard
/// (an HTTP or Cycles client, the command line, a recovering process)
/// hands [`super::BudgetService::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    /// The community charged.
    pub community: CommunityId,
    /// The call's (user, key).
    pub hold: HoldRef,
    /// What the call used; a cost of 0 releases the hold (a cancel).
    pub usage: Usage,
    /// What the caller knows of the hold.
    pub known: KnownHold,
    /// A trace id carried into the usage log.
    pub trace_id: Option<String>,
}

impl SettleRequest {
    /// Settles (user, key) of `community` with `usage`, knowing nothing
    /// else of the hold.
    pub fn new(community: CommunityId, hold: HoldRef, usage: Usage) -> Self {
        Self {
            community,
            hold,
            usage,
            known: KnownHold::default(),
            trace_id: None,
        }
    }

    /// Releases (user, key) of `community` without a cost: the call never
    /// ran.
    pub fn cancel(community: CommunityId, hold: HoldRef) -> Self {
        Self::new(community, hold, Usage::cost(Micros::ZERO))
    }

    /// The same request with what the caller knows of the hold.
    #[must_use]
    pub fn with_known(mut self, known: KnownHold) -> Self {
        self.known = known;
        self
    }

    /// The same request with a trace id.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: Option<String>) -> Self {
        self.trace_id = trace_id;
        self
    }
}

impl HoldTicket {
    /// The settlement of this ticket's hold with `usage`.
    pub fn settlement(&self, usage: Usage) -> SettleRequest {
        SettleRequest {
            community: self.community.clone(),
            hold: self.hold_ref(),
            usage,
            known: KnownHold::from(&self.hold),
            trace_id: self.trace_id.clone(),
        }
    }
}
