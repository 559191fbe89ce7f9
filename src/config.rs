//! Configuration: built-in defaults → TOML file → `JAMF_SYNC__SECTION__KEY` environment.
//!
//! Owns the typed configuration and its validation. Invariants:
//! - every error names the offending key (`jamf.url`, `sync.page_size`, ...);
//! - unknown keys are rejected, so a typo never silently falls back to a default;
//! - secrets live in [`SecretString`] and can also be read from files (`*_file` keys), so they
//!   never need to appear in a config file, an environment listing or `Debug` output;
//! - `max_concurrency` can never exceed Jamf's limit of five connections.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Jamf's published guidance: never more than five concurrent connections to one server.
pub const JAMF_MAX_CONCURRENCY: u32 = 5;
/// Jamf silently clamps larger page sizes to this.
pub const JAMF_MAX_PAGE_SIZE: u32 = 2000;

/// Computer inventory sections the Jamf Pro API accepts (v1 also has PLUGINS and FONTS).
pub const COMPUTER_SECTIONS: &[&str] = &[
    "GENERAL",
    "DISK_ENCRYPTION",
    "PURCHASING",
    "APPLICATIONS",
    "STORAGE",
    "USER_AND_LOCATION",
    "CONFIGURATION_PROFILES",
    "PRINTERS",
    "SERVICES",
    "HARDWARE",
    "LOCAL_USER_ACCOUNTS",
    "CERTIFICATES",
    "ATTACHMENTS",
    "PACKAGE_RECEIPTS",
    "SECURITY",
    "OPERATING_SYSTEM",
    "LICENSED_SOFTWARE",
    "IBEACONS",
    "SOFTWARE_UPDATES",
    "EXTENSION_ATTRIBUTES",
    "CONTENT_CACHING",
    "GROUP_MEMBERSHIPS",
];

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration, as loaded from all layers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub jamf: JamfConfig,
    pub database: DatabaseConfig,
    pub sync: SyncConfig,
    pub mobile_devices: MobileDevicesConfig,
    pub server: ServerConfig,
    pub reconcile: ReconcileConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
}

/// Webhooks: Jamf POSTs an event when a device submits inventory; the daemon fetches that
/// device's record within seconds. The daily delta stays the safety net.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Accept `POST /webhooks/jamf` and run the queue worker in `jamf-sync run`.
    pub enabled: bool,
    /// Own address for the webhook endpoint, so `server.listen` (metrics, admin) can stay
    /// private while Jamf reaches this one; unset serves it on `server.listen`.
    pub listen: Option<String>,
    /// HTTP Basic user Jamf sends (the webhook's "Basic Authentication").
    pub username: Option<String>,
    #[serde(serialize_with = "masked_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Header Jamf sends (the webhook's "Header Authentication"), e.g. `X-Jamf-Sync-Key`.
    pub header_name: Option<String>,
    #[serde(serialize_with = "masked_secret")]
    pub header_value: Option<SecretString>,
    pub header_value_file: Option<PathBuf>,
    /// Accept events without any authentication (only behind a proxy that authenticates).
    pub allow_unauthenticated: bool,
    /// Larger bodies are refused with 413 (Jamf's events are 1–3 KB).
    pub max_body_bytes: usize,
    /// A device is fetched once no new event for it came for this long, so the bursts Jamf
    /// sends around one inventory (added, inventory completed, check-in) cost one fetch.
    pub coalesce_ms: u64,
    /// ... but never later than this after its first queued event, however busy it is.
    pub max_delay_secs: u64,
    /// A check-in alone refetches a device only when its stored copy is older than this
    /// (check-ins come every 5–60 minutes per device); 0 refetches on every check-in.
    pub checkin_refresh_secs: u64,
    /// Failed fetches are retried with backoff; after this many attempts an event is dropped
    /// (logged and counted) and the next delta sync picks the device up.
    pub max_attempts: u32,
    /// The URL Jamf should call, for `jamf-sync webhooks setup`
    /// (e.g. `https://jamf-sync.example.com/webhooks/jamf`).
    pub public_url: Option<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            username: None,
            password: None,
            password_file: None,
            header_name: None,
            header_value: None,
            header_value_file: None,
            allow_unauthenticated: false,
            max_body_bytes: 65536,
            coalesce_ms: 5000,
            max_delay_secs: 60,
            checkin_refresh_secs: 3600,
            max_attempts: 20,
            public_url: None,
        }
    }
}

