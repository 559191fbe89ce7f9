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
mod instances;
mod jamf;
mod schedule;
mod secrets;
mod server;
mod sync;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use database::{DatabaseConfig, DatabaseUrl, HaConfig};
pub use instances::InstanceConfig;
pub use jamf::{
    ApiVersion, Credentials, JamfConfig, JamfSettings, PacingConfig, RetryConfig, VERSION_TTL,
};
pub use schedule::Schedule;
pub use secrets::mask_url;
pub(crate) use secrets::read_secret_file;
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
    pub ha: HaConfig,
    /// Several Jamf servers (`[instances.NAME]`), resolved; empty with a plain `[jamf]`.
    #[serde(skip_deserializing, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceConfig>,
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
    /// Whether this configuration copies a kind (computers always).
    pub fn copies(&self, kind: crate::domain::Kind) -> bool {
        match kind {
            crate::domain::Kind::Computers => true,
            crate::domain::Kind::MobileDevices => self.mobile_devices.enabled,
        }
    }

    /// The kinds this configuration copies, in [`Kind::ALL`](crate::domain::Kind::ALL) order.
    pub fn enabled_kinds(&self) -> Vec<crate::domain::Kind> {
        crate::domain::Kind::ALL
            .iter()
            .copied()
            .filter(|k| self.copies(*k))
            .collect()
    }

    /// When a kind's delta sync runs.
    pub fn sync_schedule(&self, kind: crate::domain::Kind) -> Result<Schedule, ConfigError> {
        match kind {
            crate::domain::Kind::Computers => self.sync.schedule(),
            crate::domain::Kind::MobileDevices => self.mobile_devices.schedule(&self.sync),
        }
    }

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
        // Raw tables first: `[instances.*]` are resolved over the top-level ones.
        let mut top: config::Map<String, config::Value> = raw
            .try_deserialize()
            .map_err(|e| ConfigError::new(config_error_key(&e), e.to_string()))?;
        let instances = top.remove("instances");
        let mut cfg: Config = instances::typed(
            config::Value::new(None, config::ValueKind::Table(top.clone())),
            "",
        )?;
        cfg.validate()?;
        if let Some(instances) = instances {
            cfg.instances = instances::resolve(&top, instances)?;
        }
        Ok(cfg)
    }

    /// This configuration as one instance sees it: that instance's `[jamf]`, `sync`,
    /// `mobile_devices`, `reconcile`, `webhooks` and `groups`, everything else shared.
    pub fn for_instance(&self, instance: &InstanceConfig) -> Config {
        let mut cfg = self.clone();
        cfg.instances.clear();
        cfg.jamf = instance.jamf.clone();
        cfg.sync = instance.sync.clone();
        cfg.mobile_devices = instance.mobile_devices.clone();
        cfg.reconcile = instance.reconcile.clone();
        cfg.webhooks = instance.webhooks.clone();
        cfg.groups = instance.groups.clone();
        cfg
    }

    /// Every configured Jamf instance: the `[instances.*]`, or the one `[jamf]` server named
    /// by `jamf.instance`.
    pub fn instances(&self) -> Vec<InstanceConfig> {
        if !self.instances.is_empty() {
            return self.instances.values().cloned().collect();
        }
        vec![InstanceConfig {
            name: self.jamf.instance.clone(),
            jamf: self.jamf.clone(),
            sync: self.sync.clone(),
            mobile_devices: self.mobile_devices.clone(),
            reconcile: self.reconcile.clone(),
            webhooks: self.webhooks.clone(),
            groups: self.groups.clone(),
        }]
    }

    /// How long a new holder of an instance taken from a holder that let its lease expire
    /// waits before its first Jamf request (`ha.takeover_quiet_secs`; unset: the longest
    /// request any configured instance makes).
    pub fn takeover_quiet(&self) -> std::time::Duration {
        let secs = self.ha.takeover_quiet_secs.unwrap_or_else(|| {
            self.instances()
                .iter()
                .map(|i| {
                    let search = match i.mobile_devices.enabled {
                        true => i.mobile_devices.search_timeout_secs,
                        false => 0,
                    };
                    i.jamf.request_timeout_secs.max(search)
                })
                .max()
                .unwrap_or(0)
        });
        std::time::Duration::from_secs(secs)
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
        self.ha.validate()?;
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
        let shown = toml::Table::try_from(&shown).map(|mut t| {
            // Next to `[instances.*]` the `[jamf]` table holds defaults only: no name.
            if !self.instances.is_empty() {
                if let Some(toml::Value::Table(jamf)) = t.get_mut("jamf") {
                    jamf.remove("instance");
                }
            }
            t
        });
        shown
            .and_then(|t| toml::to_string(&t))
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

    fn load_toml(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::new("test", e.to_string()))?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError::new("test", e.to_string()))?;
        Config::load(&Sources {
            file: Some(path),
            ..env(pairs)
        })
    }

    const TWO: &str = r#"
