//! What the integration tests stand on, in one place: test databases ([`db`]), the simulator
//! and engines over it ([`sim`]), the daemon in-process or as a process ([`daemon`]), metric
//! scrapes ([`metrics`]), and waiting on a condition instead of sleeping a fixed time.

pub mod daemon;
pub mod db;
pub mod metrics;
pub mod sim;

pub use db::*;
pub use sim::*;

use std::future::Future;
use std::time::{Duration, Instant};

/// A file of this repository (a document, a dashboard), as text.
pub fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