impl fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("header_name", &self.header_name)
            .field("header_value", &self.header_value.as_ref().map(|_| "***"))
            .field("header_value_file", &self.header_value_file)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("coalesce_ms", &self.coalesce_ms)
            .field("max_delay_secs", &self.max_delay_secs)
            .field("checkin_refresh_secs", &self.checkin_refresh_secs)
            .field("max_attempts", &self.max_attempts)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// How incoming webhooks must authenticate, resolved from the configuration.
#[derive(Clone, Default)]
pub struct WebhookAuth {
    pub basic: Option<(String, SecretString)>,
    pub header: Option<(axum::http::HeaderName, SecretString)>,
}

impl fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAuth")
            .field("basic", &self.basic.as_ref().map(|(u, _)| (u, "***")))
            .field("header", &self.header.as_ref().map(|(h, _)| (h, "***")))
            .finish()
    }
}

impl WebhookAuth {
    pub fn is_none(&self) -> bool {
        self.basic.is_none() && self.header.is_none()
    }
}

/// What to do with a device that is gone from Jamf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Set `deleted_at`, keep the row and its history.
    #[default]
    Mark,
    /// Remove the row and its extension attributes.
    Delete,
}

/// Reconcile: finding devices deleted in Jamf (a delta never sees a deletion).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Run reconcile on its own schedule in the daemon.
    pub enabled: bool,
    /// Cron schedule (read in `sync.timezone`). Default: Sundays at 03:00.
    pub schedule: String,
    /// Refuse to mark more than this fraction of an instance's devices in one run (a
    /// mis-scoped API role or an empty Jamf must not wipe the table); `--force` overrides.
    pub max_delete_fraction: f64,
    /// `mark` or `delete`.
    pub on_missing: OnMissing,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: "0 0 3 * * Sun".into(),
            max_delete_fraction: 0.1,
            on_missing: OnMissing::Mark,
        }
    }
}

/// The daemon's HTTP server (`jamf-sync run`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz`, `/status` and `POST /sync`. Containers
    /// set `0.0.0.0:9464`.
    pub listen: String,
    /// Bearer token that enables `POST /sync`; without one the endpoint is off.
    #[serde(serialize_with = "masked_secret")]
    pub admin_token: Option<SecretString>,
    /// File holding the admin token.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            admin_token: None,
            admin_token_file: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("admin_token_file", &self.admin_token_file)
            .finish()
    }
}

/// Which computers-inventory API version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// Detect from `/api/v1/jamf-pro-version`: v4 on 11.30+, v3 on 11.x before that, v1 otherwise.
    #[default]
    Auto,
    V1,
    V3,
    V4,
}

/// The Jamf Pro server and how to talk to it.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JamfConfig {
    /// Name of this Jamf server inside the database (`instance` column), so several servers can
    /// share one database. Change it only together with a fresh database.
    pub instance: String,
    /// Base URL of the Jamf Pro server, e.g. `https://example.jamfcloud.com`.
    pub url: Option<String>,
    /// API client id (preferred auth: Jamf Pro → API roles and clients).
    pub client_id: Option<String>,
    /// API client secret; or use `client_secret_file`.
    #[serde(serialize_with = "masked_secret")]
    pub client_secret: Option<SecretString>,
    /// File holding the API client secret (container secrets, systemd credentials).
    pub client_secret_file: Option<PathBuf>,
    /// User account name (legacy auth).
    pub username: Option<String>,
    /// User account password; or use `password_file`.
    #[serde(serialize_with = "masked_secret")]
    pub password: Option<SecretString>,
    /// File holding the user account password.
    pub password_file: Option<PathBuf>,
    /// Computers-inventory API version: `auto`, `v1`, `v3` or `v4`.
    pub api_version: ApiVersion,
    /// TCP + TLS connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Timeout for one request (headers and body) in seconds. Big inventory pages can take a
    /// minute on a busy server; lower it only together with `sync.page_size`.
    pub request_timeout_secs: u64,
    /// Concurrent connections to Jamf, token calls included. Jamf's limit (and ours) is 5.
    pub max_concurrency: u32,
    /// Renew the token this many seconds before it expires (capped at half its lifetime).
    pub token_refresh_margin_secs: u64,
    /// Retry policy for transient errors and back-pressure.
    pub retry: RetryConfig,
    /// Adaptive concurrency (see the `pacing` module).
    pub pacing: crate::pacing::PacingConfig,
}

