//! `[jamf]`: the Jamf Pro server, credentials, timeouts, retries and pacing.
//!
//! Invariant: `max_concurrency` and the pacing limits never exceed Jamf's five connections.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::secrets::{masked_opt_url, masked_secret, non_empty, secret_from};
use super::ConfigError;
use crate::domain::facts::JAMF_MAX_CONCURRENCY;

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
    #[serde(serialize_with = "masked_opt_url")]
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
    /// Adaptive concurrency (see the Jamf client's `pacing` module).
    pub pacing: PacingConfig,
    /// PEM file of the CA that signed an on-premises Jamf server's certificate, trusted in
    /// addition to the system's roots (verification stays on).
    pub ca_file: Option<PathBuf>,
    /// Largest answer body accepted from Jamf, in MiB; a bigger one fails that request.
    pub max_response_mb: u64,
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
            pacing: PacingConfig::default(),
            ca_file: None,
            max_response_mb: 256,
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
            .field("ca_file", &self.ca_file)
            .field("max_response_mb", &self.max_response_mb)
            .finish()
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
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_concurrency: self.max_concurrency,
            token_refresh_margin: Duration::from_secs(self.token_refresh_margin_secs),
            retry: self.retry.clone(),
            pacing: self.pacing.clone(),
            ca_file: self.ca_file.clone(),
            max_response_bytes: self.max_response_mb.saturating_mul(1 << 20) as usize,
            fail_fast: false,
            secret_file: None,
            version_ttl: VERSION_TTL,
        }
    }

    /// The validated connection settings; fails when no server or credentials are given.
    pub fn settings(&self) -> Result<JamfSettings, ConfigError> {
        let url = match &self.url {
            Some(u) if !u.trim().is_empty() => parse_jamf_url(u)?,
            _ => {
                return Err(ConfigError::new(
                    "jamf.url",
                    "missing: set it in the config file or JAMF_SYNC__JAMF__URL \
                     (or run `jamf-sync demo` to try the built-in simulator)",
                ))
            }
        };
        Ok(JamfSettings {
            secret_file: self
                .client_secret_file
                .clone()
                .or_else(|| self.password_file.clone()),
            ..self.settings_for(url, self.credentials()?)
        })
    }

    fn credentials(&self) -> Result<Credentials, ConfigError> {
        let secret = secret_from(
            "jamf.client_secret",
            &self.client_secret,
            &self.client_secret_file,
        )?;
        let password = secret_from("jamf.password", &self.password, &self.password_file)?;
        let client = self.client_id.is_some() || secret.is_some();
        let user = self.username.is_some() || password.is_some();
        match (client, user) {
            (true, true) => Err(ConfigError::new(
                "jamf.client_id",
                "both API-client (client_id/client_secret) and user-account \
                 (username/password) credentials are set; configure exactly one kind",
            )),
            (false, false) => Err(ConfigError::new(
                "jamf.client_id",
                "no credentials: set client_id and client_secret (API client, preferred) \
                 or username and password (user account)",
            )),
            (true, false) => Ok(Credentials::ApiClient {
                client_id: non_empty("jamf.client_id", self.client_id.clone())?,
                client_secret: secret.ok_or_else(|| {
                    ConfigError::new("jamf.client_secret", "missing (or set client_secret_file)")
                })?,
            }),
            (false, true) => Ok(Credentials::User {
                username: non_empty("jamf.username", self.username.clone())?,
                password: password.ok_or_else(|| {
                    ConfigError::new("jamf.password", "missing (or set password_file)")
                })?,
            }),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.instance.trim().is_empty() {
            return Err(ConfigError::new("jamf.instance", "must not be empty"));
        }
        if !(1..=JAMF_MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(ConfigError::new(
                "jamf.max_concurrency",
                format!(
                    "must be between 1 and {JAMF_MAX_CONCURRENCY} (Jamf's connection limit), got {}",
                    self.max_concurrency
                ),
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::new("jamf.request_timeout_secs", "must be > 0"));
        }
        if self.connect_timeout_secs == 0 {
            return Err(ConfigError::new("jamf.connect_timeout_secs", "must be > 0"));
        }
        if self.max_response_mb == 0 || self.max_response_mb > 4096 {
            return Err(ConfigError::new(
                "jamf.max_response_mb",
                "must be between 1 and 4096",
            ));
        }
        if let Some(path) = &self.ca_file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "jamf.ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        self.retry.validate()?;
        self.pacing.validate()?;
        if let Some(u) = self.url.as_deref().filter(|u| !u.trim().is_empty()) {
            parse_jamf_url(u)?;
        }
        Ok(())
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

impl RetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.initial_backoff_ms == 0 || self.max_backoff_ms < self.initial_backoff_ms {
            return Err(ConfigError::new(
                "jamf.retry.max_backoff_ms",
                "initial_backoff_ms must be > 0 and <= max_backoff_ms",
            ));
        }
        if self.quota_violation_multiplier == 0 {
            return Err(ConfigError::new(
                "jamf.retry.quota_violation_multiplier",
                "must be >= 1",
            ));
        }
        Ok(())
    }
}

/// Tuning of the adaptive concurrency controller (`[jamf.pacing]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingConfig {
    /// Adapt the limit to the server; `false` keeps it at `jamf.max_concurrency`.
    pub adaptive: bool,
    /// Limit to start from (1..=max_concurrency). Lower is gentler on a struggling server;
    /// higher reaches full speed sooner.
    pub initial_limit: u32,
    /// After the first back-pressure, grow by one after this many healthy answers per unit of
    /// the current limit (before it, slow start grows by one per healthy answer).
    pub increase_after: u32,
    /// Multiply the limit by this on back-pressure (0 < f < 1).
    pub decrease_factor: f64,
    /// An answer is slow when it exceeds the class mean by this many deviations...
    pub slow_deviations: f64,
    /// ...and by at least this fraction of the mean (constant latencies have no deviation)...
    pub slow_floor: f64,
    /// ...and by at least this many milliseconds (scheduling noise on fast answers is not load).
    pub slow_min_ms: u64,
    /// Weight of a new sample in the EWMA baseline (0 < a <= 1).
    pub ewma_alpha: f64,
    /// Samples a class needs before "slow" is judged.
    pub warmup: u32,
    /// Smallest gap between request starts once back-pressure was seen, in ms (0 = none).
    pub min_delay_ms: u64,
    /// Largest gap between request starts, in ms; 0 (the default) disables the gap.
    pub max_delay_ms: u64,
    /// A run starts at the limit and latency baselines the previous run reached against the
    /// same server (kept in the database) if they are at most this old; 0 = always start cold.
    pub remember_hours: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            initial_limit: 2,
            increase_after: 5,
            decrease_factor: 0.5,
            slow_deviations: 4.0,
            slow_floor: 0.5,
            slow_min_ms: 25,
            ewma_alpha: 0.2,
            warmup: 5,
            min_delay_ms: 0,
            max_delay_ms: 0,
            remember_hours: 168,
        }
    }
}

