//! What a simulator is started with (its fleet, its latency, the faults it injects) and the
//! counters it keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::events::WebhookFormat;

/// What the simulated server looks like and how it misbehaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Computers in the fleet (ids 1..=n).
    pub computers: usize,
    /// Mobile devices in the fleet (ids 1..=n).
    pub mobile_devices: usize,
    /// A new advanced search stays invisible this long to requests without the sticky cookie.
    pub replication_lag_ms: u64,
    /// Set the sticky-session cookie (a cluster with session affinity).
    pub sticky_sessions: bool,
    /// Reported by `/api/v1/jamf-pro-version`; below 11.30 the v4 endpoints answer 404.
    pub version: String,
    /// Lifetime of issued tokens in seconds.
    pub token_ttl_secs: u64,
    /// Accepted API client.
    pub client_id: String,
    pub client_secret: String,
    /// Accepted user account.
    pub username: String,
    pub password: String,
    /// Serve `/api/oauth/token` only (servers older than the v1 path).
    pub legacy_oauth_only: bool,
    /// Time from a request's arrival to its answer; the simulator's own work is done within it
    /// (a real server's response time includes its work).
    pub latency_ms: u64,
    /// Requests the server handles at full speed; above it each extra concurrent request
    /// adds `overload_factor` × `latency_ms` (0 = unlimited).
    pub capacity: u64,
    pub overload_factor: f64,
    /// Extra latency of list pages per record and requested section, in microseconds.
    pub per_record_section_us: u64,
    /// List pages larger than this answer 504 (a gateway timing out on a heavy page); 0 = off.
    pub page_timeout_above: usize,
    /// Seed of the fleet generator.
    pub seed: u64,
    /// After each served list page, this many random devices submit inventory (churn while a
    /// client pages).
    pub churn_per_page: usize,
    /// After each served computers list page, this many new computers enrol (ids above the
    /// highest) and this many random ones are deleted.
    pub enrol_per_page: usize,
    pub leave_per_page: usize,
    /// A connection nothing crossed for this long is closed by the server (its keep-alive
    /// timeout, as Tomcat or a load balancer in front of Jamf has); 0 = never.
    pub idle_timeout_ms: u64,
    /// Jamf's clock minus real time: its `Date` headers and the inventory times of devices
    /// touched through the simulator API are this far off (a server whose NTP is broken).
    pub clock_offset_secs: i64,
    pub faults: Faults,
    /// POST a webhook event here whenever a device is added, submits inventory, checks in or
    /// is unenrolled (unset: no events).
    pub webhook_url: Option<String>,
    pub webhook_format: WebhookFormat,
    /// Basic credentials sent with each event.
    pub webhook_username: Option<String>,
    pub webhook_password: Option<String>,
}

/// Fault injection on inventory and version endpoints; each rate is a probability per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub rate_500: f64,
    pub rate_502: f64,
    pub rate_503: f64,
    pub rate_504: f64,
    /// HTTP 500 with a `policies.ratelimit.QuotaViolation` body.
    pub rate_quota: f64,
    /// HTTP 429 with `Retry-After`.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// Connection dropped in the middle of the body.
    pub rate_reset: f64,
    /// Answer delayed by `slow_ms` extra.
    pub rate_slow: f64,
    pub slow_ms: u64,
    /// Every n-th authenticated request finds all tokens revoked (401). 0 = never.
    pub revoke_every: u64,
    /// Answer this many requests (after the auth check) with 503, then recover: an outage.
    pub outage_requests: u64,
    /// Requests served normally before the outage starts.
    pub outage_after: u64,
    /// When set, the outage is the platform gateway throttling instead: 429 with this
    /// `Retry-After` (seconds), which the client must wait out.
    pub outage_retry_after_secs: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            computers: 2000,
            mobile_devices: 500,
            replication_lag_ms: 0,
            sticky_sessions: true,
            version: "11.30.1-t1784555528405".into(),
            token_ttl_secs: 1200,
            client_id: "jamf-sync-sim".into(),
            client_secret: "sim-secret".into(),
            username: "admin".into(),
            password: "sim-password".into(),
            legacy_oauth_only: false,
            latency_ms: 0,
            capacity: 0,
            overload_factor: 1.0,
            per_record_section_us: 0,
            page_timeout_above: 0,
            seed: 42,
            churn_per_page: 0,
            enrol_per_page: 0,
            leave_per_page: 0,
            clock_offset_secs: 0,
            idle_timeout_ms: 0,
            faults: Faults::default(),
            webhook_url: None,
            webhook_format: WebhookFormat::Json,
            webhook_username: None,
            webhook_password: None,
        }
    }
}

/// Counters the simulator keeps, readable by tests and at `/_sim/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    pub requests: u64,
    /// Time spent answering, summed over requests (µs): what five connections divide.
    pub service_us: u64,
    /// By endpoint template, e.g. `/api/v4/computers-inventory-detail/{id}`.
    pub by_endpoint: BTreeMap<String, u64>,
    pub peak_in_flight: u64,
    pub peak_connections: u64,
    pub connections_opened: u64,
    pub tokens_issued: u64,
    pub faults_injected: u64,
    pub unauthorized: u64,
    /// Requests that carried the sticky-session cookie set with the first token.
    pub with_sticky_cookie: u64,
    /// `User-Agent` of the last request.
    pub last_user_agent: Option<String>,
    pub searches_created: u64,
    pub searches_updated: u64,
    /// Webhook events delivered (2xx) and not delivered.
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    /// `/JSSResource/webhooks` writes.
    pub webhooks_created: u64,
    pub webhooks_updated: u64,
}
