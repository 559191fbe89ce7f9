//! `[sync]`, `[mobile_devices]`, `[reconcile]`, `[groups]` and `[history]`: what to sync, when,
//! and how gently.

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use super::secrets::string_or_list;
use super::ConfigError;
use crate::domain::facts::{COMPUTER_SECTIONS, JAMF_MAX_PAGE_SIZE, MOBILE_DEVICE_SECTIONS};

/// How computers are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FetchStrategy {
    /// `inline` unless the sections ask for everything heavy; see docs/design.md "Fetch strategy".
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
    /// The daemon retries a failed or interrupted run after this many seconds, doubling per
    /// failure up to `retry_max_secs`, until one succeeds or the next scheduled run comes.
    /// 0 turns retries off (a failed run waits for its next slot).
    pub retry_initial_secs: u64,
    pub retry_max_secs: u64,
    /// When Jamf's clock (its `Date` header) differs from ours by more than this, a delta run
    /// widens its overlap by the difference and warns (the cursor is kept in Jamf's clock,
    /// but a cursor stored by an older version, or without a measurement, is this host's).
    pub clock_skew_warn_secs: u64,
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
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            clock_skew_warn_secs: 60,
        }
    }
}

impl SyncConfig {
    /// The daemon's sync schedule.
    pub fn schedule(&self) -> Result<Schedule, ConfigError> {
        Schedule::parse("sync.schedule", &self.schedule, &self.timezone)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=JAMF_MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(ConfigError::new(
                "sync.page_size",
                format!(
                    "must be between 1 and {JAMF_MAX_PAGE_SIZE}, got {}",
                    self.page_size
                ),
            ));
        }
        if self.min_page_size == 0 || self.min_page_size > self.page_size {
            return Err(ConfigError::new(
                "sync.min_page_size",
                "must be between 1 and sync.page_size",
            ));
        }
        if self.run_deadline_secs == 0 {
            return Err(ConfigError::new("sync.run_deadline_secs", "must be > 0"));
        }
        if self.retry_initial_secs > 0 && self.retry_max_secs < self.retry_initial_secs {
            return Err(ConfigError::new(
                "sync.retry_max_secs",
                "must be at least sync.retry_initial_secs",
            ));
        }
        check_sections(
            "sync.sections",
            &self.sections,
            COMPUTER_SECTIONS,
            "must include GENERAL (it carries reportDate, which delta sync depends on)",
        )?;
        self.schedule().map(|_| ())
    }
}

/// Every section is one Jamf knows, and GENERAL is among them.
fn check_sections(
    key: &str,
    sections: &[String],
    known: &[&str],
    general: &str,
) -> Result<(), ConfigError> {
    if sections.is_empty() {
        return Err(ConfigError::new(key, "must name at least GENERAL"));
    }
    if let Some(s) = sections.iter().find(|s| !known.contains(&s.as_str())) {
        return Err(ConfigError::new(
            key,
            format!("unknown section {s:?}; valid: {}", known.join(", ")),
        ));
    }
    if !sections.iter().any(|s| s == "GENERAL") {
        return Err(ConfigError::new(key, general));
    }
    Ok(())
}

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

impl MobileDevicesConfig {
    /// The mobile devices' own schedule, or `sync.schedule`.
    pub fn schedule(&self, sync: &SyncConfig) -> Result<Schedule, ConfigError> {
        match &self.schedule {
            Some(expr) => Schedule::parse("mobile_devices.schedule", expr, &sync.timezone),
            None => sync.schedule(),
        }
    }

    pub(crate) fn validate(&self, sync: &SyncConfig) -> Result<(), ConfigError> {
        if self.search_name.trim().is_empty() {
            return Err(ConfigError::new(
                "mobile_devices.search_name",
                "must not be empty",
            ));
        }
        if self.search_timeout_secs == 0 {
            return Err(ConfigError::new(
                "mobile_devices.search_timeout_secs",
                "must be > 0",
            ));
        }
        if let Some(id) = self.search_id.filter(|id| *id <= 0) {
            return Err(ConfigError::new(
                "mobile_devices.search_id",
                format!("must be a positive id, got {id}"),
            ));
        }
        check_sections(
            "mobile_devices.sections",
            &self.sections,
            MOBILE_DEVICE_SECTIONS,
            "must include GENERAL",
        )?;
        self.schedule(sync).map(|_| ())
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

impl ReconcileConfig {
    pub fn schedule(&self, sync: &SyncConfig) -> Result<Schedule, ConfigError> {
        Schedule::parse("reconcile.schedule", &self.schedule, &sync.timezone)
    }

    pub(crate) fn validate(&self, sync: &SyncConfig) -> Result<(), ConfigError> {
        self.schedule(sync)?;
        if !(0.0..=1.0).contains(&self.max_delete_fraction) {
            return Err(ConfigError::new(
                "reconcile.max_delete_fraction",
                format!("must be between 0 and 1, got {}", self.max_delete_fraction),
            ));
        }
        Ok(())
    }
}

/// Group membership refresh: who is in each group, read from the groups' member lists
/// (smart groups recalculate and static groups are edited without new inventory).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Refresh group memberships on their own schedule in the daemon.
    pub enabled: bool,
    /// Cron schedule (read in `sync.timezone`). Default: hourly at 20 past.
    pub schedule: String,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: "0 20 * * * *".into(),
        }
    }
}

impl GroupsConfig {
    pub fn schedule(&self, sync: &SyncConfig) -> Result<Schedule, ConfigError> {
        Schedule::parse("groups.schedule", &self.schedule, &sync.timezone)
    }

    pub(crate) fn validate(&self, sync: &SyncConfig) -> Result<(), ConfigError> {
        self.schedule(sync).map(|_| ())
    }
}

/// The change history (`inventory_changes`): what changed in each device, field by field.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Record changes at all.
    pub enabled: bool,
    /// Rows older than this many days (by when they were recorded) are pruned after each
    /// successful sync; 0 keeps them forever.
    pub retention_days: u32,
    /// Fields kept out of the history (a list, or one comma-separated string): column names
    /// (`username`, `email`, …), `ea:<attribute name>`, `deleted`.
    #[serde(deserialize_with = "string_or_list")]
    pub exclude_fields: Vec<String>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 400,
            exclude_fields: Vec::new(),
        }
    }
}

impl HistoryConfig {
    /// Whether `field` is kept out of the history.
    pub fn excludes(&self, field: &str) -> bool {
        self.exclude_fields.iter().any(|f| f == field)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for f in &self.exclude_fields {
            let prefixed = ["ea:", "app:"]
                .iter()
                .any(|p| f.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
            let fields = crate::domain::records::history_fields();
            if !prefixed && !fields.contains(&f.as_str()) {
                return Err(ConfigError::new(
                    "history.exclude_fields",
                    format!(
                        "unknown field {f:?}: one of {}, or ea:<attribute name>, app:<bundle id>",
                        fields.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
