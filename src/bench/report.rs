//! The report: one [`Row`] per measured run, and the plain-text table `bench` prints.

use serde::Serialize;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub backend: String,
    pub devices: usize,
    pub latency_ms: u64,
    pub wall_secs: f64,
    pub requests: u64,
    /// `requests × latency / 5`, the floor with five connections (latency scenarios).
    pub bound_secs: Option<f64>,
    pub bound_ratio: Option<f64>,
    pub records_per_sec: Option<f64>,
    pub cpu_secs_per_1000: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub note: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub postgres: Option<String>,
    /// Also the 20,000-device latency runs and 100,000-computer memory run.
    pub full: bool,
    pub scenarios: Vec<String>,
    /// A Python with jamf-pro-sdk: the busy scenario's peer.
    pub peer_python: Option<String>,
}

/// A plain-text table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:<9} {:>7} {:>5} {:>9} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8}  note\n",
        "scenario",
        "backend",
        "devices",
        "L ms",
        "wall s",
        "requests",
        "bound s",
        "ratio",
        "records/s",
        "cpu s/1k",
        "rss MB"
    );
    let opt =
        |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:<9} {:>7} {:>5} {:>9.2} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8}  {}\n",
            r.scenario,
            r.backend,
            r.devices,
            r.latency_ms,
            r.wall_secs,
            r.requests,
            opt(r.bound_secs, 2),
            opt(r.bound_ratio, 3),
            opt(r.records_per_sec, 0),
            opt(r.cpu_secs_per_1000, 3),
            opt(r.peak_rss_mb, 1),
            r.note
        ));
    }
    out
}
