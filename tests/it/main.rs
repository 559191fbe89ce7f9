//! One integration-test binary: real HTTP against the simulator, real SQLite and PostgreSQL.
//! PostgreSQL is found through `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs a test body `async fn NAME(&TestDb)` once on SQLite and once on a fresh PostgreSQL
/// database.
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = crate::support::sqlite().await;
                super::$name(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = crate::support::postgres().await;
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    };
}

mod children;
mod cli;
mod commands;
mod daemon;
mod deploy;
mod docs;
mod fill;
mod groups;
mod hardening;
mod history;
mod instances;
mod mobile;
mod newer_wins;
mod odd_records;
mod openapi;
mod pacing;
mod queries;
mod ranges;
mod reconcile;
mod replicas;
mod resilience;
mod schema;
mod support;
mod sync_flow;
mod webhook_requests;
mod webhooks;
mod writers;
