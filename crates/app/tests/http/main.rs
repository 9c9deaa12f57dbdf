//! The HTTP API end to end: `serve` on 127.0.0.1:0, called with reqwest,
//! on the memory store, on SQLite and on Redis + PostgreSQL, one scenario
//! per test.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auth;
mod big_community;
mod call_id;
mod connections;
mod cycles;
mod cycles_tenancy;
mod cycles_wire;
mod dead_letters;
mod errors;
mod lifecycle;
mod loopback;
mod openapi;
mod ops;
mod outages;
#[path = "../app/support/own_redis.rs"]
mod own_redis;
mod properties;
mod roles;
#[path = "../app/support/servers.rs"]
mod servers;
mod settings;
mod shutdown;
mod support;
