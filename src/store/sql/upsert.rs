//! The upsert's SQL text for a record type: its columns, and the newer-wins guard as SQL
//! (the form of [`crate::store::newer_wins`] the database enforces, so concurrent writers keep
//! the newest copy whatever order they commit in).

use crate::domain::Record;

/// Every projected column of a record type, in the order of [`Record::all_cells`].
pub(in crate::store) fn projected<R: Record>() -> impl Iterator<Item = &'static str> {
    R::SHARED.iter().chain(R::COLUMNS).copied()
}

/// The upsert's column list after `instance, jamf_id`.
pub(in crate::store) fn insert_columns<R: Record>() -> String {
    let mut cols: Vec<&str> = projected::<R>().collect();
    cols.extend([
        "raw",
        "raw_hash",
        "fetched_at",
        "first_seen_at",
        "changed_at",
        "synced_at",
        "deleted_at",
    ]);
    cols.join(", ")
}

/// `ON CONFLICT … DO UPDATE SET … [WHERE guard]` for a record type.
pub(in crate::store) fn upsert_tail<R: Record>(overwrite: bool) -> String {
    let table = R::KIND.as_str();
    let mut set: Vec<String> = projected::<R>()
        .chain(["raw", "raw_hash", "fetched_at", "changed_at", "synced_at"])
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    set.push("deleted_at = NULL".into());
    let mut sql = format!(
        " ON CONFLICT (instance, jamf_id) DO UPDATE SET {}",
        set.join(", ")
    );
    if !overwrite {
        // The SQL form of `store::newer_wins`.
        let d = R::AS_OF_COLUMN;
        sql.push_str(&format!(
            " WHERE CASE WHEN {table}.deleted_at IS NOT NULL \
             THEN ({table}.fetched_at IS NULL OR excluded.fetched_at > {table}.fetched_at) \
             ELSE (excluded.{d} > {table}.{d} \
             OR ({table}.{d} IS NULL AND excluded.{d} IS NOT NULL) \
             OR (excluded.{d} IS NOT DISTINCT FROM {table}.{d} \
             AND ({table}.fetched_at IS NULL OR excluded.fetched_at >= {table}.fetched_at))) END"
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Computer, MobileDevice};

    #[test]
    fn the_guard_names_the_kinds_own_date_and_overwrite_drops_it() {
        let c = upsert_tail::<Computer>(false);
        assert!(
            c.contains("excluded.report_date > computers.report_date"),
            "{c}"
        );
        let m = upsert_tail::<MobileDevice>(false);
        assert!(m.contains("mobile_devices.last_inventory_update"), "{m}");
        assert!(!upsert_tail::<Computer>(true).contains("WHERE"));
        assert!(insert_columns::<MobileDevice>()
            .starts_with("udid, serial_number, name, model, os_version, managed, supervised, username, email, os_type, last_inventory_update, raw"));
    }
}
