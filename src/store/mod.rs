//! The inventory store: one [`Store`] trait, a SQLite and a PostgreSQL implementation. It knows
//! the domain's records and nothing about where they come from.
//!
//! Invariants:
//! - every write of a device goes through [`Store::write_devices`], whatever asked for it
//!   (sync page, webhook refresh, reconcile); it is idempotent, keyed by `(instance, jamf_id)`;
//! - **newer wins**: a stored copy is never replaced by one that is older ([`newer_wins`]): by
//!   inventory time (`report_date` / `last_inventory_update`, a missing one counting as
//!   oldest), and at equal inventory times by the time the copy was requested from Jamf
//!   (`fetched_at`); a device marked deleted comes back only with a copy requested after the
//!   deletion was seen. Both times are in Jamf's clock (the client's `jamf_time`), which every
//!   replica shares, so a replica whose own clock runs ahead cannot make its older copy win.
//!   The guard is part of the upsert's SQL, so writers may run concurrently
//!   (a webhook refresh beside a sync) and the newest copy stays whatever order they commit
//!   in. `overwrite` (the operator's `sync --full --overwrite`) writes what Jamf says
//!   regardless;
//! - a page of records, its extension attributes and the run's progress commit in one
//!   transaction: a crash leaves whole pages, never half of one;
//! - the delta cursor moves only in [`Store::finish_run`] of a *succeeded* run, in the same
//!   transaction that marks the run succeeded; a failed run never moves it;
//! - `first_seen_at` is set once; `changed_at` moves only when the raw record changed;
//!   `synced_at` moves whenever a run saw the device; a written copy clears `deleted_at`.
//!
//! Layout: [`Store`] (`api`) is the contract; [`Db`] hands each call to the configured backend;
//! the SQL is written once in `sql` ([`SqlStore`], generic over a [`Backend`]), grouped by
//! concern, and `sqlite`/`postgres` hold only what differs (connecting, how a write transaction
//! begins, the bulk inserts). The schemas live in `migrations/<backend>`; a test keeps the two
//! the same but for the type differences it lists, and checks [`INSTANCE_TABLES`] against
//! them.

mod api;
mod db;
mod history;
pub mod lease;
pub mod lock;
mod postgres;
mod refusal;
mod rows;
mod sql;
mod sqlite;
mod views;

use chrono::{DateTime, Utc};

pub use api::Store;
pub use db::Db;
pub use history::ChangeRow;
pub use postgres::PgStore;
pub use rows::{
    CursorRow, GroupMembers, GroupRow, NewRun, NewWebhookEvent, PageOutcome, Progress, QueuedEvent,
    RunEnd, RunRequestRow, RunRow, StoredDevice, StoredIds, SyncFailure, Write,
};
pub use sql::{Backend, SqlStore};
pub use sqlite::SqliteStore;
pub use views::{view_name, EaColumn};