impl Default for JamfConfig {
    fn default() -> Self {
        Self {
            instance: "default".into(),
            url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            username: None,
            password: None,
            password_file: None,
            api_version: ApiVersion::Auto,
            connect_timeout_secs: 10,
            request_timeout_secs: 120,
            max_concurrency: JAMF_MAX_CONCURRENCY,
            token_refresh_margin_secs: 60,
            retry: RetryConfig::default(),
            pacing: crate::pacing::PacingConfig::default(),
        }
    }
}

impl JamfConfig {
    /// Settings for a given server and credentials, with this configuration's tuning. The demo
    /// uses it to point the client at the simulator.
    pub fn settings_for(&self, url: Url, credentials: Credentials) -> JamfSettings {
        JamfSettings {
            instance: self.instance.clone(),
            url,
            credentials,
            api_version: self.api_version,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            max_concurrency: self.max_concurrency,
            token_refresh_margin: std::time::Duration::from_secs(self.token_refresh_margin_secs),
            retry: self.retry.clone(),
            pacing: self.pacing.clone(),
        }
    }
}

impl fmt::Debug for JamfConfig {
    // Hand-written so that even the presence of a secret's value cannot leak: only whether
    // one is configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JamfConfig")
            .field("instance", &self.instance)
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("client_secret_file", &self.client_secret_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("api_version", &self.api_version)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("max_concurrency", &self.max_concurrency)
            .field("token_refresh_margin_secs", &self.token_refresh_margin_secs)
            .field("retry", &self.retry)
            .field("pacing", &self.pacing)
            .finish()
    }
}

/// Exponential backoff with full jitter, bounded by a time budget per request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff ceiling in milliseconds; each retry doubles it (full jitter below it).
    pub initial_backoff_ms: u64,
    /// Largest backoff ceiling in milliseconds.
    pub max_backoff_ms: u64,
    /// Give up on one request after this many seconds of attempts and sleeps. A server down for
    /// longer fails the run (cursor untouched); the next run starts over.
    pub budget_secs: u64,
    /// Multiplier on the backoff after a `QuotaViolation` (Jamf Cloud's throttling answer).
    pub quota_violation_multiplier: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            budget_secs: 300,
            quota_violation_multiplier: 4,
        }
    }
}

/// Where the inventory copy lives.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://user:pass@host/db`.
    #[serde(serialize_with = "masked_url")]
    pub url: SecretString,
    /// File holding the database URL (it may carry a password).
    pub url_file: Option<PathBuf>,
    /// Connection pool size.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://jamf-sync.db"),
            url_file: None,
            max_connections: 5,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &mask_url(self.url.expose_secret()))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// How computers are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FetchStrategy {
    /// `inline` unless the sections ask for everything heavy; see README "Fetch strategy".
    #[default]
    Auto,
    /// Sections inline in list pages: one request per page of devices.
    Inline,
    /// List ids (GENERAL only), then one `computers-inventory-detail/{id}` per device, through
    /// the worker pool. Costs one request per device but every record has all sections.
    Detail,
}

/// What to sync and how gently.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Delta runs ask for `reportDate >= last successful run start - overlap`. Covers clock skew
    /// and inventory that arrived while the previous run was paging.
    pub overlap_secs: u64,
    /// Devices per list page (Jamf clamps at 2000). Larger pages are fewer requests but can time
    /// out on busy servers with heavy sections.
    pub page_size: u32,
    /// Computer inventory sections to fetch (a list, or one comma-separated string).
    #[serde(deserialize_with = "string_or_list")]
    pub sections: Vec<String>,
    /// `auto`, `inline` or `detail`.
    pub strategy: FetchStrategy,
    /// When the daemon syncs: cron with seconds (`sec min hour day month weekday`) or the
    /// classic five fields. Default: daily at 02:00.
    pub schedule: String,
    /// Time zone the schedule is read in (IANA name, e.g. `Europe/Berlin`); DST-correct.
    pub timezone: String,
    /// At start-up, run at once when the last successful run is older than the schedule's
    /// interval (catch-up after downtime).
    pub on_start: bool,
    /// On SIGTERM/SIGINT, let in-flight requests finish and commit for at most this long.
    pub shutdown_grace_secs: u64,
    /// A list page that times out (or answers 504) is retried at half the size, down to this;
    /// the size grows back by a quarter per good page.
    pub min_page_size: u32,
    /// A run still going after this many seconds fails (cursor untouched) so the next
    /// scheduled run starts over cleanly.
    pub run_deadline_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            overlap_secs: 3600,
            page_size: 100,
            sections: [
                "GENERAL",
                "HARDWARE",
                "OPERATING_SYSTEM",
                "USER_AND_LOCATION",
                "EXTENSION_ATTRIBUTES",
            ]
            .map(String::from)
            .to_vec(),
            strategy: FetchStrategy::Auto,
            schedule: "0 0 2 * * *".into(),
            timezone: "UTC".into(),
            on_start: true,
            shutdown_grace_secs: 20,
            min_page_size: 10,
            run_deadline_secs: 6 * 3600,
        }
    }
}

