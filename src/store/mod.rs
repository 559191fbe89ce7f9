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
//! Both backends share one implementation body (`store_impl!` in [`backends`]) because their
//! SQL differs only in how a JSON parameter is cast and how a write transaction begins; the
//! schemas live in `migrations/<backend>`.

/// The columns of [`RunRow`], for every query that reads one.
macro_rules! run_columns {
    () => {
        "id, instance, kind, \"trigger\", mode, status, started_at, finished_at, listed, fetched, \
         upserted, unchanged, stale, failed, missing, cursor_before, cursor_after, error, \
         clock_offset_ms, child_rows, request_id"
    };
}

mod backends;
mod history;
pub mod lease;
pub mod lock;
mod refusal;
mod views;
mod writer;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use backends::{PgStore, SqliteStore};
pub use history::ChangeRow;
pub use views::{view_name, EaColumn};

use crate::config::{DatabaseUrl, HistoryConfig};
use crate::domain::{
    DeviceInfo, DeviceRecord, Kind, PacingMemory, RunCounts, RunKind, RunStatus, Trigger,
    WebhookAction,
};

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

/// One group and its members, as Jamf lists them.
#[derive(Debug, Clone, Copy)]
pub struct GroupMembers<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub smart: bool,
    /// Sorted, without duplicates.
    pub members: &'a [i64],
}

