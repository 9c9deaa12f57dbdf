//! The services an embedding program calls: budgets and tier access.

pub mod budget;
pub mod community_config;
pub mod telemetry;
pub mod tiers;
