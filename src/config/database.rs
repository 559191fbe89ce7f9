//! `[database]`: where the inventory copy lives.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::secrets::{mask_url, masked_url, read_secret_file};
use super::ConfigError;

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

impl DatabaseConfig {
    /// The database URL (from `url_file` when set), checked for a supported scheme.
    pub fn resolved_url(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = match &self.url_file {
            Some(path) => read_secret_file("database.url_file", path)?,
            None => self.url.clone(),
        };
        DatabaseUrl::parse(url)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new("database.max_connections", "must be > 0"));
        }
        self.resolved_url().map(|_| ())
    }
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

/// `[ha]`: how processes sharing a PostgreSQL database hand instances over.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// How long an instance stays with a holder that stopped renewing its lease (killed, cut
    /// off from the database, paused): the longest failover takes. Heartbeats come every third.
    pub failover_secs: u64,
    /// After taking an instance from a holder that let its lease expire (rather than giving
    /// it up), wait this long before the first Jamf request: the old holder may be frozen (a
    /// paused VM, a stopped process), not dead, with requests in flight and five sockets
    /// open, and Jamf must never see more than five. Unset: the longest request this
    /// configuration makes (`jamf.request_timeout_secs`, and with mobile devices
    /// `mobile_devices.search_timeout_secs`), which also outlasts a server's idle keep-alive
    /// timeout. 0: no wait. A clean hand-over (a holder stopping) never waits.
    pub takeover_quiet_secs: Option<u64>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            failover_secs: 30,
            takeover_quiet_secs: None,
        }
    }
}

impl HaConfig {
    pub fn failover(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.failover_secs)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(3..=3600).contains(&self.failover_secs) {
            return Err(ConfigError::new(
                "ha.failover_secs",
                "must be between 3 and 3600 seconds",
            ));
        }
        if self.takeover_quiet_secs.is_some_and(|q| q > 3600) {
            return Err(ConfigError::new(
                "ha.takeover_quiet_secs",
                "must be at most 3600 seconds",
            ));
        }
        Ok(())
    }
}
