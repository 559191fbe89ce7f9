//! [`Store`]: the operations the sync engine, the daemon and the CLI need from a database,
//! whatever the backend. [`super::Db`] implements it over the configured backend.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{
    ChangeRow, CursorRow, EaColumn, GroupMembers, GroupRow, NewRun, NewWebhookEvent, PageOutcome,
    QueuedEvent, Result, RunEnd, RunRequestRow, RunRow, StoredDevice, StoredIds, SyncFailure,
    Write,
};
use crate::config::HistoryConfig;
use crate::domain::{Kind, PacingMemory, Record, RunKind};

/// The operations the sync engine, the daemon and the CLI need from a database.
pub trait Store: Send + Sync + 'static {
    /// How many device writes of one run may be in flight at once: one on SQLite (one
    /// writer per file), two on PostgreSQL, where a second transaction keeps the
    /// server busy while the first one's rows travel and its commit is flushed.
    fn concurrent_writes(&self) -> usize;

    /// Applies the embedded migrations (idempotent).
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// This database's random id, created on first use (names what jamf-sync owns in Jamf).
    fn installation_id(&self) -> impl Future<Output = Result<String>> + Send;

    /// The delta cursor: start time of the last successful run of this kind.
    fn cursor(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    fn start_run(&self, run: &NewRun<'_>) -> impl Future<Output = Result<i64>> + Send;

    /// Writes devices (newer wins unless `overwrite`) and, when given, the run's progress, in
    /// one transaction.
    fn write_devices<R: Record>(
        &self,
        write: Write<'_, R>,
    ) -> impl Future<Output = Result<PageOutcome>> + Send;

    /// Records how a run ended and, if it succeeded, moves the cursor (one transaction).
    fn finish_run(&self, end: &RunEnd<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Marks runs left `running` by a crash as `interrupted`; returns how many.
    fn interrupt_stale_runs(&self, instance: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Marks this kind's runs still `running` as `failed` with `error` (a run whose task
    /// panicked); returns how many.
    fn fail_running_runs(
        &self,
        instance: &str,
        kind: RunKind,
        error: &str,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Jamf's clock minus ours (ms) as the last run of this kind that measured it saw it.
    fn last_clock_offset(
        &self,
        instance: &str,
        kind: RunKind,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Devices of this kind recorded as failing, oldest first.
    fn sync_failures(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<SyncFailure>>> + Send;

    /// How many devices of this kind are recorded as failing, and the oldest `limit` of them
    /// (what an endpoint shows: bounded whatever the table holds).
    fn failing_sample(
        &self,
        instance: &str,
        kind: Kind,
        limit: i64,
    ) -> impl Future<Output = Result<(i64, Vec<SyncFailure>)>> + Send;

    /// When the last finished run of this kind ended, any status or only succeeded ones.
    fn last_finished(
        &self,
        instance: &str,
        kind: RunKind,
        succeeded_only: bool,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    fn recent_runs(
        &self,
        instance: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RunRow>>> + Send;

    fn cursors(&self, instance: &str) -> impl Future<Output = Result<Vec<CursorRow>>> + Send;

    /// Every stored device of a kind, in id order.
    fn devices(
        &self,
        instance: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<StoredDevice>>> + Send;

    /// Live (not deleted) devices of a kind stored for this instance.
    fn count_devices(&self, instance: &str, kind: Kind)
        -> impl Future<Output = Result<i64>> + Send;

    /// Where a kind's live stored devices sit in the id space: the id at every `step`-th of
    /// them in id order, their count and the highest id (`None` when none are stored).
    fn stored_ids(
        &self,
        instance: &str,
        kind: Kind,
        step: u32,
    ) -> impl Future<Output = Result<Option<StoredIds>>> + Send;

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
        history: &HistoryConfig,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// A device's change history (by serial number, UDID or Jamf id; of one kind when
    /// given), oldest first.
    fn device_history(
        &self,
        instance: &str,
        key: &str,
        kind: Option<Kind>,
    ) -> impl Future<Output = Result<Vec<ChangeRow>>> + Send;

    /// Every row of a child table for this instance, `(jamf_id, values as text)` in the
    /// table's column order, by device.
    fn child_rows(
        &self,
        instance: &str,
        table: &'static crate::domain::children::ChildTable,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<Option<String>>)>>> + Send;

    /// (Re)creates the typed extension attribute view of this instance and kind when its
    /// attributes changed since it was made, or always with `force`; returns the view's name
    /// and columns when it did.
    fn refresh_ea_view(
        &self,
        instance: &str,
        kind: Kind,
        force: bool,
    ) -> impl Future<Output = Result<Option<(String, Vec<EaColumn>)>>> + Send;

    /// The database's size on disk in bytes (SQLite: its pages; PostgreSQL: the database).
    fn database_bytes(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Removes history rows recorded before `before`; returns how many.
    fn prune_history(&self, before: DateTime<Utc>) -> impl Future<Output = Result<u64>> + Send;

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

    /// `(jamf_id, group_name, smart)` of the stored membership rows of one group.
    fn group_rows(
        &self,
        instance: &str,
        kind: Kind,
        group_id: &str,
    ) -> impl Future<Output = Result<Vec<GroupRow>>> + Send;

    /// Replaces one group's membership rows (`computer_group_memberships` or
    /// `mobile_device_group_memberships`) with its members, and forgets the child hash of
    /// every device whose rows this touched, so that device's next record rewrites its own;
    /// returns the rows written.
    fn replace_group(
        &self,
        instance: &str,
        kind: Kind,
        group: &GroupMembers<'_>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Removes the membership rows of every group not in `keep` (gone from Jamf); returns
    /// how many.
    fn drop_groups_except(
        &self,
        instance: &str,
        kind: Kind,
        keep: &[String],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Everything stored for an instance (devices, child rows, history, runs, cursors,
    /// failures, webhook events, pacing memory, its typed views), in one transaction that
    /// commits only with `apply` (a dry run counts and rolls back); rows removed per table.
    fn purge_instance(
        &self,
        instance: &str,
        apply: bool,
    ) -> impl Future<Output = Result<Vec<(&'static str, u64)>>> + Send;

    /// `(jamf_id, synced_at)` of those of these devices that are stored and not deleted.
    fn synced_at(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, DateTime<Utc>)>>> + Send;

    /// Appends a webhook event to the durable queue unless this instance already has
    /// `max_queued` events waiting; returns its id (`None`: full). The row is committed when
    /// this returns.
    fn enqueue_webhook_event(
        &self,
        event: &NewWebhookEvent<'_>,
        max_queued: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The oldest `limit` queued events of this instance that are due by `due_by`, in arrival
    /// order: deferred ones wait for their `not_before` without holding back newer ones.
    fn queued_webhook_events(
        &self,
        instance: &str,
        due_by: DateTime<Utc>,
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

    /// Records a run asked of the process that runs `instance` (`POST /sync` on another
    /// replica, a one-shot command behind the daemon); its `run_requests` id, and `false` when
    /// the same run was already waiting (the request joins it).
    fn request_run(
        &self,
        instance: &str,
        kind: &str,
        op: &str,
        trigger: &str,
        by: &str,
    ) -> impl Future<Output = Result<(i64, bool)>> + Send;

    /// Of these handed-over requests: the ids still waiting, and the runs answering them
    /// (`sync_runs.request_id`; running or finished).
    fn handed_over(
        &self,
        instance: &str,
        ids: &[i64],
    ) -> impl Future<Output = Result<(Vec<i64>, Vec<RunRow>)>> + Send;

    /// Takes back requests nobody took; how many were still waiting.
    fn withdraw_requests(&self, ids: &[i64]) -> impl Future<Output = Result<u64>> + Send;

    /// The waiting requests of these instances (of every instance with `None`), oldest first.
    fn waiting_requests(
        &self,
        instances: Option<&[String]>,
    ) -> impl Future<Output = Result<Vec<RunRequestRow>>> + Send;

    /// Removes a request its runner has queued.
    fn take_request(&self, id: i64) -> impl Future<Output = Result<()>> + Send;

    /// What pacing learned about this instance's server (`server`, its origin), and when it
    /// was saved; `None` when nothing was, it was for another server, or it does not parse.
    fn pacing_memory(
        &self,
        instance: &str,
        server: &str,
    ) -> impl Future<Output = Result<Option<(PacingMemory, DateTime<Utc>)>>> + Send;

    /// Keeps what pacing learned about this instance's server (replacing the last).
    fn save_pacing_memory(
        &self,
        instance: &str,
        server: &str,
        memory: &PacingMemory,
        saved_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}
