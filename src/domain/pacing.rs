//! What adaptive pacing learned about one Jamf server, kept between processes so the next run
//! starts at the pace the last one reached instead of ramping up again (a warm start).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The controller's state worth keeping: the limit reached and each endpoint class's latency
/// baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacingMemory {
    pub limit: u32,
    /// No back-pressure was seen: growth is still one step per few answers.
    pub slow_start: bool,
    pub classes: Vec<ClassBaseline>,
    /// The Jamf Pro version the server reported, kept with the pace so the next process need
    /// not ask while the answer is recent (`JamfSettings::version_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<ServerVersion>,
}

/// A Jamf Pro version as the server reported it, and when it was asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerVersion {
    pub version: String,
    pub checked_at: DateTime<Utc>,
}

/// One endpoint class's latency baseline (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassBaseline {
    pub class: String,
    pub mean: f64,
    pub dev: f64,
    pub samples: u32,
}
