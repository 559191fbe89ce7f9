//! The Jamf Pro client: transport (attempts, retries, budgets), authentication, the connection
//! limiter with adaptive pacing under it, the Jamf Pro API and Classic API calls, and decoding
//! of Jamf's wire formats into the domain's records.
//!
//! Invariants:
//! - every request, token calls included, passes the [`limiter::Limiter`], so Jamf never sees
//!   more than `max_concurrency` (≤ 5) of our requests at once;
//! - one token is shared by all workers and renewed ahead of expiry under a lock, so a renewal
//!   happens once, not once per worker; every attempt (each retry too) reads the current
//!   token, so none goes out with a token that expired during a backoff or a wait for a
//!   connection; a 401 renews and replays, and two 401s in a row after renewals are final;
//! - only idempotent work is retried, with exponential backoff and full jitter inside a
//!   per-request time budget; 400/403/404 are never retried; a bad credential is fatal;
//! - latency is measured per attempt (backoff sleeps never count) and labelled by endpoint
//!   template; nothing secret reaches a log line, an error or a metric.

mod auth;
pub mod classic;
pub mod decode;
pub mod error;
pub mod escapes;
pub mod limiter;
pub mod models;
pub mod pacing;
pub mod pro;
mod request;
mod transport;
pub mod xml;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use tokio::sync::Mutex;
use url::Url;

use crate::config::JamfSettings;
pub use decode::RecordError;
pub use error::JamfError;
use limiter::Limiter;
pub use transport::{backoff_delay, Answer, ENDPOINTS};

/// Identifies us to Jamf administrators reading their access logs.
pub const USER_AGENT: &str = concat!("jamf-sync/", env!("CARGO_PKG_VERSION"));

/// Idle connections are closed after this; shorter than common server keep-alive timeouts.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An authenticated call, independent of any attempt at it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub endpoint: &'static str,
    pub path: String,
    pub query: &'a [(&'a str, String)],
    pub accept: &'static str,
    pub body: Option<(&'static str, &'a str)>,
    pub timeout: Option<Duration>,
    pub shrinkable: bool,
}

impl<'a> Call<'a> {
    /// A JSON GET.
    pub fn get(endpoint: &'static str, path: String, query: &'a [(&'a str, String)]) -> Self {
        Call {
            method: Method::GET,
            endpoint,
            path,
            query,
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        }
    }
}

/// The Jamf Pro API client shared by all workers of a run.
pub struct JamfClient {
    /// Rebuilt by [`JamfClient::drop_connections`]: dropping the old one closes its idle
    /// connections.
    http: std::sync::RwLock<reqwest::Client>,
    base: Url,
    settings: JamfSettings,
    limiter: Arc<Limiter>,
    token: Mutex<auth::TokenState>,
    /// Older servers have only `/api/oauth/token`; remembered after the first 404.
    legacy_oauth_path: AtomicBool,
    inventory_version: Mutex<Option<pro::Detected>>,
    /// Set once Jamf accepted our credentials (for `/readyz`).
    authenticated: AtomicBool,
    /// The secret re-read from `settings.secret_file` after Jamf refused the configured one.
    rotated: std::sync::Mutex<Option<secrecy::SecretString>>,
    /// Set once any answer came back from the server (see [`JamfSettings::fail_fast`]).
    reached: AtomicBool,
    /// Jamf's clock minus ours in milliseconds, from the last answer's `Date` header
    /// ([`NO_OFFSET`] until one was seen).
    clock_offset_ms: AtomicI64,
}

/// No `Date` header seen yet.
const NO_OFFSET: i64 = i64::MIN;

/// Clocks that agree to within this are taken to agree: a `Date` header reads Jamf's clock to
/// about a second only, and this host's own clock orders its own events exactly.
pub const CLOCKS_AGREE_WITHIN: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// `ours` shifted by Jamf's clock minus ours, when that is known and larger than what a `Date`
/// header can tell ([`CLOCKS_AGREE_WITHIN`]); else `ours`.
pub fn in_jamf_clock(
    ours: chrono::DateTime<chrono::Utc>,
    offset: Option<chrono::Duration>,
) -> chrono::DateTime<chrono::Utc> {
    offset
        .filter(|o| o.abs() >= CLOCKS_AGREE_WITHIN)
        .and_then(|o| ours.checked_add_signed(o))
        .unwrap_or(ours)
}

impl std::fmt::Debug for JamfClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JamfClient")
            .field("base", &crate::config::mask_url(self.base.as_str()))
            .field("max_concurrency", &self.limiter.max())
            .finish_non_exhaustive()
    }
}

