//! `[server]`, `[webhooks]` and `[log]`: the daemon's HTTP side and its output.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::secrets::{masked_secret, secret_from};
use super::ConfigError;

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
    /// A connection whose request headers have not all arrived this many seconds after it
    /// opened (or after its previous request: idle keep-alive) is closed.
    pub header_timeout_secs: u64,
    /// A request body (a webhook's) not all arrived this many seconds after its headers is
    /// answered 408 and its connection closed: with `webhooks.max_body_bytes` that is a
    /// minimum rate, so a client trickling a body holds a connection for this long at most.
    pub body_timeout_secs: u64,
    /// Open connections served normally, per listener. Beyond it a connection is served one
    /// request with a short header timeout and no keep-alive, and only a probe's
    /// (`/healthz`, `/readyz`, `/metrics`, `/status`; anything else is answered 503), so
    /// probes still answer while clients hold the rest; beyond twice it, new connections are
    /// closed.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            admin_token: None,
            admin_token_file: None,
            header_timeout_secs: 30,
            body_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("admin_token_file", &self.admin_token_file)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("body_timeout_secs", &self.body_timeout_secs)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl ServerConfig {
    /// The admin token enabling `POST /sync`, if configured.
    pub fn admin_token(&self) -> Result<Option<SecretString>, ConfigError> {
        secret_from(
            "server.admin_token",
            &self.admin_token,
            &self.admin_token_file,
        )
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        listen_addr("server.listen", &self.listen)?;
        if self.header_timeout_secs == 0 || self.header_timeout_secs > 3600 {
            return Err(ConfigError::new(
                "server.header_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.body_timeout_secs == 0 || self.body_timeout_secs > 3600 {
            return Err(ConfigError::new(
                "server.body_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be between 1 and 65536",
            ));
        }
        self.admin_token().map(|_| ())
    }
}

fn listen_addr(key: &str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| ConfigError::new(key, format!("not host:port ({e})")))
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
    /// Events waiting in the queue at most; beyond it new events are refused (503, counted
    /// `queue_full`) and the next delta sync covers their devices.
    pub max_queued: u64,
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
            max_queued: 100_000,
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
            .field("max_queued", &self.max_queued)
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

impl WebhooksConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(listen) = &self.listen {
            listen_addr("webhooks.listen", listen)?;
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "webhooks.max_body_bytes",
                "must be at least 1024 (Jamf's events are 1-3 KB)",
            ));
        }
        if self.max_delay_secs == 0 || self.max_delay_secs.saturating_mul(1000) < self.coalesce_ms {
            return Err(ConfigError::new(
                "webhooks.max_delay_secs",
                "must be > 0 and at least webhooks.coalesce_ms",
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new("webhooks.max_attempts", "must be >= 1"));
        }
        if self.max_queued == 0 || self.max_queued > i64::MAX as u64 {
            return Err(ConfigError::new("webhooks.max_queued", "must be >= 1"));
        }
        if let Some(u) = self.public_url.as_deref() {
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
        let auth = self.auth()?;
        if self.enabled && auth.is_none() && !self.allow_unauthenticated {
            return Err(ConfigError::new(
                "webhooks.username",
                "webhooks are enabled without authentication: set username and password \
                 (Basic) and/or header_name and header_value, or allow_unauthenticated = true",
            ));
        }
        Ok(())
    }

    /// The credentials incoming webhooks must carry.
    pub fn auth(&self) -> Result<WebhookAuth, ConfigError> {
        let password = secret_from("webhooks.password", &self.password, &self.password_file)?;
        let basic = match (&self.username, password) {
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
            &self.header_value,
            &self.header_value_file,
        )?;
        let header = match (&self.header_name, value) {
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
