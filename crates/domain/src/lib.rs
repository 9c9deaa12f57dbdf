//! The pure core of spendgate: money, pricing, periods, ids, tiers and the
//! two-counter budget model.
//!
//! Everything else in the workspace points inward to this crate: ports speak
//! its types, adapters store them, and the in-memory store runs
//! [`budget::CommunityBudget`] behind a lock. It does no I/O, reads no
//! clock and knows nothing of async, Redis or SQL, so every rule here is
//! testable as a plain function and serves as the oracle the contract suite
//! checks each store against.

pub mod budget;
pub mod call;
pub mod hold;
pub mod id;
pub mod money;
pub mod period;
pub mod pricing;
pub mod tier;
pub mod time;
pub mod version;

pub use budget::{
    Admission, BudgetError, BudgetPolicy, CommunityBudget, ExtendOutcome, FinalizeOutcome,
    LimitScope, Limits, PeriodCounters, PeriodSums, PolicyError, Reaped, Receipt, ReserveOutcome,
    UserSpend, admit, apply_settlement,
};
pub use call::CallId;
pub use hold::{
    Hold, HoldRef, HoldState, Marker, Reservation, SettledAs, Settlement, UnheldCommit,
};
pub use id::{CommunityId, IdError, IdempotencyKey, ModelAlias, UserId};
pub use money::{Micros, MoneyError};
pub use period::{Period, PeriodError};
pub use pricing::{
    ModelPrice, Multiplier, PriceTable, PricingError, PricingOverrides, TokenCounts,
};
pub use tier::{AccessLevel, Tier, TierError, TierOverrides};
pub use time::{TimeError, Timestamp, Ttl};
pub use version::{ConfigVersion, VersionError};
