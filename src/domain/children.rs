//! Child tables: the lists inside a device record (applications, group memberships, …) as
//! rows of their own tables, one table per list.
//!
//! Invariants:
//! - a record carries a [`Children`] for a table only when the section behind it was in the
//!   answer: a section not asked for leaves its table as it was (the store never empties a
//!   table for a missing section);
//! - [`Children::hash`] depends only on the rows, in order: the store rewrites a device's rows
//!   only when it changed;
//! - every table's first two columns are `instance, jamf_id`, followed by
//!   [`ChildTable::columns`] in order.

/// How a child column is typed in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    Text,
    Bool,
    Int,
    Time,
}

/// One child column value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    Text(Option<String>),
    Bool(Option<bool>),
    Int(Option<i64>),
    Time(Option<chrono::DateTime<chrono::Utc>>),
}

/// The leading number of a version string (`130` of `130.0.6723.92`, `5` of `5.2b3`).
pub fn version_major(version: Option<&str>) -> Option<i64> {
    let digits: String = version?
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Val {
    pub fn as_text(&self) -> Option<String> {
        match self {
            Val::Text(v) => v.clone(),
            Val::Bool(v) => v.map(|b| b.to_string()),
            Val::Int(v) => v.map(|i| i.to_string()),
            Val::Time(v) => v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

/// What the change history records of a child table: one row per key (`field =
/// "<prefix><key>"`) whose value appeared, went or changed.
#[derive(Debug, Clone, Copy)]
pub struct ChildHistory {
    pub prefix: &'static str,
    /// The column that names a row (e.g. the bundle id).
    pub key: usize,
    /// Used when `key` is empty (e.g. the application's name).
    pub fallback: usize,
    /// The column whose change is recorded (e.g. the version).
    pub value: usize,
}

/// A child table's shape.
#[derive(Debug)]
pub struct ChildTable {
    pub name: &'static str,
    /// The kind whose devices own the rows (`Kind::device_type`).
    pub device_type: &'static str,
    pub columns: &'static [(&'static str, ValType)],
    pub history: Option<ChildHistory>,
}

/// One device's rows of one child table.
#[derive(Debug, Clone)]
pub struct Children {
    pub table: &'static ChildTable,
    pub rows: Vec<Vec<Val>>,
}

impl Children {
    /// A stable hash of the rows.
    pub fn hash(&self) -> i64 {
        let mut text = String::new();
        for row in &self.rows {
            for v in row {
                match v.as_text() {
                    Some(t) => {
                        text.push('+');
                        text.push_str(&t.replace('\\', "\\\\").replace('\u{1f}', "\\u"));
                    }
                    None => text.push('-'),
                }
                text.push('\u{1f}');
            }
            text.push('\n');
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
    }

    /// `key → value` as the change history compares them.
    pub fn history_values(&self) -> std::collections::BTreeMap<String, Option<String>> {
        let Some(h) = self.table.history else {
            return Default::default();
        };
        self.rows
            .iter()
            .filter_map(|row| {
                let key = history_key(
                    row.get(h.key).and_then(Val::as_text),
                    row.get(h.fallback).and_then(Val::as_text),
                )?;
                Some((key, row.get(h.value).and_then(Val::as_text)))
            })
            .collect()
    }
}

/// The name a child row has in the history: its key, or the fallback when the key is empty.
pub fn history_key(key: Option<String>, fallback: Option<String>) -> Option<String> {
    key.filter(|k| !k.is_empty()).or(fallback)
}

/// `computer_applications`: the APPLICATIONS section.
pub static COMPUTER_APPLICATIONS: ChildTable = ChildTable {
    name: "computer_applications",
    device_type: "computer",
    columns: &[
        ("name", ValType::Text),
        ("path", ValType::Text),
        ("version", ValType::Text),
        ("bundle_id", ValType::Text),
        ("mac_app_store", ValType::Bool),
        ("size_megabytes", ValType::Int),
        ("update_available", ValType::Bool),
        ("version_major", ValType::Int),
    ],
    history: Some(ChildHistory {
        prefix: "app:",
        key: 3,
        fallback: 0,
        value: 2,
    }),
};

/// `computer_group_memberships`: the GROUP_MEMBERSHIPS section.
pub static COMPUTER_GROUP_MEMBERSHIPS: ChildTable = ChildTable {
    name: "computer_group_memberships",
    device_type: "computer",
    columns: &[
        ("group_id", ValType::Text),
        ("group_name", ValType::Text),
        ("smart", ValType::Bool),
    ],
    history: None,
};

/// `computer_configuration_profiles`: the CONFIGURATION_PROFILES section.
pub static COMPUTER_CONFIGURATION_PROFILES: ChildTable = ChildTable {
    name: "computer_configuration_profiles",
    device_type: "computer",
    columns: &[
        ("profile_id", ValType::Text),
        ("display_name", ValType::Text),
        ("profile_identifier", ValType::Text),
        ("uuid", ValType::Text),
        ("username", ValType::Text),
        ("removable", ValType::Bool),
        ("last_installed", ValType::Time),
    ],
    history: None,
};

/// `computer_local_user_accounts`: the LOCAL_USER_ACCOUNTS section.
pub static COMPUTER_LOCAL_USER_ACCOUNTS: ChildTable = ChildTable {
    name: "computer_local_user_accounts",
    device_type: "computer",
    columns: &[
        ("uid", ValType::Text),
        ("user_guid", ValType::Text),
        ("username", ValType::Text),
        ("full_name", ValType::Text),
        ("admin", ValType::Bool),
        ("home_directory", ValType::Text),
        ("file_vault2_enabled", ValType::Bool),
        ("user_account_type", ValType::Text),
    ],
    history: None,
};

/// `computer_certificates`: the CERTIFICATES section.
pub static COMPUTER_CERTIFICATES: ChildTable = ChildTable {
    name: "computer_certificates",
    device_type: "computer",
    columns: &[
        ("common_name", ValType::Text),
        ("subject_name", ValType::Text),
        ("serial_number", ValType::Text),
        ("sha1_fingerprint", ValType::Text),
        ("identity", ValType::Bool),
        ("username", ValType::Text),
        ("lifecycle_status", ValType::Text),
        ("certificate_status", ValType::Text),
        ("issued_date", ValType::Time),
        ("expiration_date", ValType::Time),
    ],
    history: None,
};

/// `mobile_device_applications`: a mobile device's apps (Classic record). `version` is the
/// short version people search by; `build` Jamf's `application_version`.
pub static MOBILE_DEVICE_APPLICATIONS: ChildTable = ChildTable {
    name: "mobile_device_applications",
    device_type: "mobile_device",
    columns: &[
        ("name", ValType::Text),
        ("identifier", ValType::Text),
        ("version", ValType::Text),
        ("build", ValType::Text),
        ("version_major", ValType::Int),
    ],
    history: Some(ChildHistory {
        prefix: "app:",
        key: 1,
        fallback: 0,
        value: 2,
    }),
};

/// `mobile_device_group_memberships`: the groups a mobile device is in. `smart` is NULL from
/// the Classic record (it does not say).
pub static MOBILE_DEVICE_GROUP_MEMBERSHIPS: ChildTable = ChildTable {
    name: "mobile_device_group_memberships",
    device_type: "mobile_device",
    columns: &[
        ("group_id", ValType::Text),
        ("group_name", ValType::Text),
        ("smart", ValType::Bool),
    ],
    history: None,
};

/// `mobile_device_configuration_profiles`: the profiles installed. `removable` and
/// `last_installed` come from the Jamf Pro API only (NULL from the Classic record).
pub static MOBILE_DEVICE_CONFIGURATION_PROFILES: ChildTable = ChildTable {
    name: "mobile_device_configuration_profiles",
    device_type: "mobile_device",
    columns: &[
        ("display_name", ValType::Text),
        ("profile_identifier", ValType::Text),
        ("uuid", ValType::Text),
        ("version", ValType::Text),
        ("removable", ValType::Bool),
        ("last_installed", ValType::Time),
    ],
    history: None,
};

/// `mobile_device_certificates`: the certificates installed.
pub static MOBILE_DEVICE_CERTIFICATES: ChildTable = ChildTable {
    name: "mobile_device_certificates",
    device_type: "mobile_device",
    columns: &[
        ("common_name", ValType::Text),
        ("identity", ValType::Bool),
        ("expiration_date", ValType::Time),
    ],
    history: None,
};

/// The group membership table of a kind's devices.
pub fn memberships(kind: super::Kind) -> &'static ChildTable {
    match kind {
        super::Kind::Computers => &COMPUTER_GROUP_MEMBERSHIPS,
        super::Kind::MobileDevices => &MOBILE_DEVICE_GROUP_MEMBERSHIPS,
    }
}

/// Every child table, for purging a device's rows.
pub static ALL: &[&ChildTable] = &[
    &COMPUTER_APPLICATIONS,
    &COMPUTER_GROUP_MEMBERSHIPS,
    &COMPUTER_CONFIGURATION_PROFILES,
    &COMPUTER_LOCAL_USER_ACCOUNTS,
    &COMPUTER_CERTIFICATES,
    &MOBILE_DEVICE_APPLICATIONS,
    &MOBILE_DEVICE_GROUP_MEMBERSHIPS,
    &MOBILE_DEVICE_CONFIGURATION_PROFILES,
    &MOBILE_DEVICE_CERTIFICATES,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn app(bundle: &str, name: &str, version: &str) -> Vec<Val> {
        vec![
            Val::Text(Some(name.into())),
            Val::Text(Some(format!("/Applications/{name}"))),
            Val::Text(Some(version.into())),
            Val::Text(Some(bundle.into())),
            Val::Bool(Some(false)),
            Val::Int(Some(12)),
            Val::Bool(None),
            Val::Int(version_major(Some(version))),
        ]
    }

    #[test]
    fn the_hash_follows_the_rows_and_history_keys_fall_back_to_the_name() {
        let a = Children {
            table: &COMPUTER_APPLICATIONS,
            rows: vec![app("com.a", "A.app", "1.0"), app("", "B.app", "2.0")],
        };
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.rows[0][2] = Val::Text(Some("1.1".into()));
        assert_ne!(a.hash(), b.hash());
        // A value that contains the separators does not collide with two values.
        let c = Children {
            table: &COMPUTER_GROUP_MEMBERSHIPS,
            rows: vec![vec![
                Val::Text(Some("1\u{1f}+x".into())),
                Val::Text(None),
                Val::Bool(None),
            ]],
        };
        let d = Children {
            table: &COMPUTER_GROUP_MEMBERSHIPS,
            rows: vec![vec![
                Val::Text(Some("1".into())),
                Val::Text(Some("x".into())),
                Val::Bool(None),
            ]],
        };
        assert_ne!(c.hash(), d.hash());
        assert_eq!(version_major(Some("130.0.6723.92")), Some(130));
        assert_eq!(version_major(Some(" 5.2b3")), Some(5));
        assert_eq!(version_major(Some("beta")), None);
        assert_eq!(version_major(None), None);
        let h = a.history_values();
        assert_eq!(h.get("com.a"), Some(&Some("1.0".to_string())));
        assert_eq!(h.get("B.app"), Some(&Some("2.0".to_string())));
    }
}