/// Mobile device sections of `/api/v2/mobile-devices/detail` (the `pro-api` source).
pub const MOBILE_DEVICE_SECTIONS: &[&str] = &[
    "GENERAL",
    "HARDWARE",
    "USER_AND_LOCATION",
    "PURCHASING",
    "SECURITY",
    "APPLICATIONS",
    "EBOOKS",
    "NETWORK",
    "SERVICE_SUBSCRIPTIONS",
    "CERTIFICATES",
    "PROFILES",
    "USER_PROFILES",
    "PROVISIONING_PROFILES",
    "SHARED_USERS",
    "GROUPS",
    "EXTENSION_ATTRIBUTES",
];

/// Where mobile devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MobileSource {
    /// Classic API advanced mobile device search + XML records (Jamf's recommended path).
    #[default]
    AdvancedSearch,
    /// `/api/v2/mobile-devices/detail` with an RSQL filter (Jamf Pro 11.4 and later).
    ProApi,
    /// `pro-api` on 11.4 and later, else `advanced-search`.
    Auto,
}

/// Mobile device sync.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MobileDevicesConfig {
    /// Sync mobile devices at all.
    pub enabled: bool,
    /// `advanced-search`, `pro-api` or `auto`.
    pub source: MobileSource,
    /// Name of the advanced mobile device search jamf-sync creates and keeps up to date. Use a
    /// different name per jamf-sync installation sharing one Jamf server.
    pub search_name: String,
    /// Use this existing advanced search as is (jamf-sync then never creates or edits one).
    pub search_id: Option<i64>,
    /// Timeout for reading (evaluating) the search on the server, seconds; it can take minutes
    /// on big fleets.
    pub search_timeout_secs: u64,
    /// The search's "Last Inventory Update" display value may be in the server's time zone;
    /// devices are skipped before fetching only when older than the cursor by more than this.
    pub prefilter_tolerance_secs: u64,
    /// Sections read by the `pro-api` source (GENERAL required).
    #[serde(deserialize_with = "string_or_list")]
    pub sections: Vec<String>,
    /// Own cron schedule for mobile devices; unset = `sync.schedule`.
    pub schedule: Option<String>,
}

impl Default for MobileDevicesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            source: MobileSource::AdvancedSearch,
            search_name: "jamf-sync: inventory updated recently".into(),
            search_id: None,
            search_timeout_secs: 600,
            prefilter_tolerance_secs: 15 * 3600,
            sections: [
                "GENERAL",
                "HARDWARE",
                "USER_AND_LOCATION",
                "EXTENSION_ATTRIBUTES",
            ]
            .map(String::from)
            .to_vec(),
            schedule: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter, e.g. `info` or `jamf_sync=debug,sqlx=warn`. `RUST_LOG` wins.
    pub filter: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Serializes a configured secret as `"***"`: only whether one is set is ever shown.
fn masked_secret<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

fn masked_url<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(v.expose_secret()))
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Jamf credentials, resolved from values or files.
#[derive(Clone)]
pub enum Credentials {
    ApiClient {
        client_id: String,
        client_secret: SecretString,
    },
    User {
        username: String,
        password: SecretString,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ApiClient { client_id, .. } => f
                .debug_struct("ApiClient")
                .field("client_id", client_id)
                .field("client_secret", &"***")
                .finish(),
            Credentials::User { username, .. } => f
                .debug_struct("User")
                .field("username", username)
                .field("password", &"***")
                .finish(),
        }
    }
}

