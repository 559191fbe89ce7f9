//! The rows the store reads and writes, as plain types: what a run, a write, a queued event or
//! a stored device looks like on its way in or out. `FromRow` reads them by column name.

use chrono::{DateTime, Utc};

use crate::config::HistoryConfig;
use crate::domain::{DeviceInfo, Kind, RunCounts, RunKind, RunStatus, Trigger, WebhookAction};

/// The columns of [`RunRow`], for every query that reads one.
pub(super) const RUN_COLUMNS: &str =
    "id, instance, kind, \"trigger\", mode, status, started_at, finished_at, listed, fetched, \
     upserted, unchanged, stale, failed, missing, cursor_before, cursor_after, error, \
     clock_offset_ms, child_rows, request_id";

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
    /// Jamf's clock minus ours (ms), when the run saw a `Date` header.
    pub clock_offset_ms: Option<i64>,
}

/// A run's progress, committed together with the page it covers.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub run_id: i64,
    /// This write's own listed/fetched/failed/missing; the store adds what the write itself
    /// finds (upserted, unchanged, stale) and adds it all to the run's row, so writes that
    /// commit in any order leave the same totals.
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
    /// Child table rows written.
    pub child_rows: i64,
    /// Refused by the database for their data ([`refusal`]): left out, recorded in
    /// `sync_failures`, counted `failed` instead of `fetched`.
    pub isolated: i64,
}

impl PageOutcome {
    /// A write's own counts (`listed`, `fetched`, … from `mine`) with what the write found.
    pub fn counts(&self, mine: RunCounts) -> RunCounts {
        RunCounts {
            upserted: mine.upserted + self.upserted,
            unchanged: mine.unchanged + self.unchanged,
            stale: mine.stale + self.stale,
            child_rows: mine.child_rows + self.child_rows,
            fetched: mine.fetched - self.isolated,
            failed: mine.failed + self.isolated,
            ..mine
        }
    }

    /// Adds another part of the same write.
    pub(crate) fn add(&mut self, o: &PageOutcome) {
        self.upserted += o.upserted;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.child_rows += o.child_rows;
        self.isolated += o.isolated;
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
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub counts: RunCounts,
    pub cursor_before: Option<DateTime<Utc>>,
    pub cursor_after: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Jamf's clock minus ours (ms) as the run measured it.
    pub clock_offset_ms: Option<i64>,
    /// The `run_requests` id this run answered (a run handed to the instance's holder).
    pub request_id: Option<i64>,
}

/// A sample of where the stored devices of a kind sit in the id space, so a listing can be
/// split into spans of whole pages without first asking Jamf (see `sync::ranges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIds {
    /// The sampling step: `ids[i]` is the id of the `(i + 1) × step`-th device in id order.
    pub step: u32,
    pub ids: Vec<i64>,
    pub count: i64,
    pub max: i64,
}

/// A run asked for by another process (`POST /sync` on a replica, a one-shot command),
/// waiting in `run_requests` for the process that runs its instance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRequestRow {
    pub id: i64,
    pub instance: String,
    pub kind: String,
    pub op: String,
    pub trigger: String,
}

/// One row of `sync_failures`: a device Jamf would not give, retried by every run until it
/// is written.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, PartialEq)]
pub struct SyncFailure {
    pub jamf_id: i64,
    pub error: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub attempts: i32,
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

/// A stored device's columns, whatever its kind (status output and tests).
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct StoredDevice {
    pub jamf_id: i64,
    #[sqlx(flatten)]
    pub info: DeviceInfo,
    /// Mobile devices only.
    pub os_type: Option<String>,
    /// The inventory time Jamf reports: `report_date` / `last_inventory_update`.
    pub as_of: Option<DateTime<Utc>>,
    /// Computers only.
    pub last_contact: Option<DateTime<Utc>>,
    pub raw: String,
    pub raw_hash: i64,
    pub first_seen_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    pub synced_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `FromRow` for a domain struct whose fields are columns of the same names (the domain knows
/// nothing of the database; the store reads its types back).
macro_rules! from_row_by_name {
    ($ty:ty { $($field:ident: $ft:ty),* $(,)? }) => {
        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $ty
        where
            &'r str: sqlx::ColumnIndex<R>,
            $($ft: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> std::result::Result<Self, sqlx::Error> {
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?,)*
                })
            }
        }
    };
}

from_row_by_name!(RunCounts {
    listed: i64,
    fetched: i64,
    upserted: i64,
    unchanged: i64,
    stale: i64,
    failed: i64,
    missing: i64,
    child_rows: i64,
});

from_row_by_name!(DeviceInfo {
    udid: Option<String>,
    serial_number: Option<String>,
    name: Option<String>,
    model: Option<String>,
    os_version: Option<String>,
    managed: Option<bool>,
    supervised: Option<bool>,
    username: Option<String>,
    email: Option<String>,
});

/// One write of devices through the store's one write path.
#[derive(Debug)]
pub struct Write<'a, R> {
    pub instance: &'a str,
    pub records: &'a [R],
    /// Devices of this kind Jamf would not give (id, error): recorded in `sync_failures` and
    /// retried by the next run; a written record clears its row.
    pub failures: &'a [(i64, String)],
    /// The run this write belongs to, committed with it.
    pub progress: Option<&'a Progress>,
    /// Write even over a newer stored copy (`sync --full --overwrite`).
    pub overwrite: bool,
    /// What the change history keeps.
    pub history: &'a HistoryConfig,
    pub now: DateTime<Utc>,
}

// By hand: derived, they would ask `R: Copy` of the records a write only borrows.
impl<R> Clone for Write<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Write<'_, R> {}

impl<'a, R> Write<'a, R> {
    /// A write outside any run that never replaces a newer copy.
    pub fn guarded(instance: &'a str, records: &'a [R], history: &'a HistoryConfig) -> Self {
        Write {
            instance,
            records,
            failures: &[],
            progress: None,
            overwrite: false,
            history,
            now: Utc::now(),
        }
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

/// `(jamf_id, group_name, smart)`: one stored membership row.
pub type GroupRow = (i64, Option<String>, Option<bool>);

/// One group and its members, as Jamf lists them.
#[derive(Debug, Clone, Copy)]
pub struct GroupMembers<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub smart: bool,
    /// Sorted, without duplicates.
    pub members: &'a [i64],
}