impl PacingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=JAMF_MAX_CONCURRENCY).contains(&self.initial_limit) {
            return Err(ConfigError::new(
                "jamf.pacing.initial_limit",
                format!("must be between 1 and {JAMF_MAX_CONCURRENCY}"),
            ));
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return Err(ConfigError::new(
                "jamf.pacing.decrease_factor",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::new(
                "jamf.pacing.ewma_alpha",
                "must be in (0, 1]",
            ));
        }
        if self.increase_after == 0 {
            return Err(ConfigError::new(
                "jamf.pacing.increase_after",
                "must be >= 1",
            ));
        }
        if self.max_delay_ms > 0 && self.min_delay_ms > self.max_delay_ms {
            return Err(ConfigError::new(
                "jamf.pacing.min_delay_ms",
                "must not exceed max_delay_ms",
            ));
        }
        Ok(())
    }
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
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrency: u32,
    pub token_refresh_margin: Duration,
    pub retry: RetryConfig,
    pub pacing: PacingConfig,
    pub ca_file: Option<PathBuf>,
    pub max_response_bytes: usize,
    /// Give up at once when the server was never reached (connection refused, DNS, TLS) instead
    /// of retrying for the whole budget: the one-shot CLI, where a typo should fail in seconds.
    pub fail_fast: bool,
    /// The file the secret (client secret or password) came from, read again when Jamf
    /// refuses the credentials: a rotated secret is picked up without a restart.
    pub secret_file: Option<PathBuf>,
    /// How long a detected computers-inventory API version is used before the server version
    /// is asked again (a Jamf upgrade changes it; a long-running daemon must notice).
    pub version_ttl: Duration,
}

/// [`JamfSettings::version_ttl`] outside tests.
pub const VERSION_TTL: Duration = Duration::from_secs(3600);

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
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in the URL would end up in logs and `config check`; they have keys.
        return Err(ConfigError::new(
            "jamf.url",
            "must not hold credentials (user:password@); use jamf.client_id/client_secret or \
             jamf.username/password",
        ));
    }
    Ok(url)
}