[jamf]
request_timeout_secs = 30
[sync]
page_size = 200
[instances.eu]
url = "https://eu.example.jamfcloud.com"
client_id = "eu-id"
client_secret = "eu-secret"
[instances.us_east]
url = "https://us.example.jamfcloud.com"
username = "api"
password = "pw"
max_concurrency = 3
[instances.us_east.sync]
schedule = "0 0 3 * * *"
"#;

    #[test]
    fn instances_override_the_top_level_key_by_key() {
        let c = load_toml(TWO, &[]).unwrap_or_else(|e| panic!("{e}"));
        let all = c.instances();
        let names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eu", "us_east"]);
        let (eu, us) = (&all[0], &all[1]);
        assert_eq!(eu.jamf.instance, "eu");
        // [jamf] keys without url are defaults for every instance.
        assert_eq!(eu.jamf.request_timeout_secs, 30);
        assert_eq!(us.jamf.request_timeout_secs, 30);
        assert_eq!(us.jamf.max_concurrency, 3);
        assert_eq!(eu.jamf.max_concurrency, 5);
        // [sync] applies to every instance; an instance's sync table overrides key by key.
        assert_eq!(us.sync.schedule, "0 0 3 * * *");
        assert_eq!(us.sync.page_size, 200);
        assert_eq!(eu.sync.page_size, 200);
        assert_ne!(eu.sync.schedule, us.sync.schedule);
        assert!(eu.jamf.settings().is_ok() && us.jamf.settings().is_ok());
        // `config check` shows the instances, secrets masked, and reads back.
        let shown = c.masked_summary();
        assert!(shown.contains("[instances.eu]"), "{shown}");
        assert!(
            !shown.contains("eu-secret") && !shown.contains("\"pw\""),
            "{shown}"
        );
        let again = load_toml(&shown, &[]).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        let names: Vec<String> = again.instances().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["eu", "us_east"]);
        assert_eq!(again.instances()[1].sync.schedule, "0 0 3 * * *");
    }

    #[test]
    fn instances_from_the_environment_convert_like_the_top_level() {
        let c = Config::load(&env(&[
            (
                "JAMF_SYNC__INSTANCES__EU__URL",
                "https://eu.example.jamfcloud.com",
            ),
            ("JAMF_SYNC__INSTANCES__EU__CLIENT_ID", "id"),
            ("JAMF_SYNC__INSTANCES__EU__CLIENT_SECRET", "s"),
            ("JAMF_SYNC__INSTANCES__EU__MAX_CONCURRENCY", "2"),
            ("JAMF_SYNC__INSTANCES__EU__SYNC__PAGE_SIZE", "50"),
            (
                "JAMF_SYNC__INSTANCES__EU__SYNC__SECTIONS",
                "GENERAL,HARDWARE",
            ),
            ("JAMF_SYNC__INSTANCES__EU__MOBILE_DEVICES__ENABLED", "false"),
            ("JAMF_SYNC__INSTANCES__EU__PACING__INITIAL_LIMIT", "4"),
            (
                "JAMF_SYNC__INSTANCES__US_EAST__URL",
                "https://us.example.jamfcloud.com",
            ),
            ("JAMF_SYNC__INSTANCES__US_EAST__CLIENT_ID", "id2"),
            ("JAMF_SYNC__INSTANCES__US_EAST__CLIENT_SECRET", "s2"),
            ("JAMF_SYNC__SYNC__RUN_DEADLINE_SECS", "600"),
            ("JAMF_SYNC__JAMF__CONNECT_TIMEOUT_SECS", "7"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let all = c.instances();
        assert_eq!(all.len(), 2);
        let eu = &all[0];
        assert_eq!(eu.name, "eu");
        assert_eq!(eu.jamf.max_concurrency, 2);
        assert_eq!(eu.jamf.pacing.initial_limit, 4);
        assert_eq!(eu.jamf.connect_timeout_secs, 7);
        assert_eq!(eu.sync.page_size, 50);
        assert_eq!(eu.sync.sections, vec!["GENERAL", "HARDWARE"]);
        assert_eq!(eu.sync.run_deadline_secs, 600);
        assert!(!eu.mobile_devices.enabled);
        let us = &all[1];
        assert_eq!(us.name, "us_east");
        assert_eq!(us.sync.run_deadline_secs, 600);
        assert_eq!(us.jamf.connect_timeout_secs, 7);
        assert!(us.mobile_devices.enabled);
    }

    #[test]
    fn a_plain_jamf_section_is_one_instance() {
        let c = Config::load(&env(&[
            ("JAMF_SYNC__JAMF__URL", "https://x.jamfcloud.com"),
            ("JAMF_SYNC__JAMF__INSTANCE", "prod"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let all = c.instances();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "prod");
        assert_eq!(all[0].jamf.url.as_deref(), Some("https://x.jamfcloud.com"));
        assert!(!c.masked_summary().contains("[instances"));
    }

    #[test]
    fn instance_errors_name_the_key_as_written() {
        let key = |text: &str, pairs: &[(&str, &str)]| load_toml(text, pairs).err().map(|e| e.key);
        let one = |extra: &str| {
            format!(
                "[instances.eu]\nurl = \"https://eu.example.com\"\nclient_id = \"i\"\nclient_secret = \"s\"\n{extra}"
            )
        };
        assert_eq!(
            key(&one("bogus = 1"), &[]).as_deref(),
            Some("instances.eu.bogus")
        );
        assert_eq!(
            key(&one("[instances.eu.sync]\nbogus = 1"), &[]).as_deref(),
            Some("instances.eu.sync.bogus")
        );
        assert_eq!(
            key(&one("max_concurrency = 9"), &[]).as_deref(),
            Some("instances.eu.max_concurrency")
        );
        assert_eq!(
            key(
                &one(""),
                &[("JAMF_SYNC__INSTANCES__EU__MAX_CONCURRENCY", "nine")]
            )
            .as_deref(),
            Some("instances.eu.max_concurrency")
        );
        assert_eq!(
            key(&one("[instances.eu.sync]\nschedule = \"often\""), &[]).as_deref(),
            Some("instances.eu.sync.schedule")
        );
        assert_eq!(
            key(&one("instance = \"other\""), &[]).as_deref(),
            Some("instances.eu.instance")
        );
        assert_eq!(
            key(
                &format!("[jamf]\nurl = \"https://x.example.com\"\n{}", one("")),
                &[]
            )
            .as_deref(),
            Some("jamf.url")
        );
        assert_eq!(
            key(
                "[instances.eu]\nclient_id = \"i\"\nclient_secret = \"s\"",
                &[]
            )
            .as_deref(),
            Some("instances.eu.url")
        );
        assert_eq!(
            key("[instances.eu]\nurl = \"https://eu.example.com\"", &[]).as_deref(),
            Some("instances.eu.client_id")
        );
        assert_eq!(
            key(&one("").replace("instances.eu", "instances.EU-west"), &[]).as_deref(),
            Some("instances.EU-west")
        );
        let same = format!(
            "{}[instances.copy]\nurl = \"https://eu.example.com/\"\nclient_id = \"i\"\nclient_secret = \"s\"\n",
            one("")
        );
        let e = load_toml(&same, &[]).err();
        assert_eq!(
            e.as_ref().map(|e| e.key.as_str()),
            Some("instances.eu.url"),
            "{e:?}"
        );
        assert!(e.is_some_and(|e| e.message.contains("instances.copy.url")));
        for bad in ["a__b", "_a", "a_", "", "é"] {
            assert!(!instances::valid_name(bad), "{bad:?}");
        }
        for good in ["eu", "us_east_2", "t0"] {
            assert!(instances::valid_name(good), "{good:?}");
        }
    }
}