/// Everything the Jamf client needs, validated.
#[derive(Debug, Clone)]
pub struct JamfSettings {
    pub instance: String,
    pub url: Url,
    pub credentials: Credentials,
    pub api_version: ApiVersion,
    pub connect_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub max_concurrency: u32,
    pub token_refresh_margin: std::time::Duration,
    pub retry: RetryConfig,
    pub pacing: crate::pacing::PacingConfig,
}

/// Where to find configuration.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// TOML file; `None` means defaults and environment only.
    pub file: Option<PathBuf>,
    /// Environment to read `JAMF_SYNC__*` from; `None` reads the process environment. Tests pass
    /// a map so they never touch global state.
    pub env: Option<HashMap<String, String>>,
}

impl Config {
    /// Loads and validates the configuration from all layers.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &sources.file {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder = builder
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
        }
        let mut env = config::Environment::with_prefix("JAMF_SYNC")
            .prefix_separator("__")
            .separator("__");
        if let Some(map) = &sources.env {
            env = env.source(Some(map.clone().into_iter().collect()));
        }
        let raw = builder
            .add_source(env)
            .build()
            .map_err(|e| ConfigError::new(config_error_key(&e), e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            // serde_path_to_error's path already ends in an unknown key's own name.
            let key = match unknown_field_name(&message) {
                Some(field) if path == "." => field,
                _ => path,
            };
            ConfigError::new(key, message)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything that does not need the Jamf server to be configured.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jamf.instance.trim().is_empty() {
            return Err(ConfigError::new("jamf.instance", "must not be empty"));
        }
        if !(1..=JAMF_MAX_CONCURRENCY).contains(&self.jamf.max_concurrency) {
            return Err(ConfigError::new(
                "jamf.max_concurrency",
                format!(
                    "must be between 1 and {JAMF_MAX_CONCURRENCY} (Jamf's connection limit), got {}",
                    self.jamf.max_concurrency
                ),
            ));
        }
        if self.jamf.request_timeout_secs == 0 {
            return Err(ConfigError::new("jamf.request_timeout_secs", "must be > 0"));
        }
        if self.jamf.connect_timeout_secs == 0 {
            return Err(ConfigError::new("jamf.connect_timeout_secs", "must be > 0"));
        }
        let r = &self.jamf.retry;
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(ConfigError::new(
                "jamf.retry.max_backoff_ms",
                "initial_backoff_ms must be > 0 and <= max_backoff_ms",
            ));
        }
        let p = &self.jamf.pacing;
        if !(1..=JAMF_MAX_CONCURRENCY).contains(&p.initial_limit) {
            return Err(ConfigError::new(
                "jamf.pacing.initial_limit",
                format!("must be between 1 and {JAMF_MAX_CONCURRENCY}"),
            ));
        }
        if !(p.decrease_factor > 0.0 && p.decrease_factor < 1.0) {
            return Err(ConfigError::new(
                "jamf.pacing.decrease_factor",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !(p.ewma_alpha > 0.0 && p.ewma_alpha <= 1.0) {
            return Err(ConfigError::new(
                "jamf.pacing.ewma_alpha",
                "must be in (0, 1]",
            ));
        }
        if p.increase_after == 0 {
            return Err(ConfigError::new(
                "jamf.pacing.increase_after",
                "must be >= 1",
            ));
        }
        if p.max_delay_ms > 0 && p.min_delay_ms > p.max_delay_ms {
            return Err(ConfigError::new(
                "jamf.pacing.min_delay_ms",
                "must not exceed max_delay_ms",
            ));
        }
        if self.sync.min_page_size == 0 || self.sync.min_page_size > self.sync.page_size {
            return Err(ConfigError::new(
                "sync.min_page_size",
                "must be between 1 and sync.page_size",
            ));
        }
        if self.sync.run_deadline_secs == 0 {
            return Err(ConfigError::new("sync.run_deadline_secs", "must be > 0"));
        }
        if r.quota_violation_multiplier == 0 {
            return Err(ConfigError::new(
                "jamf.retry.quota_violation_multiplier",
                "must be >= 1",
            ));
        }
        if !(1..=JAMF_MAX_PAGE_SIZE).contains(&self.sync.page_size) {
            return Err(ConfigError::new(
                "sync.page_size",
                format!(
                    "must be between 1 and {JAMF_MAX_PAGE_SIZE}, got {}",
                    self.sync.page_size
                ),
            ));
        }
        if self.sync.sections.is_empty() {
            return Err(ConfigError::new(
                "sync.sections",
                "must name at least GENERAL",
            ));
        }
        for s in &self.sync.sections {
            if !COMPUTER_SECTIONS.contains(&s.as_str()) {
                return Err(ConfigError::new(
                    "sync.sections",
                    format!(
                        "unknown section {s:?}; valid: {}",
                        COMPUTER_SECTIONS.join(", ")
                    ),
                ));
            }
        }
        if !self.sync.sections.iter().any(|s| s == "GENERAL") {
            return Err(ConfigError::new(
                "sync.sections",
                "must include GENERAL (it carries reportDate, which delta sync depends on)",
            ));
        }
        let m = &self.mobile_devices;
        if m.search_name.trim().is_empty() {
            return Err(ConfigError::new(
                "mobile_devices.search_name",
                "must not be empty",
            ));
        }
        if m.search_timeout_secs == 0 {
            return Err(ConfigError::new(
                "mobile_devices.search_timeout_secs",
                "must be > 0",
            ));
        }
        if let Some(id) = m.search_id.filter(|id| *id <= 0) {
            return Err(ConfigError::new(
                "mobile_devices.search_id",
                format!("must be a positive id, got {id}"),
            ));
        }
        for s in &m.sections {
            if !MOBILE_DEVICE_SECTIONS.contains(&s.as_str()) {
                return Err(ConfigError::new(
                    "mobile_devices.sections",
                    format!(
                        "unknown section {s:?}; valid: {}",
                        MOBILE_DEVICE_SECTIONS.join(", ")
                    ),
                ));
            }
        }
        if !m.sections.iter().any(|s| s == "GENERAL") {
            return Err(ConfigError::new(
                "mobile_devices.sections",
                "must include GENERAL",
            ));
        }
        crate::scheduler::Schedule::parse(&self.sync.schedule, &self.sync.timezone)
            .map_err(|e| ConfigError::new(e.0, e.1))?;
        if let Some(expr) = &self.mobile_devices.schedule {
            crate::scheduler::Schedule::parse(expr, &self.sync.timezone).map_err(|e| {
                let key = if e.0 == "sync.schedule" {
                    "mobile_devices.schedule".to_string()
                } else {
                    e.0
                };
                ConfigError::new(key, e.1)
            })?;
        }
        crate::scheduler::Schedule::parse(&self.reconcile.schedule, &self.sync.timezone).map_err(
            |e| {
                let key = if e.0 == "sync.schedule" {
                    "reconcile.schedule".to_string()
                } else {
                    e.0
                };
                ConfigError::new(key, e.1)
            },
        )?;
        if !(0.0..=1.0).contains(&self.reconcile.max_delete_fraction) {
            return Err(ConfigError::new(
                "reconcile.max_delete_fraction",
                format!(
                    "must be between 0 and 1, got {}",
                    self.reconcile.max_delete_fraction
                ),
            ));
        }
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::new("server.listen", format!("not host:port ({e})")))?;
        self.validate_webhooks()?;
        self.admin_token()?;
        if self.database.max_connections == 0 {
            return Err(ConfigError::new("database.max_connections", "must be > 0"));
        }
        self.database_url()?;
        if let Some(u) = self.jamf.url.as_deref().filter(|u| !u.trim().is_empty()) {
            parse_jamf_url(u)?;
        }
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let w = &self.webhooks;
        if let Some(listen) = &w.listen {
            listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError::new("webhooks.listen", format!("not host:port ({e})")))?;
        }
        if w.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "webhooks.max_body_bytes",
                "must be at least 1024 (Jamf's events are 1-3 KB)",
            ));
        }
        if w.max_delay_secs == 0 || w.max_delay_secs * 1000 < w.coalesce_ms {
            return Err(ConfigError::new(
                "webhooks.max_delay_secs",
                "must be > 0 and at least webhooks.coalesce_ms",
            ));
        }
        if w.max_attempts == 0 {
            return Err(ConfigError::new("webhooks.max_attempts", "must be >= 1"));
        }
        if let Some(u) = w.public_url.as_deref() {
            let url = Url::parse(u).map_err(|e| {
                ConfigError::new("webhooks.public_url", format!("not a valid URL: {e}"))
            })?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(ConfigError::new(
                    "webhooks.public_url",
                    "must be an http(s) URL",
                ));
            }
        }
        let auth = self.webhook_auth()?;
        if w.enabled && auth.is_none() && !w.allow_unauthenticated {
            return Err(ConfigError::new(
                "webhooks.username",
                "webhooks are enabled without authentication: set username and password \
                 (Basic) and/or header_name and header_value, or allow_unauthenticated = true",
            ));
        }
        Ok(())
    }

    /// The credentials incoming webhooks must carry.
    pub fn webhook_auth(&self) -> Result<WebhookAuth, ConfigError> {
        let w = &self.webhooks;
        let password = secret_from("webhooks.password", &w.password, &w.password_file)?;
        let basic = match (&w.username, password) {
            (Some(u), Some(p)) if !u.trim().is_empty() => Some((u.clone(), p)),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new("webhooks.username", "must not be empty"))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "webhooks.password",
                    "missing (or set password_file): username needs a password",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "webhooks.username",
                    "missing: password needs a username",
                ))
            }
        };
        let value = secret_from(
            "webhooks.header_value",
            &w.header_value,
            &w.header_value_file,
        )?;
        let header = match (&w.header_name, value) {
            (Some(name), Some(v)) => {
                let name = axum::http::HeaderName::try_from(name.trim()).map_err(|_| {
                    ConfigError::new(
                        "webhooks.header_name",
                        format!("{name:?} is not a valid HTTP header name"),
                    )
                })?;
                if name == axum::http::header::AUTHORIZATION && basic.is_some() {
                    return Err(ConfigError::new(
                        "webhooks.header_name",
                        "Authorization is taken by Basic auth; pick another header",
                    ));
                }
                Some((name, v))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "webhooks.header_value",
                    "missing (or set header_value_file): header_name needs a value",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "webhooks.header_name",
                    "missing: header_value needs a header name",
                ))
            }
        };
        Ok(WebhookAuth { basic, header })
    }

    /// The admin token enabling `POST /sync`, if configured.
    pub fn admin_token(&self) -> Result<Option<SecretString>, ConfigError> {
        secret_from(
            "server.admin_token",
            &self.server.admin_token,
            &self.server.admin_token_file,
        )
    }

    /// The database URL (from `database.url_file` when set), checked for a supported scheme.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = match &self.database.url_file {
            Some(path) => read_secret_file("database.url_file", path)?,
            None => self.database.url.clone(),
        };
        DatabaseUrl::parse(url)
    }

    /// The validated Jamf connection settings; fails when no server or credentials are given.
    pub fn jamf_settings(&self) -> Result<JamfSettings, ConfigError> {
        let j = &self.jamf;
        let url = match &j.url {
            Some(u) if !u.trim().is_empty() => parse_jamf_url(u)?,
            _ => {
                return Err(ConfigError::new(
                    "jamf.url",
                    "missing: set it in the config file or JAMF_SYNC__JAMF__URL \
                     (or run `jamf-sync demo` to try the built-in simulator)",
                ))
            }
        };
        let secret = secret_from(
            "jamf.client_secret",
            &j.client_secret,
            &j.client_secret_file,
        )?;
        let password = secret_from("jamf.password", &j.password, &j.password_file)?;
        let client = j.client_id.is_some() || secret.is_some();
        let user = j.username.is_some() || password.is_some();
        let credentials = match (client, user) {
            (true, true) => {
                return Err(ConfigError::new(
                    "jamf.client_id",
                    "both API-client (client_id/client_secret) and user-account \
                     (username/password) credentials are set; configure exactly one kind",
                ))
            }
            (false, false) => {
                return Err(ConfigError::new(
                    "jamf.client_id",
                    "no credentials: set client_id and client_secret (API client, preferred) \
                     or username and password (user account)",
                ))
            }
            (true, false) => Credentials::ApiClient {
                client_id: non_empty("jamf.client_id", j.client_id.clone())?,
                client_secret: secret.ok_or_else(|| {
                    ConfigError::new("jamf.client_secret", "missing (or set client_secret_file)")
                })?,
            },
            (false, true) => Credentials::User {
                username: non_empty("jamf.username", j.username.clone())?,
                password: password.ok_or_else(|| {
                    ConfigError::new("jamf.password", "missing (or set password_file)")
                })?,
            },
        };
        Ok(j.settings_for(url, credentials))
    }

    /// The effective configuration as TOML with every secret masked (`"***"`, passwords in
    /// URLs too); unset optional keys are left out. It reads back as a configuration file.
    pub fn masked_summary(&self) -> String {
        let mut shown = self.clone();
        // The database URL in effect, even when it comes from `url_file`.
        if let Ok(url) = self.database_url() {
            shown.database.url = SecretString::from(url.expose().to_string());
        }
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# the configuration cannot be shown as TOML: {e}\n"))
    }
}

