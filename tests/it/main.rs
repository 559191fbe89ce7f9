//! One integration-test binary: real HTTP against the simulator, real SQLite and PostgreSQL.
//! PostgreSQL is found through `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod daemon;
mod helpers;
mod mobile;
mod openapi;
mod pacing;
mod reconcile;
mod resilience;
mod sync_flow;
