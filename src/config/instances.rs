//! `[instances.NAME]`: several Jamf Pro servers in one deployment.
//!
//! Each `[instances.NAME]` table takes the `[jamf]` keys and optional `sync`, `mobile_devices`,
//! `reconcile`, `webhooks` and `groups` tables. Resolution merges, key by key, the top-level
//! section (its file keys and `JAMF_SYNC__…` variables) with the instance's own keys, and only
//! then deserializes the typed section: the raw values stay the config crate's, so an
//! environment string still reads as a number, and `deny_unknown_fields` still names a typo
//! (no `#[serde(flatten)]` on the way in, which would lose both).
//!
//! Invariants:
//! - instance names are lowercase letters and digits, words joined by single `_`, so they
//!   survive the environment form (`JAMF_SYNC__INSTANCES__EU_WEST__URL`);
//! - with `[instances.*]`, `[jamf]` holds defaults only: a `jamf.url` or `jamf.instance` there
//!   is an error naming it;
//! - no two instances point at one Jamf server (each instance has its own five connections;
//!   two on one server would double what Jamf allows);
//! - every error names the key as the user wrote it (`instances.eu.sync.page_size`).

use std::collections::BTreeMap;

use config::{Map, Value, ValueKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    ConfigError, GroupsConfig, JamfConfig, MobileDevicesConfig, ReconcileConfig, SyncConfig,
    WebhooksConfig,
};

/// Tables an instance may override, key by key, next to its `[jamf]` keys.
pub const OVERRIDES: &[&str] = &["sync", "mobile_devices", "reconcile", "webhooks", "groups"];

/// One Jamf instance's configuration, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceConfig {
    /// The instance's name (`instance` column, metrics label `jamf_instance`).
    #[serde(skip)]
    pub name: String,
    #[serde(flatten)]
    pub jamf: JamfConfig,
    pub sync: SyncConfig,
    pub mobile_devices: MobileDevicesConfig,
    pub reconcile: ReconcileConfig,
    pub webhooks: WebhooksConfig,
    pub groups: GroupsConfig,
}

/// Whether `name` may name an instance.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('_').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// `over` laid over `base`, key by key (tables merge; anything else replaces).
fn merge(base: Option<&Value>, over: Value) -> Value {
    match (base.map(|b| &b.kind), over.kind) {
        (Some(ValueKind::Table(base)), ValueKind::Table(over)) => {
            let mut merged = base.clone();
            for (k, v) in over {
                let m = merge(base.get(&k), v);
                merged.insert(k, m);
            }
            Value::new(None, ValueKind::Table(merged))
        }
        (_, kind) => Value::new(None, kind),
    }
}

/// Deserializes `value`, naming a failing key `prefix` + its path.
pub(super) fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde_path_to_error's path already ends in an unknown key's own name.
        let key = match super::unknown_field_name(&message) {
            Some(field) if path == "." => field,
            _ => path,
        };
        let key = if key == "." {
            prefix.trim_end_matches('.').to_string()
        } else {
            format!("{prefix}{key}")
        };
        ConfigError::new(key, message)
    })
}

/// The key an instance's section validation names, as the user wrote it.
fn rekey(e: ConfigError, name: &str) -> ConfigError {
    let key = match e.key.strip_prefix("jamf.") {
        Some(rest) => format!("instances.{name}.{rest}"),
        None => format!("instances.{name}.{}", e.key),
    };
    ConfigError::new(key, e.message)
}

fn table(value: Value, key: &str) -> Result<Map<String, Value>, ConfigError> {
    match value.kind {
        ValueKind::Table(t) => Ok(t),
        _ => Err(ConfigError::new(key, "must be a table")),
    }
}

