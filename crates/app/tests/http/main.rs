//! The HTTP API end to end: `serve` on 127.0.0.1:0, called with reqwest,
//! on the memory store, on SQLite and on Redis + PostgreSQL, one scenario
//! per test.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auth;
mod cycles;
mod cycles_wire;
mod errors;
mod lifecycle;
mod openapi;
mod ops;
mod properties;
#[path = "../app/support/servers.rs"]
mod servers;
mod settings;
mod shutdown;
mod support;
