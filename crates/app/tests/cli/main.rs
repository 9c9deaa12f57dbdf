//! The `spendgate` command line, run in-process through
//! `spendgate::inbound::cli` against a temporary SQLite file, one scenario
//! per test, `--json` output read back with serde_json.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

mod bench;
mod budget;
mod config;
mod errors;
mod holds;
mod maintenance;
mod migrate;
mod serve;