fn config_error_key(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::NotFound(k) => k.clone(),
        config::ConfigError::FileParse { uri, .. } => {
            uri.clone().unwrap_or_else(|| "--config".into())
        }
        _ => "--config".into(),
    }
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn non_empty(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ConfigError::new(key, "missing or empty")),
    }
}

fn secret_from(
    key: &str,
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{key}_file"),
            format!("both {key} and {key}_file are set; use one"),
        )),
        (Some(v), None) if v.expose_secret().is_empty() => Err(ConfigError::new(key, "is empty")),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => read_secret_file(&format!("{key}_file"), path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    // systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY: a bare name is looked
    // up there first.
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|_| path.is_relative())
        .map(|dir| Path::new(&dir).join(path))
        .filter(|p| p.exists());
    let path = credential.as_deref().unwrap_or(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    // Files written by `echo` or editors end in a newline that is not part of the secret.
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

fn parse_jamf_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| ConfigError::new("jamf.url", format!("not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let local = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !local {
                return Err(ConfigError::new(
                    "jamf.url",
                    "must use https (plain http would send credentials in clear; it is only \
                     allowed for localhost, e.g. the simulator)",
                ));
            }
        }
        other => {
            return Err(ConfigError::new(
                "jamf.url",
                format!("unsupported scheme {other:?}; use https://"),
            ))
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::new("jamf.url", "has no host"));
    }
    Ok(url)
}