/// Declares [`Store`] and its delegation from [`Db`] to the configured backend in one list,
/// so a new operation is written once here and once per backend body.
macro_rules! store_api {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),*) -> $ret:ty;
    )*) => {
        /// The operations the sync engine, the daemon and the CLI need from a database.
        pub trait Store: Send + Sync + 'static {
            /// How many device writes of one run may be in flight at once: one on SQLite (one
            /// writer per file), two on PostgreSQL, where a second transaction keeps the
            /// server busy while the first one's rows travel and its commit is flushed.
            fn concurrent_writes(&self) -> usize;
            $(
                $(#[doc = $doc])*
                fn $name $(<$g: $bound>)? (&self, $($arg: $ty),*)
                    -> impl Future<Output = Result<$ret>> + Send;
            )*
        }

        impl Store for Db {
            fn concurrent_writes(&self) -> usize {
                match self {
                    Db::Sqlite(s) => s.concurrent_writes(),
                    Db::Postgres(s) => s.concurrent_writes(),
                }
            }
            $(
                async fn $name $(<$g: $bound>)? (&self, $($arg: $ty),*) -> Result<$ret> {
                    match self {
                        Db::Sqlite(s) => s.$name($($arg),*).await,
                        Db::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

store_api! {
    /// Applies the embedded migrations (idempotent).
    fn migrate() -> ();
    /// This database's random id, created on first use (names what jamf-sync owns in Jamf).
    fn installation_id() -> String;
    /// The delta cursor: start time of the last successful run of this kind.
    fn cursor(instance: &str, kind: Kind) -> Option<DateTime<Utc>>;
    fn start_run(run: &NewRun<'_>) -> i64;
    /// Writes devices (newer wins unless `overwrite`) and, when given, the run's progress, in
    /// one transaction.
    fn write_devices<R: DeviceRecord>(write: Write<'_, R>) -> PageOutcome;
    /// Records how a run ended and, if it succeeded, moves the cursor (one transaction).
    fn finish_run(end: &RunEnd<'_>) -> ();
    /// Marks runs left `running` by a crash as `interrupted`; returns how many.
    fn interrupt_stale_runs(instance: &str) -> u64;
    /// Marks this kind's runs still `running` as `failed` with `error` (a run whose task
    /// panicked); returns how many.
    fn fail_running_runs(instance: &str, kind: RunKind, error: &str) -> u64;
    /// Jamf's clock minus ours (ms) as the last run of this kind that measured it saw it.
    fn last_clock_offset(instance: &str, kind: RunKind) -> Option<i64>;
    /// Devices of this kind recorded as failing, oldest first.
    fn sync_failures(instance: &str, kind: Kind) -> Vec<SyncFailure>;
    /// How many devices of this kind are recorded as failing, and the oldest `limit` of them
    /// (what an endpoint shows: bounded whatever the table holds).
    fn failing_sample(instance: &str, kind: Kind, limit: i64) -> (i64, Vec<SyncFailure>);
    /// When the last finished run of this kind ended, any status or only succeeded ones.
    fn last_finished(instance: &str, kind: RunKind, succeeded_only: bool) -> Option<DateTime<Utc>>;
    fn recent_runs(instance: &str, limit: i64) -> Vec<RunRow>;
    fn cursors(instance: &str) -> Vec<CursorRow>;
    /// Every stored device of a kind, in id order.
    fn devices(instance: &str, kind: Kind) -> Vec<StoredDevice>;
    /// Live (not deleted) devices of a kind stored for this instance.
    fn count_devices(instance: &str, kind: Kind) -> i64;
    /// Where a kind's live stored devices sit in the id space: the id at every `step`-th of
    /// them in id order, their count and the highest id (`None` when none are stored).
    fn stored_ids(instance: &str, kind: Kind, step: u32) -> Option<StoredIds>;
    /// `(jamf_id, deleted)` of every stored device of a kind, in id order.
    fn device_ids(instance: &str, kind: Kind) -> Vec<(i64, bool)>;
    /// Sets `deleted_at` on these devices (kept with their history), seen gone at
    /// `observed_at`: only a copy requested after that revives them. Returns how many.
    fn mark_deleted(
        instance: &str,
        kind: Kind,
        ids: &[i64],
        observed_at: DateTime<Utc>,
        history: &HistoryConfig
    ) -> u64;
    /// A device's change history (by serial number, UDID or Jamf id; of one kind when
    /// given), oldest first.
    fn device_history(instance: &str, key: &str, kind: Option<Kind>) -> Vec<ChangeRow>;
    /// Every row of a child table for this instance, `(jamf_id, values as text)` in the
    /// table's column order, by device.
    fn child_rows(
        instance: &str,
        table: &'static crate::domain::children::ChildTable
    ) -> Vec<(i64, Vec<Option<String>>)>;
    /// (Re)creates the typed extension attribute view of this instance and kind when its
    /// attributes changed since it was made, or always with `force`; returns the view's name
    /// and columns when it did.
    fn refresh_ea_view(instance: &str, kind: Kind, force: bool) -> Option<(String, Vec<EaColumn>)>;
    /// The database's size on disk in bytes (SQLite: its pages; PostgreSQL: the database).
    fn database_bytes() -> i64;
    /// Removes history rows recorded before `before`; returns how many.
    fn prune_history(before: DateTime<Utc>) -> u64;
    /// Removes these devices and their extension attributes; returns how many.
    fn purge_devices(instance: &str, kind: Kind, ids: &[i64]) -> u64;
    /// `(jamf_id, name, value)` of every stored extension attribute of a kind.
    fn extension_attributes(instance: &str, kind: Kind) -> Vec<(i64, String, Option<String>)>;
    /// `(jamf_id, group_name, smart)` of the stored membership rows of one group.
    fn group_rows(
        instance: &str,
        kind: Kind,
        group_id: &str
    ) -> Vec<(i64, Option<String>, Option<bool>)>;
    /// Replaces one group's membership rows (`computer_group_memberships` or
    /// `mobile_device_group_memberships`) with its members, and forgets the child hash of
    /// every device whose rows this touched, so that device's next record rewrites its own;
    /// returns the rows written.
    fn replace_group(instance: &str, kind: Kind, group: &GroupMembers<'_>) -> u64;
    /// Removes the membership rows of every group not in `keep` (gone from Jamf); returns
    /// how many.
    fn drop_groups_except(instance: &str, kind: Kind, keep: &[String]) -> u64;
    /// Everything stored for an instance (devices, child rows, history, runs, cursors,
    /// failures, webhook events, pacing memory, its typed views), in one transaction that
    /// commits only with `apply` (a dry run counts and rolls back); rows removed per table.
    fn purge_instance(instance: &str, apply: bool) -> Vec<(&'static str, u64)>;
    /// `(jamf_id, synced_at)` of those of these devices that are stored and not deleted.
    fn synced_at(instance: &str, kind: Kind, ids: &[i64]) -> Vec<(i64, DateTime<Utc>)>;
    /// Appends a webhook event to the durable queue unless this instance already has
    /// `max_queued` events waiting; returns its id (`None`: full). The row is committed when
    /// this returns.
    fn enqueue_webhook_event(event: &NewWebhookEvent<'_>, max_queued: i64) -> Option<i64>;
    /// The oldest `limit` queued events of this instance that are due by `due_by`, in arrival
    /// order: deferred ones wait for their `not_before` without holding back newer ones.
    fn queued_webhook_events(instance: &str, due_by: DateTime<Utc>, limit: i64) -> Vec<QueuedEvent>;
    /// Removes handled events; returns how many.
    fn delete_webhook_events(instance: &str, ids: &[i64]) -> u64;
    /// Counts a failed attempt on these events and holds them back until `not_before`.
    fn defer_webhook_events(
        instance: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
        error: &str
    ) -> u64;
    /// Events waiting in the queue.
    fn webhook_queue_depth(instance: &str) -> i64;
    /// Records a run asked of the process that runs `instance` (`POST /sync` on another
    /// replica, a one-shot command behind the daemon); its `run_requests` id, and `false` when
    /// the same run was already waiting (the request joins it).
    fn request_run(instance: &str, kind: &str, op: &str, trigger: &str, by: &str) -> (i64, bool);
    /// Of these handed-over requests: the ids still waiting, and the runs answering them
    /// (`sync_runs.request_id`; running or finished).
    fn handed_over(instance: &str, ids: &[i64]) -> (Vec<i64>, Vec<RunRow>);
    /// Takes back requests nobody took; how many were still waiting.
    fn withdraw_requests(ids: &[i64]) -> u64;
    /// The waiting requests of these instances (of every instance with `None`), oldest first.
    fn waiting_requests(instances: Option<&[String]>) -> Vec<RunRequestRow>;
    /// Removes a request its runner has queued.
    fn take_request(id: i64) -> ();
    /// What pacing learned about this instance's server (`server`, its origin), and when it
    /// was saved; `None` when nothing was, it was for another server, or it does not parse.
    fn pacing_memory(instance: &str, server: &str) -> Option<(PacingMemory, DateTime<Utc>)>;
    /// Keeps what pacing learned about this instance's server (replacing the last).
    fn save_pacing_memory(
        instance: &str,
        server: &str,
        memory: &PacingMemory,
        saved_at: DateTime<Utc>
    ) -> ();
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

    /// Makes every write transaction prove that this process holds its instance
    /// ([`lease::Fence`]); PostgreSQL only (a SQLite file has one writing process).
    pub fn coordinate(&self, fence: Arc<lease::Fence>) -> bool {
        match self {
            Db::Sqlite(_) => false,
            Db::Postgres(s) => s.coordinate(fence),
        }
    }

    /// The fence when writes are coordinated.
    pub fn fence(&self) -> Option<&Arc<lease::Fence>> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => s.fence(),
        }
    }

    /// The PostgreSQL pool and the fence, when other processes may share the database
    /// (a daemon or command coordinates through it).
    pub fn shared(&self) -> Option<(&sqlx::PgPool, &Arc<lease::Fence>)> {
        Some((self.postgres()?, self.fence()?))
    }

    /// The PostgreSQL pool, for coordination.
    pub fn postgres(&self) -> Option<&sqlx::PgPool> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => Some(s.pool()),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(s) => s.pool().close().await,
            Db::Postgres(s) => s.pool().close().await,
        }
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
