//! Integration tests of spendgate-adapter-postgres against a real
//! PostgreSQL (`SPENDGATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; each test gets a fresh
//! database) and SQLite (a temporary file per test).
//!
//! A test that cannot reach PostgreSQL fails, naming the URL it tried.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // test support code panics on purpose

mod support;

mod bad_data;
mod budget_store;
mod config;
mod due_pass;
mod hot_community;
mod idempotency;
mod lease;
mod migrations;
mod outage;
mod outbox;
mod reconciliation;
mod rls;
mod usage_log;
