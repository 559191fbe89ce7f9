//! jamf-sync keeps an up-to-date copy of a Jamf Pro fleet's device inventory in PostgreSQL or
//! SQLite, gently: never more than five connections to Jamf, only what changed since the last
//! successful run, backing off when the server pushes back.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → TOML → `JAMF_SYNC__*` env), validation, secrets.
//! - [`jamf`]: the Jamf Pro API client: auth and token renewal, retries, inventory calls, models.
//! - [`limiter`]: the connection gate every request passes (≤ 5 in flight).
//! - [`pacing`]: the adaptive (AIMD) concurrency controller behind the limiter.
//! - [`sync`]: the sync engine: cursor, keyset paging, worker pool, run bookkeeping.
//! - [`runner`]: the daemon's single executor of run requests (coalescing).
//! - [`scheduler`]: cron schedules (DST-correct) that request runs.
//! - [`http`] and [`daemon`]: `jamf-sync run`: endpoints, start-up, graceful shutdown.
//! - [`webhooks`]: `POST /webhooks/jamf`, the durable event queue and its worker, and
//!   `jamf-sync webhooks setup`.
//! - [`store`]: the `Store` trait with SQLite and PostgreSQL implementations and migrations.
//! - [`simulator`]: a Jamf Pro simulator over real HTTP with fault injection.
//! - [`telemetry`]: logging and the metric names.
//! - [`cli`]: the command-line interface that wires the pieces together.
//! - [`bench`]: `jamf-sync bench`, figures against the simulator.

pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod http;
pub mod jamf;
pub mod limiter;
pub mod pacing;
pub mod runner;
pub mod scheduler;
pub mod simulator;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