impl JamfClient {
    pub fn new(settings: JamfSettings) -> Result<Self, JamfError> {
        crate::tls::install_crypto_provider();
        transport::init_metrics(&settings.instance);
        let limiter = Arc::new(Limiter::new(
            settings.max_concurrency,
            POOL_IDLE_TIMEOUT,
            settings.pacing.clone(),
            &settings.instance,
        ));
        let http = build_http(&settings, &limiter)?;
        let mut base = settings.url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Self {
            http: std::sync::RwLock::new(http),
            base,
            settings,
            limiter,
            token: Mutex::new(auth::TokenState::default()),
            legacy_oauth_path: AtomicBool::new(false),
            inventory_version: Mutex::new(None),
            rotated: std::sync::Mutex::new(None),
            authenticated: AtomicBool::new(false),
            reached: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(NO_OFFSET),
        })
    }

    pub fn instance(&self) -> &str {
        &self.settings.instance
    }

    /// The HTTP client (a cheap handle on the shared connection pool).
    pub(crate) fn http(&self) -> reqwest::Client {
        match self.http.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Closes the idle keep-alive connections to Jamf (requests in flight keep theirs until
    /// they end): a process that gave an instance up must not keep connections another
    /// process's five would add to.
    pub fn drop_connections(&self) {
        match build_http(&self.settings, &self.limiter) {
            Ok(fresh) => {
                if let Ok(mut h) = self.http.write() {
                    *h = fresh;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot rebuild the HTTP client"),
        }
    }

    /// Jamf's clock minus ours, as the answers' `Date` headers show it; `None` before any
    /// answer had one. A header has whole seconds, so each reading is up to a second (and
    /// half a round trip) short of the truth, never over it: readings within 2 s of the kept
    /// one keep the largest (the closest), a reading further off (a clock was stepped)
    /// replaces it. Stable, so times taken through it keep this process's order.
    pub fn clock_offset(&self) -> Option<chrono::Duration> {
        match self.clock_offset_ms.load(Ordering::Relaxed) {
            NO_OFFSET => None,
            ms => Some(chrono::Duration::milliseconds(ms)),
        }
    }

    fn observe_clock(&self, offset: chrono::Duration) {
        let ms = offset.num_milliseconds().clamp(NO_OFFSET + 1, i64::MAX);
        let _ = self
            .clock_offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                Some(match kept {
                    NO_OFFSET => ms,
                    kept if (ms - kept).abs() < 2000 => kept.max(ms),
                    _ => ms,
                })
            });
    }

    /// A moment of this host's clock in Jamf's ([`in_jamf_clock`] with [`Self::clock_offset`]).
    /// Every time that orders copies of a device (`fetched_at`, when a deletion was seen) is
    /// taken in Jamf's clock, which every replica shares.
    pub fn jamf_time(&self, ours: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        in_jamf_clock(ours, self.clock_offset())
    }

    /// Now, in Jamf's clock.
    pub fn jamf_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.jamf_time(chrono::Utc::now())
    }

    /// Whether any answer ever came back from the server.
    pub fn has_reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Whether Jamf has accepted our credentials at least once.
    pub fn has_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    pub fn max_concurrency(&self) -> u32 {
        self.limiter.max()
    }

    /// The adaptive limit right now.
    pub fn concurrency_limit(&self) -> u32 {
        self.limiter.limit()
    }

    /// Whether pacing is in its slow start below the maximum (see
    /// [`pacing::Controller::ramping`]).
    pub fn ramping(&self) -> bool {
        self.limiter.pacing().ramping()
    }

    /// The Jamf server this client talks to (its origin): what pacing memory is kept for.
    pub fn server(&self) -> String {
        self.settings.url.origin().ascii_serialization()
    }

    /// What adaptive pacing learned so far (see [`pacing::Controller::memory`]), with the
    /// server version detected.
    pub async fn pacing_memory(&self) -> Option<crate::domain::PacingMemory> {
        let mut memory = self.limiter.pacing().memory()?;
        memory.server_version = self.detected_server_version().await;
        Some(memory)
    }

    /// Starts pacing from an earlier run's memory (see [`pacing::Controller::warm`]); returns
    /// whether it did. A server version in it that is still recent is taken as detected.
    pub async fn warm_pacing(&self, memory: &crate::domain::PacingMemory) -> bool {
        if let Some(v) = &memory.server_version {
            self.assume_server_version(v).await;
        }
        let warmed = self.limiter.pacing().warm(memory);
        if warmed {
            self.limiter.wake();
        }
        warmed
    }

    /// How long pacing memory stays usable (`jamf.pacing.remember_hours`; zero: never).
    pub fn pacing_memory_lifetime(&self) -> Duration {
        Duration::from_secs(self.settings.pacing.remember_hours.saturating_mul(3600))
    }

    /// Authenticated call with retries; a 401 renews the token and replays.
    pub async fn call(&self, call: Call<'_>) -> Result<Answer, JamfError> {
        let req = request::Request {
            method: call.method.clone(),
            endpoint: call.endpoint,
            path: call.path.clone(),
            query: call.query,
            form: None,
            auth: request::AuthMode::Session,
            accept: call.accept,
            body: call.body,
            timeout: call.timeout,
            shrinkable: call.shrinkable,
        };
        self.execute(&req).await
    }

    /// GET returning decoded JSON, authenticated, retried.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: String,
        query: &[(&str, String)],
    ) -> Result<T, JamfError> {
        let answer = self.call(Call::get(endpoint, path, query)).await?;
        serde_json::from_slice(&answer.body).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The HTTP client for one Jamf server: TLS roots, timeouts, and a connection pool gated by
/// the limiter.
fn build_http(settings: &JamfSettings, limiter: &Limiter) -> Result<reqwest::Client, JamfError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &settings.ca_file {
        let setup = |message: String| JamfError::Transport {
            endpoint: "(client setup)",
            message,
        };
        let pem = std::fs::read(path)
            .map_err(|e| setup(format!("jamf.ca_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup(format!("jamf.ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(setup(format!(
                "jamf.ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .user_agent(USER_AGENT)
        .redirect(transport::redirect_policy())
        .cookie_store(true)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        // With at most `max` requests in flight, more idle connections are never needed;
        // capping them keeps the open-connection count within Jamf's limit too.
        .pool_max_idle_per_host(limiter.max() as usize)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .connector_layer(limiter.connection_gate())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| JamfError::Transport {
            endpoint: "(client setup)",
            message: error_chain(&e),
        })
}