/// The database backend and its connection string.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(SecretString),
    Postgres(SecretString),
}

impl DatabaseUrl {
    pub fn parse(url: SecretString) -> Result<Self, ConfigError> {
        let s = url.expose_secret();
        if s.starts_with("sqlite:") {
            if s.trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .is_empty()
            {
                return Err(ConfigError::new("database.url", "sqlite URL has no path"));
            }
            Ok(DatabaseUrl::Sqlite(url))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Url::parse(s).map_err(|e| {
                ConfigError::new("database.url", format!("not a valid PostgreSQL URL: {e}"))
            })?;
            Ok(DatabaseUrl::Postgres(url))
        } else {
            Err(ConfigError::new(
                "database.url",
                format!(
                    "unsupported database URL {}; use sqlite://PATH or postgres://USER@HOST/DB",
                    mask_url(s)
                ),
            ))
        }
    }

    pub fn expose(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(s) | DatabaseUrl::Postgres(s) => s.expose_secret(),
        }
    }

    /// The URL with any password replaced by `***`, safe to log.
    pub fn masked(&self) -> String {
        mask_url(self.expose())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Replaces the password of a URL (and any `password=` query value) by `***`.
pub fn mask_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Not a URL we can parse: show only the scheme so nothing secret can leak.
        Err(_) => match raw.split_once(':') {
            Some((scheme, _)) if scheme.len() < 20 => format!("{scheme}:***"),
            _ => "***".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn mask_url_hides_password() {
        assert_eq!(
            mask_url("postgres://u:hunter2@db/x"),
            "postgres://u:***@db/x"
        );
        assert!(!mask_url("postgres://db/x?password=hunter2").contains("hunter2"));
        assert_eq!(mask_url("sqlite://jamf-sync.db"), "sqlite://jamf-sync.db");
    }

    #[test]
    fn env_overrides_defaults_with_double_underscore() {
        let c = Config::load(&env(&[
            ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
            ("JAMF_SYNC__JAMF__MAX_CONCURRENCY", "3"),
            ("JAMF_SYNC__SYNC__SECTIONS", "GENERAL,HARDWARE"),
        ]))
        .map_err(|e| e.to_string());
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.jamf.max_concurrency, 3);
        assert_eq!(c.sync.sections, vec!["GENERAL", "HARDWARE"]);
        assert_eq!(c.jamf.url.as_deref(), Some("https://x.jamfcloud.com"));
    }

    #[test]
    fn concurrency_above_five_is_rejected() {
        let e = Config::load(&env(&[("JAMF_SYNC__JAMF__MAX_CONCURRENCY", "6")]))
            .err()
            .map(|e| e.key);
        assert_eq!(e.as_deref(), Some("jamf.max_concurrency"));
    }
}
