//! Configuration: built-in defaults → TOML file → `JAMF_SYNC__SECTION__KEY` environment.
//!
//! Owns the typed configuration and its validation; one file per section group. It imports
//! only the domain (Jamf facts, the fields the change history knows). Invariants:
//! - every error names the offending key (`jamf.url`, `sync.page_size`, ...);
//! - unknown keys are rejected, so a typo never silently falls back to a default;
//! - secrets live in [`SecretString`](secrecy::SecretString) and can also be read from files
//!   (`*_file` keys), so they never need to appear in a config file, an environment listing or
//!   `Debug` output;
//! - `max_concurrency` can never exceed Jamf's limit of five connections.

mod database;
mod jamf;
mod schedule;
mod secrets;
mod server;
mod sync;

use std::collections::HashMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use database::{DatabaseConfig, DatabaseUrl};
pub use jamf::{ApiVersion, Credentials, JamfConfig, JamfSettings, PacingConfig, RetryConfig};
pub use schedule::Schedule;
pub use secrets::mask_url;
pub use server::{LogConfig, LogFormat, ServerConfig, WebhookAuth, WebhooksConfig};
pub use sync::{
    FetchStrategy, GroupsConfig, HistoryConfig, MobileDevicesConfig, MobileSource, OnMissing,
    ReconcileConfig, SyncConfig,
};

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
    pub groups: GroupsConfig,
    pub history: HistoryConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
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
        self.jamf.validate()?;
        self.sync.validate()?;
        self.mobile_devices.validate(&self.sync)?;
        self.reconcile.validate(&self.sync)?;
        self.groups.validate(&self.sync)?;
        self.history.validate()?;
        self.server.validate()?;
        self.webhooks.validate()?;
        self.database.validate()
    }

    /// The credentials incoming webhooks must carry.
    pub fn webhook_auth(&self) -> Result<WebhookAuth, ConfigError> {
        self.webhooks.auth()
    }

    /// The admin token enabling `POST /sync`, if configured.
    pub fn admin_token(&self) -> Result<Option<SecretString>, ConfigError> {
        self.server.admin_token()
    }

    /// The database URL (from `database.url_file` when set), checked for a supported scheme.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        self.database.resolved_url()
    }

    /// The validated Jamf connection settings; fails when no server or credentials are given.
    pub fn jamf_settings(&self) -> Result<JamfSettings, ConfigError> {
        self.jamf.settings()
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

    #[test]
    fn schedules_name_their_own_key() {
        let key = |pairs: &[(&str, &str)]| Config::load(&env(pairs)).err().map(|e| e.key);
        assert_eq!(
            key(&[("JAMF_SYNC__MOBILE_DEVICES__SCHEDULE", "often")]).as_deref(),
            Some("mobile_devices.schedule")
        );
        assert_eq!(
            key(&[("JAMF_SYNC__RECONCILE__SCHEDULE", "never")]).as_deref(),
            Some("reconcile.schedule")
        );
        assert_eq!(
            key(&[("JAMF_SYNC__GROUPS__SCHEDULE", "hourly")]).as_deref(),
            Some("groups.schedule")
        );
        assert_eq!(
            key(&[("JAMF_SYNC__SYNC__TIMEZONE", "Mars/Base")]).as_deref(),
            Some("sync.timezone")
        );
    }
}
