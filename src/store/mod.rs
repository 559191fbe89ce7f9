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
//!   deletion was seen. The guard is part of the upsert's SQL, so writers may run concurrently
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
//! Both backends share one implementation body (`store_impl!` in [`backends`]) because their
//! SQL differs only in how a JSON parameter is cast and how a write transaction begins; the
//! schemas live in `migrations/<backend>`.

mod backends;
mod writer;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use backends::{PgStore, SqliteStore};

use crate::config::DatabaseUrl;
use crate::domain::{DeviceRecord, Kind, RunCounts, RunKind, RunStatus, Trigger, WebhookAction};

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A new row in `sync_runs`.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub instance: &'a str,
    pub kind: RunKind,
    pub trigger: Trigger,
    /// `full` or `delta` for syncs; the device kind for reconcile.
    pub mode: &'a str,
    pub started_at: DateTime<Utc>,
    pub cursor_before: Option<DateTime<Utc>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub run_id: i64,
    pub instance: &'a str,
    /// A succeeded sync moves this kind's cursor.
    pub kind: RunKind,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub error: Option<String>,
    /// The new delta cursor; stored only when `status` is `Succeeded`.
    pub cursor_after: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

/// A run's progress, committed together with the page it covers.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub run_id: i64,
    /// The run's counts including this page's listed/fetched/failed/missing; the store adds
    /// what the write itself finds (upserted, unchanged, stale).
    pub counts: RunCounts,
    /// Highest id the page covers (resume point).
    pub last_id: Option<i64>,
}

/// Result of writing one page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// New or changed copies written.
    pub upserted: i64,
    /// Identical to the stored copy (only `synced_at` moved).
    pub unchanged: i64,
    /// Not written: the stored copy is newer.
    pub stale: i64,
}

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

/// One row of `sync_runs`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub instance: String,
    pub kind: String,
    pub trigger: String,
    pub mode: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub listed: i64,
    pub fetched: i64,
    pub upserted: i64,
    pub unchanged: i64,
    pub stale: i64,
    pub failed: i64,
    pub missing: i64,
    pub cursor_before: Option<DateTime<Utc>>,
    pub cursor_after: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// One row of `sync_cursors`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CursorRow {
    pub instance: String,
    pub kind: String,
    pub cursor: DateTime<Utc>,
    pub run_id: i64,
    pub updated_at: DateTime<Utc>,
}

/// A stored computer's columns (raw excluded), for status output and tests.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct StoredComputer {
    pub jamf_id: i64,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub report_date: Option<DateTime<Utc>>,
    pub last_contact: Option<DateTime<Utc>>,
    pub managed: Option<bool>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub raw_hash: i64,
    pub first_seen_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub synced_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A stored mobile device's columns (raw included).
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct StoredMobileDevice {
    pub jamf_id: i64,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub os_type: Option<String>,
    pub last_inventory_update: Option<DateTime<Utc>>,
    pub managed: Option<bool>,
    pub supervised: Option<bool>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub raw: String,
    pub raw_hash: i64,
    pub first_seen_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub synced_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A webhook event to put in the durable queue.
#[derive(Debug, Clone)]
pub struct NewWebhookEvent<'a> {
    pub instance: &'a str,
    pub kind: Kind,
    pub jamf_id: i64,
    /// The canonical event name (`ComputerInventoryCompleted`, ...).
    pub event: &'a str,
    pub action: WebhookAction,
    pub received_at: DateTime<Utc>,
    /// Jamf's `eventTimestamp`, when the envelope had one.
    pub event_at: Option<DateTime<Utc>>,
}

/// One row of the webhook queue.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct QueuedEvent {
    pub id: i64,
    pub kind: String,
    pub jamf_id: i64,
    pub event: String,
    pub action: String,
    pub received_at: DateTime<Utc>,
    pub event_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub not_before: DateTime<Utc>,
}