use crate::domain::{Kind, Record};

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A coordinated write for an instance this process does not hold (any more).
    #[error(
        "this process does not hold Jamf instance `{instance}` (its lease expired or another \
         process took it over): write refused"
    )]
    NotHolder { instance: String },
    /// A live process holds the instance (an unexpired lease): it is not to be purged.
    #[error(
        "Jamf instance `{instance}` is held by a live process ({holder}): stop it or remove the \
         instance from its configuration first"
    )]
    Held { instance: String, holder: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Whether a copy may replace the stored one (the invariant the upsert's SQL guard enforces;
/// kept here as plain code to test and to read). `None` dates count as oldest.
pub fn newer_wins(
    incoming: (Option<DateTime<Utc>>, DateTime<Utc>),
    stored: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    stored_deleted: bool,
) -> bool {
    let (as_of, fetched_at) = incoming;
    let (stored_as_of, stored_fetched_at) = stored;
    if stored_deleted {
        return stored_fetched_at.is_none_or(|f| fetched_at > f);
    }
    match (as_of, stored_as_of) {
        (Some(a), Some(b)) if a != b => a > b,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => stored_fetched_at.is_none_or(|f| fetched_at >= f),
    }
}

/// The tables, besides the child tables (`domain::children::ALL`), whose rows belong to one
/// instance (an `instance` column): what purging an instance removes, in this order.
pub const INSTANCE_TABLES: &[&str] = &[
    "child_hashes",
    "extension_attributes",
    "inventory_changes",
    "computers",
    "mobile_devices",
    "sync_failures",
    "sync_cursors",
    "sync_runs",
    "webhook_events",
    "pacing_memory",
    "ea_views",
    "run_requests",
    "instance_leases",
];

/// Every table whose rows belong to one instance: the child tables, then [`INSTANCE_TABLES`].
pub fn instance_tables() -> impl Iterator<Item = &'static str> {
    crate::domain::children::ALL
        .iter()
        .map(|t| t.name)
        .chain(INSTANCE_TABLES.iter().copied())
}

/// Splits a page into records whose stored copy differs (or is absent or deleted) and records
/// stored identically. `stored` holds `(jamf_id, raw_hash, deleted)` of the page's ids.
pub fn partition_changed<'a, R: Record>(
    records: &'a [R],
    stored: &[(i64, i64, bool)],
) -> (Vec<&'a R>, Vec<i64>) {
    let known: std::collections::HashMap<i64, (i64, bool)> =
        stored.iter().map(|(id, h, d)| (*id, (*h, *d))).collect();
    let mut changed = Vec::new();
    let mut unchanged = Vec::new();
    for r in records {
        match known.get(&r.jamf_id()) {
            Some((hash, false)) if *hash == r.raw_hash() => unchanged.push(r.jamf_id()),
            _ => changed.push(r),
        }
    }
    (changed, unchanged)
}

/// A record the database refused, as the log shows it: its message escaped (it may quote the
/// record's text) and bounded.
fn log_refused(kind: Kind, id: i64, message: &str) {
    let shown = crate::domain::text::shown(message, 300);
    tracing::warn!(
        kind = kind.as_str(),
        id,
        error = %shown,
        "the database refused this record; recorded in sync_failures, the rest of its page stored, retried next run"
    );
}

/// Text the database can store as `text` on both backends (PostgreSQL refuses NUL).
fn storable_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn newer_inventory_wins_and_equal_dates_go_to_the_later_request() {
        // A newer inventory replaces, an older never does, whatever the request times.
        assert!(newer_wins(
            (Some(t(10)), t(0)),
            (Some(t(5)), Some(t(100))),
            false
        ));
        assert!(!newer_wins(
            (Some(t(5)), t(100)),
            (Some(t(10)), Some(t(0))),
            false
        ));
        // A missing date is the oldest.
        assert!(newer_wins((Some(t(1)), t(0)), (None, Some(t(100))), false));
        assert!(!newer_wins((None, t(100)), (Some(t(1)), Some(t(0))), false));
        // Equal dates: the copy asked for later wins (an unenroll seen after an older page).
        assert!(newer_wins(
            (Some(t(5)), t(20)),
            (Some(t(5)), Some(t(10))),
            false
        ));
        assert!(!newer_wins(
            (Some(t(5)), t(10)),
            (Some(t(5)), Some(t(20))),
            false
        ));
        assert!(newer_wins((None, t(20)), (None, Some(t(10))), false));
        // Rows written before fetched_at existed accept any copy of the same date.
        assert!(newer_wins((Some(t(5)), t(0)), (Some(t(5)), None), false));
    }

    #[test]
    fn a_deleted_device_comes_back_only_with_a_later_request() {
        assert!(!newer_wins(
            (Some(t(50)), t(10)),
            (Some(t(5)), Some(t(20))),
            true
        ));
        assert!(newer_wins(
            (Some(t(1)), t(30)),
            (Some(t(5)), Some(t(20))),
            true
        ));
        assert!(newer_wins((None, t(0)), (Some(t(5)), None), true));
    }
}
