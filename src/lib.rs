//! jamf-sync keeps an up-to-date copy of a Jamf Pro fleet's device inventory in PostgreSQL or
//! SQLite, gently: never more than five connections to Jamf, only what changed since the last
//! successful run, backing off when the server pushes back.
//!
//! # Layout
//! Dependencies point down this list only (`python3 ../shared/tools/modgraph.py src`):
//! - [`cli`], [`daemon`] (scheduler, runner, HTTP endpoints, webhook receiver and worker) and
//!   [`bench`]: the triggers; they only *request* work from the engine.
//! - [`app`]: builds one instance's engine over its store and client, for all of the above.
//! - [`sync`]: the engine: runs (delta/full sync, reconcile), refreshes, one device source per
//!   kind, the writer pipeline.
//! - [`jamf`]: the Jamf client: transport, auth, limiter and adaptive pacing, Pro and Classic
//!   API calls, decoding of Jamf's formats. [`store`]: SQLite and PostgreSQL behind one trait,
//!   one newer-wins write path.
//! - [`config`], [`telemetry`], [`tls`] and [`domain`] (kinds, records and their column
//!   projections, runs, webhook actions, Jamf facts): the bottom.
//! - [`simulator`]: an independent Jamf Pro over real HTTP, for tests, `demo` and `bench`; it
//!   imports nothing from the crate.

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod jamf;
pub mod simulator;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tls;
