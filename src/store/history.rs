//! The change history (`inventory_changes`): what changed between a device's stored copy and
//! the record that replaces it, one row per field, written in the transaction that writes the
//! record.
//!
//! Invariants (a public contract, see docs/queries.md "Change history"):
//! - only a record that is written produces rows: the first sight of a device (nothing stored),
//!   an unchanged record (same hash) and a record the newer-wins guard keeps out produce none;
//! - `field` is the column's name in `computers` / `mobile_devices`, `ea:<attribute name>` for
//!   an extension attribute, `deleted` when reconcile marks a device deleted or a deleted
//!   device is written again; columns that move with every report (`Record::MOVING`)
//!   are never history;
//! - values are text: booleans `true`/`false`, timestamps RFC 3339 in UTC;
//! - a record without any extension attribute says nothing about them (the section may not
//!   have been asked for): no `ea:` rows come from it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::HistoryConfig;
use crate::domain::Record;

/// A stored device as the history compares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Snapshot {
    /// Every projected column's value as history text, in the writer's column order.
    pub cells: Vec<Option<String>>,
    /// Extension attribute values by name.
    pub eas: BTreeMap<String, Option<String>>,
    pub deleted: bool,
}

/// One changed field of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub jamf_id: i64,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One row of `inventory_changes`, as `jamf-sync history` prints it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, PartialEq)]
pub struct ChangeRow {
    pub instance: String,
    pub device_type: String,
    pub jamf_id: i64,
    pub changed_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub run_id: Option<i64>,
}

/// The changes from `before` to `after`; `columns` names `before.cells` in order.
pub(super) fn diff<R: Record>(
    columns: &[&str],
    before: &Snapshot,
    after: &R,
    policy: &HistoryConfig,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |field: String, old: Option<String>, new: Option<String>| {
        if old != new && !policy.excludes(&field) {
            out.push(Change {
                jamf_id: after.jamf_id(),
                field,
                old,
                new,
            });
        }
    };
    if before.deleted {
        push("deleted".into(), Some("true".into()), Some("false".into()));
    }
    for ((column, old), cell) in columns.iter().zip(&before.cells).zip(after.all_cells()) {
        if !R::MOVING.contains(column) {
            push((*column).to_string(), old.clone(), cell.history_text());
        }
    }
    let eas = after.extension_attributes();
    if !eas.is_empty() {
        let new: BTreeMap<&str, &Option<String>> =
            eas.iter().map(|e| (e.name.as_str(), &e.value)).collect();
        for (name, value) in &new {
            let old = before.eas.get(*name).cloned().flatten();
            push(format!("ea:{name}"), old, (*value).clone());
        }
        for (name, old) in &before.eas {
            if !new.contains_key(name.as_str()) && old.is_some() {
                push(format!("ea:{name}"), old.clone(), None);
            }
        }
    }
    out
}

/// The changes of one device's keyed child values (`key → value`, e.g. bundle id → version):
/// a key that appeared, went, or whose value changed, as `field = prefix + key`.
pub(super) fn diff_keyed(
    jamf_id: i64,
    prefix: &str,
    before: &BTreeMap<String, Option<String>>,
    after: &BTreeMap<String, Option<String>>,
    policy: &HistoryConfig,
) -> Vec<Change> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let old = before.get(key).cloned().flatten();
            let new = after.get(key).cloned().flatten();
            let moved = before.contains_key(key) != after.contains_key(key);
            let field = format!("{prefix}{key}");
            ((old != new || moved) && !policy.excludes(&field)).then_some(Change {
                jamf_id,
                field,
                old,
                new,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Computer, DeviceInfo, EaValue};

    fn mac(name: &str, os: &str, ea: &[(&str, &str)]) -> Computer {
        Computer {
            jamf_id: 7,
            info: DeviceInfo {
                name: Some(name.into()),
                os_version: Some(os.into()),
                managed: Some(true),
                ..DeviceInfo::default()
            },
            report_date: Some(Utc::now()),
            last_contact: Some(Utc::now()),
            extension_attributes: ea
                .iter()
                .map(|(n, v)| EaValue {
                    definition_id: n.to_string(),
                    name: n.to_string(),
                    value: Some(v.to_string()),
                    data_type: None,
                })
                .collect(),
            ..Computer::default()
        }
    }

    fn snapshot(c: &Computer) -> Snapshot {
        Snapshot {
            cells: c.all_cells().iter().map(|x| x.history_text()).collect(),
            eas: c
                .extension_attributes
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            deleted: false,
        }
    }

    fn columns() -> Vec<&'static str> {
        crate::store::sql::upsert::projected::<Computer>().collect()
    }

    fn fields(changes: &[Change]) -> Vec<(&str, Option<&str>, Option<&str>)> {
        changes
            .iter()
            .map(|c| (c.field.as_str(), c.old.as_deref(), c.new.as_deref()))
            .collect()
    }

    #[test]
    fn only_changed_fields_count_and_moving_columns_never() {
        let before = mac("a", "15.1", &[("Owner", "x"), ("Dept", "y")]);
        let mut after = mac("b", "15.1", &[("Owner", "z"), ("New", "n")]);
        after.report_date = Some(Utc::now() + chrono::Duration::days(1));
        let changes = diff(
            &columns(),
            &snapshot(&before),
            &after,
            &HistoryConfig::default(),
        );
        assert_eq!(
            fields(&changes),
            vec![
                ("name", Some("a"), Some("b")),
                ("ea:New", None, Some("n")),
                ("ea:Owner", Some("x"), Some("z")),
                ("ea:Dept", Some("y"), None),
            ]
        );
        assert!(diff(
            &columns(),
            &snapshot(&before),
            &before,
            &HistoryConfig::default()
        )
        .is_empty());
    }

    #[test]
    fn excluded_fields_reappearance_and_a_record_without_attributes() {
        let before = mac("a", "15.1", &[("Owner", "x")]);
        let after = mac("b", "15.2", &[]);
        let mut stored = snapshot(&before);
        stored.deleted = true;
        let policy = HistoryConfig {
            exclude_fields: vec!["name".into()],
            ..HistoryConfig::default()
        };
        assert_eq!(
            fields(&diff(&columns(), &stored, &after, &policy)),
            vec![
                ("deleted", Some("true"), Some("false")),
                ("os_version", Some("15.1"), Some("15.2")),
            ]
        );
    }

    #[test]
    fn values_are_written_as_text() {
        use crate::domain::Cell;
        let t = DateTime::parse_from_rfc3339("2026-12-03T10:00:00.250+01:00")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(
            Cell::Time(t).history_text().as_deref(),
            Some("2026-12-03T09:00:00Z")
        );
        assert_eq!(
            Cell::Bool(Some(false)).history_text().as_deref(),
            Some("false")
        );
        assert_eq!(Cell::Text(None).history_text(), None);
    }
}
