//! The service scenarios on one SQLite file, as the embedded default runs.

crate::service_scenarios!(crate::support::sqlite);
