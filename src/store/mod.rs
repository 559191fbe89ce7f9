//! The inventory store: one [`Store`] trait, a SQLite and a PostgreSQL implementation.
//!
//! Invariants:
//! - upserts are idempotent, keyed by `(instance, jamf_id)`; writing the same page twice leaves
//!   the same rows (and counts the second write as `unchanged`);
//! - a page of records, its extension attributes and the run's progress commit in one
//!   transaction: a crash leaves whole pages, never half of one;
//! - the delta cursor moves only in [`Store::finish_run`] of a *succeeded* run, in the same
//!   transaction that marks the run succeeded; a failed run never moves it;
//! - `first_seen_at` is set once; `changed_at` moves only when the raw record changed;
//!   `synced_at` moves whenever a run saw the device; an upsert clears `deleted_at`.
//!
//! Both backends share one implementation body (the `store_impl!` macro) because their SQL
//! differs only in how a JSON parameter is cast; the schemas live in `migrations/<backend>`.

mod backends;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use backends::{PgStore, SqliteStore};

use crate::config::DatabaseUrl;
use crate::jamf::classic::MobileDevice;
use crate::jamf::models::{Computer, EaValue};

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a sync run is about. The string forms are stored in `sync_runs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Computers,
    MobileDevices,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Computers => "computers",
            Kind::MobileDevices => "mobile_devices",
        }
    }

    pub const ALL: [Kind; 2] = [Kind::Computers, Kind::MobileDevices];

    /// Position in per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            Kind::Computers => 0,
            Kind::MobileDevices => 1,
        }
    }

    /// `device_type` in `extension_attributes`.
    pub fn device_type(self) -> &'static str {
        match self {
            Kind::Computers => "computer",
            Kind::MobileDevices => "mobile_device",
        }
    }
}

/// A device record the store can write: what the shared page-writing logic needs to know.
pub trait DeviceRow: Send + Sync {
    const KIND: Kind;
    fn jamf_id(&self) -> i64;
    fn raw_hash(&self) -> i64;
    fn extension_attributes(&self) -> &[EaValue];
}

impl DeviceRow for Computer {
    const KIND: Kind = Kind::Computers;
    fn jamf_id(&self) -> i64 {
        self.jamf_id
    }
    fn raw_hash(&self) -> i64 {
        self.raw_hash
    }
    fn extension_attributes(&self) -> &[EaValue] {
        &self.extension_attributes
    }
}

impl DeviceRow for MobileDevice {
    const KIND: Kind = Kind::MobileDevices;
    fn jamf_id(&self) -> i64 {
        self.jamf_id
    }
    fn raw_hash(&self) -> i64 {
        self.raw_hash
    }
    fn extension_attributes(&self) -> &[EaValue] {
        &self.extension_attributes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Counters of one run, persisted in `sync_runs` as the run progresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Devices the listing returned.
    pub listed: i64,
    /// Records fetched and decoded.
    pub fetched: i64,
    /// New or changed records written.
    pub upserted: i64,
    /// Records identical to the stored copy.
    pub unchanged: i64,
    /// Records that could not be decoded (logged and skipped).
    pub failed: i64,
    /// Devices listed but gone (404) by the time their record was fetched.
    pub missing: i64,
}

/// A new row in `sync_runs`.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub instance: &'a str,
    /// `computers`, `mobile_devices` or `reconcile`.
    pub kind: &'a str,
    pub trigger: &'a str,
    /// `full` or `delta`.
    pub mode: &'a str,
    pub started_at: DateTime<Utc>,
    pub cursor_before: Option<DateTime<Utc>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub run_id: i64,
    pub instance: &'a str,
    /// As in [`NewRun::kind`]; the cursor of this name moves on success.
    pub kind: &'a str,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub error: Option<String>,
    /// The new delta cursor; stored only when `status` is `Succeeded`.
    pub cursor_after: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

/// Result of writing one page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub upserted: i64,
    pub unchanged: i64,
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

/// A stored mobile device's columns (raw excluded).
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

/// What a queued webhook event asks the worker to do with its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookAction {
    /// The device submitted inventory (or was added/enrolled): fetch its record.
    Refresh,
    /// The device checked in: fetch it only if the stored copy is older than
    /// `webhooks.checkin_refresh_secs` (check-ins come every few minutes per device).
    Checkin,
    /// The device was unenrolled: fetch it and mark it `managed = false` (never deleted).
    Unenroll,
}

impl WebhookAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Refresh => "refresh",
            WebhookAction::Checkin => "checkin",
            WebhookAction::Unenroll => "unenroll",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refresh" => Some(WebhookAction::Refresh),
            "checkin" => Some(WebhookAction::Checkin),
            "unenroll" => Some(WebhookAction::Unenroll),
            _ => None,
        }
    }
}

impl Kind {
    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
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

/// The operations the sync engine and the CLI need from a database.
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
    /// Writes one page of computers and the run's progress in one transaction.
    fn write_computers(
        &self,
        instance: &str,
        run_id: i64,
        records: &[Computer],
        counts: &RunCounts,
        last_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PageOutcome>> + Send;
    /// Writes one page of mobile devices and the run's progress in one transaction.
    fn write_mobile_devices(
        &self,
        instance: &str,
        run_id: i64,
        records: &[MobileDevice],
        counts: &RunCounts,
        last_id: Option<i64>,
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
    /// Sets `deleted_at` on these devices (kept with their history); returns how many.
    fn mark_deleted(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
        now: DateTime<Utc>,
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
    /// Sets `managed = false` on these devices (an unenroll keeps the row); returns how many.
    fn mark_unmanaged(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64>> + Send;
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
        crate::jamf::install_crypto_provider();
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
    async fn write_computers(
        &self,
        instance: &str,
        run_id: i64,
        records: &[Computer],
        counts: &RunCounts,
        last_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome> {
        delegate!(self, s => s.write_computers(instance, run_id, records, counts, last_id, now))
    }
    async fn write_mobile_devices(
        &self,
        instance: &str,
        run_id: i64,
        records: &[MobileDevice],
        counts: &RunCounts,
        last_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome> {
        delegate!(self, s => s.write_mobile_devices(instance, run_id, records, counts, last_id, now))
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
        now: DateTime<Utc>,
    ) -> Result<u64> {
        delegate!(self, s => s.mark_deleted(instance, kind, ids, now))
    }
    async fn purge_devices(&self, instance: &str, kind: Kind, ids: &[i64]) -> Result<u64> {
        delegate!(self, s => s.purge_devices(instance, kind, ids))
    }
    async fn mark_unmanaged(&self, instance: &str, kind: Kind, ids: &[i64]) -> Result<u64> {
        delegate!(self, s => s.mark_unmanaged(instance, kind, ids))
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
pub fn partition_changed<'a, R: DeviceRow>(
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