/// The operations the sync engine, the daemon and the CLI need from a database.
pub trait Store: Send + Sync + 'static {
    /// Applies the embedded migrations (idempotent).
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;
    /// The delta cursor: start time of the last successful run of this kind.
    fn cursor(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    fn start_run(&self, run: &NewRun<'_>) -> impl Future<Output = Result<i64>> + Send;
    /// Writes devices (newer wins unless `overwrite`) and, when given, the run's progress, in
    /// one transaction.
    fn write_devices<R: DeviceRecord>(
        &self,
        instance: &str,
        records: &[R],
        progress: Option<&Progress>,
        overwrite: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PageOutcome>> + Send;
    /// Records how a run ended and, if it succeeded, moves the cursor (one transaction).
    fn finish_run(&self, end: &RunEnd<'_>) -> impl Future<Output = Result<()>> + Send;
    /// Marks runs left `running` by a crash as `interrupted`; returns how many.
    fn interrupt_stale_runs(&self, instance: &str) -> impl Future<Output = Result<u64>> + Send;
    fn recent_runs(
        &self,
        instance: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RunRow>>> + Send;
    fn cursors(&self, instance: &str) -> impl Future<Output = Result<Vec<CursorRow>>> + Send;
    fn computers(&self, instance: &str)
        -> impl Future<Output = Result<Vec<StoredComputer>>> + Send;
    fn mobile_devices(
        &self,
        instance: &str,
    ) -> impl Future<Output = Result<Vec<StoredMobileDevice>>> + Send;
    /// Live (not deleted) devices of a kind stored for this instance.
    fn count_devices(&self, instance: &str, kind: Kind)
        -> impl Future<Output = Result<i64>> + Send;
    /// `(jamf_id, deleted)` of every stored device of a kind, in id order.
    fn device_ids(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<(i64, bool)>>> + Send;
    /// Sets `deleted_at` on these devices (kept with their history), seen gone at
    /// `observed_at`: only a copy requested after that revives them. Returns how many.
    fn mark_deleted(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
        observed_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Removes these devices and their extension attributes; returns how many.
    fn purge_devices(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64>> + Send;
    /// `(jamf_id, name, value)` of every stored extension attribute of a kind.
    fn extension_attributes(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<(i64, String, Option<String>)>>> + Send;
    /// `(jamf_id, synced_at)` of those of these devices that are stored and not deleted.
    fn synced_at(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, DateTime<Utc>)>>> + Send;
    /// Appends a webhook event to the durable queue; returns its id. The row is committed
    /// when this returns.
    fn enqueue_webhook_event(
        &self,
        event: &NewWebhookEvent<'_>,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// The oldest `limit` queued events of this instance, in arrival order.
    fn queued_webhook_events(
        &self,
        instance: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<QueuedEvent>>> + Send;
    /// Removes handled events; returns how many.
    fn delete_webhook_events(
        &self,
        instance: &str,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Counts a failed attempt on these events and holds them back until `not_before`.
    fn defer_webhook_events(
        &self,
        instance: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
        error: &str,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Events waiting in the queue.
    fn webhook_queue_depth(&self, instance: &str) -> impl Future<Output = Result<i64>> + Send;
}

/// The configured backend.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Db {
    /// Connects (creating a SQLite file if needed) and applies migrations.
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> Result<Db> {
        crate::tls::install_crypto_provider();
        let db = match url {
            DatabaseUrl::Sqlite(_) => {
                Db::Sqlite(SqliteStore::connect(url.expose(), max_connections).await?)
            }
            DatabaseUrl::Postgres(_) => {
                Db::Postgres(PgStore::connect(url.expose(), max_connections).await?)
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(s) => s.pool().close().await,
            Db::Postgres(s) => s.pool().close().await,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Db::Sqlite($s) => $e.await,
            Db::Postgres($s) => $e.await,
        }
    };
}

impl Store for Db {
    async fn migrate(&self) -> Result<()> {
        delegate!(self, s => s.migrate())
    }
    async fn cursor(&self, instance: &str, kind: Kind) -> Result<Option<DateTime<Utc>>> {
        delegate!(self, s => s.cursor(instance, kind))
    }
    async fn start_run(&self, run: &NewRun<'_>) -> Result<i64> {
        delegate!(self, s => s.start_run(run))
    }
    async fn write_devices<R: DeviceRecord>(
        &self,
        instance: &str,
        records: &[R],
        progress: Option<&Progress>,
        overwrite: bool,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome> {
        delegate!(self, s => s.write_devices(instance, records, progress, overwrite, now))
    }
    async fn finish_run(&self, end: &RunEnd<'_>) -> Result<()> {
        delegate!(self, s => s.finish_run(end))
    }
    async fn interrupt_stale_runs(&self, instance: &str) -> Result<u64> {
        delegate!(self, s => s.interrupt_stale_runs(instance))
    }
    async fn recent_runs(&self, instance: &str, limit: i64) -> Result<Vec<RunRow>> {
        delegate!(self, s => s.recent_runs(instance, limit))
    }
    async fn cursors(&self, instance: &str) -> Result<Vec<CursorRow>> {
        delegate!(self, s => s.cursors(instance))
    }
    async fn computers(&self, instance: &str) -> Result<Vec<StoredComputer>> {
        delegate!(self, s => s.computers(instance))
    }
    async fn mobile_devices(&self, instance: &str) -> Result<Vec<StoredMobileDevice>> {
        delegate!(self, s => s.mobile_devices(instance))
    }
    async fn count_devices(&self, instance: &str, kind: Kind) -> Result<i64> {
        delegate!(self, s => s.count_devices(instance, kind))
    }
    async fn extension_attributes(
        &self,
        instance: &str,
        kind: Kind,
    ) -> Result<Vec<(i64, String, Option<String>)>> {
        delegate!(self, s => s.extension_attributes(instance, kind))
    }
    async fn device_ids(&self, instance: &str, kind: Kind) -> Result<Vec<(i64, bool)>> {
        delegate!(self, s => s.device_ids(instance, kind))
    }
    async fn mark_deleted(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
        observed_at: DateTime<Utc>,
    ) -> Result<u64> {
        delegate!(self, s => s.mark_deleted(instance, kind, ids, observed_at))
    }
    async fn purge_devices(&self, instance: &str, kind: Kind, ids: &[i64]) -> Result<u64> {
        delegate!(self, s => s.purge_devices(instance, kind, ids))
    }
    async fn synced_at(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> Result<Vec<(i64, DateTime<Utc>)>> {
        delegate!(self, s => s.synced_at(instance, kind, ids))
    }
    async fn enqueue_webhook_event(&self, event: &NewWebhookEvent<'_>) -> Result<i64> {
        delegate!(self, s => s.enqueue_webhook_event(event))
    }
    async fn queued_webhook_events(&self, instance: &str, limit: i64) -> Result<Vec<QueuedEvent>> {
        delegate!(self, s => s.queued_webhook_events(instance, limit))
    }
    async fn delete_webhook_events(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        delegate!(self, s => s.delete_webhook_events(instance, ids))
    }
    async fn defer_webhook_events(
        &self,
        instance: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
        error: &str,
    ) -> Result<u64> {
        delegate!(self, s => s.defer_webhook_events(instance, ids, not_before, error))
    }
    async fn webhook_queue_depth(&self, instance: &str) -> Result<i64> {
        delegate!(self, s => s.webhook_queue_depth(instance))
    }
}

/// Splits a page into records whose stored copy differs (or is absent or deleted) and records
/// stored identically. `stored` holds `(jamf_id, raw_hash, deleted)` of the page's ids.
pub fn partition_changed<'a, R: DeviceRecord>(
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
