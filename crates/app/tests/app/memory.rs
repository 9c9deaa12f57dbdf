//! The service scenarios on memory alone.

crate::service_scenarios!(crate::support::memory);