/// Resolves `[instances.*]` over the raw top-level tables `top` (without `instances`).
pub(super) fn resolve(
    top: &Map<String, Value>,
    instances: Value,
) -> Result<BTreeMap<String, InstanceConfig>, ConfigError> {
    let instances = table(instances, "instances")?;
    if instances.is_empty() {
        return Err(ConfigError::new(
            "instances",
            "is empty: add an [instances.NAME] table per Jamf server, or use [jamf] alone",
        ));
    }
    let jamf_defaults = match top.get("jamf").map(|v| &v.kind) {
        Some(ValueKind::Table(t)) => t.clone(),
        _ => Map::new(),
    };
    for key in ["url", "instance"] {
        if jamf_defaults.contains_key(key) {
            return Err(ConfigError::new(
                format!("jamf.{key}"),
                format!(
                    "is set next to [instances.*] ({}): with several instances each \
                     [instances.NAME] has its own url and its name is the table's; keys under \
                     [jamf] without url act as defaults for every instance",
                    instances.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (name, raw) in instances {
        let at = format!("instances.{name}");
        if !valid_name(&name) {
            return Err(ConfigError::new(
                at,
                "an instance name is lowercase letters and digits, words joined by single `_` \
                 (it must survive JAMF_SYNC__INSTANCES__NAME__… variables), at most 63 characters",
            ));
        }
        let mut own = table(raw, &at)?;
        let mut sections = BTreeMap::new();
        for section in OVERRIDES {
            let merged = match own.remove(*section) {
                Some(over) => merge(top.get(*section), over),
                None => top
                    .get(*section)
                    .cloned()
                    .unwrap_or_else(|| Value::new(None, ValueKind::Table(Map::new()))),
            };
            sections.insert(*section, merged);
        }
        if let Some(given) = own.remove("instance") {
            if given.clone().into_string().ok().as_deref() != Some(name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.instance"),
                    "an instance is named by its table; leave instance out",
                ));
            }
        }
        if !own.contains_key("url") {
            return Err(ConfigError::new(
                format!("{at}.url"),
                "missing: every [instances.NAME] needs the url of its Jamf Pro server",
            ));
        }
        own.insert("instance".into(), Value::new(None, name.clone()));
        let jamf = merge(
            Some(&Value::new(None, ValueKind::Table(jamf_defaults.clone()))),
            Value::new(None, ValueKind::Table(own)),
        );
        let mut section = |s: &str| {
            sections
                .remove(s)
                .unwrap_or_else(|| Value::new(None, ValueKind::Table(Map::new())))
        };
        let prefix = format!("{at}.");
        let instance = InstanceConfig {
            jamf: typed(jamf, &prefix)?,
            sync: typed(section("sync"), &format!("{at}.sync."))?,
            mobile_devices: typed(section("mobile_devices"), &format!("{at}.mobile_devices."))?,
            reconcile: typed(section("reconcile"), &format!("{at}.reconcile."))?,
            webhooks: typed(section("webhooks"), &format!("{at}.webhooks."))?,
            groups: typed(section("groups"), &format!("{at}.groups."))?,
            name: name.clone(),
        };
        instance.validate()?;
        out.insert(name, instance);
    }
    let mut servers: BTreeMap<String, &str> = BTreeMap::new();
    for (name, i) in &out {
        let server = i
            .jamf
            .settings()
            .map(|s| s.url.origin().ascii_serialization())
            .map_err(|e| rekey(e, name))?;
        if let Some(other) = servers.insert(server, name) {
            return Err(ConfigError::new(
                format!("instances.{name}.url"),
                format!(
                    "points at the same Jamf server as instances.{other}.url: Jamf allows five \
                     connections per server, and each instance takes five"
                ),
            ));
        }
    }
    Ok(out)
}

impl InstanceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        self.jamf.validate().map_err(|e| rekey(e, name))?;
        self.sync.validate().map_err(|e| rekey(e, name))?;
        self.mobile_devices
            .validate(&self.sync)
            .map_err(|e| rekey(e, name))?;
        self.reconcile
            .validate(&self.sync)
            .map_err(|e| rekey(e, name))?;
        self.groups
            .validate(&self.sync)
            .map_err(|e| rekey(e, name))?;
        self.webhooks.validate().map_err(|e| rekey(e, name))
    }
}
