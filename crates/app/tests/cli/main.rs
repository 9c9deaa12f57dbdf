//! The `spendgate` command line, run in-process through
//! `spendgate::inbound::cli` against a temporary SQLite file, one scenario
//! per test, `--json` output read back with serde_json.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

mod bench;
mod budget;
mod call_id;
mod config;
mod dead_letters;
mod errors;
mod holds;
mod maintenance;
mod migrate;
mod outages;
#[path = "../app/support/own_redis.rs"]
mod own_redis;
mod serve;
#[path = "../app/support/servers.rs"]
#[allow(dead_code)] // the Redis helpers serve the other test binaries
mod servers;
