//! The configured backend, chosen at start from the database URL: [`Db`] is the one [`Store`]
//! the rest of the program holds, and hands each call to the SQLite or the PostgreSQL store.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::lease;
use super::{
    ChangeRow, CursorRow, EaColumn, GroupMembers, GroupRow, NewRun, NewWebhookEvent, PageOutcome,
    PgStore, QueuedEvent, Result, RunEnd, RunRequestRow, RunRow, SqliteStore, Store, StoredDevice,
    StoredIds, SyncFailure, Write,
};
use crate::config::{DatabaseUrl, HistoryConfig};
use crate::domain::{Kind, PacingMemory, Record, RunKind};

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

impl Store for Db {
    fn concurrent_writes(&self) -> usize {
        match self {
            Db::Sqlite(s) => s.concurrent_writes(),
            Db::Postgres(s) => s.concurrent_writes(),
        }
    }

    async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(s) => s.migrate().await,
            Db::Postgres(s) => s.migrate().await,
        }
    }

    async fn installation_id(&self) -> Result<String> {
        match self {
            Db::Sqlite(s) => s.installation_id().await,
            Db::Postgres(s) => s.installation_id().await,
        }
    }

    async fn cursor(&self, instance: &str, kind: Kind) -> Result<Option<DateTime<Utc>>> {
        match self {
            Db::Sqlite(s) => s.cursor(instance, kind).await,
            Db::Postgres(s) => s.cursor(instance, kind).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn start_run(&self, run: &NewRun<'_>) -> Result<i64> {
        match self {
            Db::Sqlite(s) => s.start_run(run).await,
            Db::Postgres(s) => s.start_run(run).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn write_devices<R: Record>(&self, write: Write<'_, R>) -> Result<PageOutcome> {
        match self {
            Db::Sqlite(s) => s.write_devices(write).await,
            Db::Postgres(s) => s.write_devices(write).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn finish_run(&self, end: &RunEnd<'_>) -> Result<()> {
        match self {
            Db::Sqlite(s) => s.finish_run(end).await,
            Db::Postgres(s) => s.finish_run(end).await,
        }
    }

    async fn interrupt_stale_runs(&self, instance: &str) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.interrupt_stale_runs(instance).await,
            Db::Postgres(s) => s.interrupt_stale_runs(instance).await,
        }
    }

    async fn fail_running_runs(&self, instance: &str, kind: RunKind, error: &str) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.fail_running_runs(instance, kind, error).await,
            Db::Postgres(s) => s.fail_running_runs(instance, kind, error).await,
        }
    }

    async fn last_clock_offset(&self, instance: &str, kind: RunKind) -> Result<Option<i64>> {
        match self {
            Db::Sqlite(s) => s.last_clock_offset(instance, kind).await,
            Db::Postgres(s) => s.last_clock_offset(instance, kind).await,
        }
    }

    async fn sync_failures(&self, instance: &str, kind: Kind) -> Result<Vec<SyncFailure>> {
        match self {
            Db::Sqlite(s) => s.sync_failures(instance, kind).await,
            Db::Postgres(s) => s.sync_failures(instance, kind).await,
        }
    }

    async fn failing_sample(
        &self,
        instance: &str,
        kind: Kind,
        limit: i64,
    ) -> Result<(i64, Vec<SyncFailure>)> {
        match self {
            Db::Sqlite(s) => s.failing_sample(instance, kind, limit).await,
            Db::Postgres(s) => s.failing_sample(instance, kind, limit).await,
        }
    }

    async fn last_finished(
        &self,
        instance: &str,
        kind: RunKind,
        succeeded_only: bool,
    ) -> Result<Option<DateTime<Utc>>> {
        match self {
            Db::Sqlite(s) => s.last_finished(instance, kind, succeeded_only).await,
            Db::Postgres(s) => s.last_finished(instance, kind, succeeded_only).await,
        }
    }

    async fn recent_runs(&self, instance: &str, limit: i64) -> Result<Vec<RunRow>> {
        match self {
            Db::Sqlite(s) => s.recent_runs(instance, limit).await,
            Db::Postgres(s) => s.recent_runs(instance, limit).await,
        }
    }

    async fn cursors(&self, instance: &str) -> Result<Vec<CursorRow>> {
        match self {
            Db::Sqlite(s) => s.cursors(instance).await,
            Db::Postgres(s) => s.cursors(instance).await,
        }
    }

    async fn devices(&self, instance: &str, kind: Kind) -> Result<Vec<StoredDevice>> {
        match self {
            Db::Sqlite(s) => s.devices(instance, kind).await,
            Db::Postgres(s) => s.devices(instance, kind).await,
        }
    }

    async fn count_devices(&self, instance: &str, kind: Kind) -> Result<i64> {
        match self {
            Db::Sqlite(s) => s.count_devices(instance, kind).await,
            Db::Postgres(s) => s.count_devices(instance, kind).await,
        }
    }

    async fn stored_ids(&self, instance: &str, kind: Kind, step: u32) -> Result<Option<StoredIds>> {
        match self {
            Db::Sqlite(s) => s.stored_ids(instance, kind, step).await,
            Db::Postgres(s) => s.stored_ids(instance, kind, step).await,
        }
    }

    async fn device_ids(&self, instance: &str, kind: Kind) -> Result<Vec<(i64, bool)>> {
        match self {
            Db::Sqlite(s) => s.device_ids(instance, kind).await,
            Db::Postgres(s) => s.device_ids(instance, kind).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn mark_deleted(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
        observed_at: DateTime<Utc>,
        history: &HistoryConfig,
    ) -> Result<u64> {
        match self {
            Db::Sqlite(s) => {
                s.mark_deleted(instance, kind, ids, observed_at, history)
                    .await
            }
            Db::Postgres(s) => {
                s.mark_deleted(instance, kind, ids, observed_at, history)
                    .await
            }
        }
    }

    async fn device_history(
        &self,
        instance: &str,
        key: &str,
        kind: Option<Kind>,
    ) -> Result<Vec<ChangeRow>> {
        match self {
            Db::Sqlite(s) => s.device_history(instance, key, kind).await,
            Db::Postgres(s) => s.device_history(instance, key, kind).await,
        }
    }

    async fn child_rows(
        &self,
        instance: &str,
        table: &'static crate::domain::children::ChildTable,
    ) -> Result<Vec<(i64, Vec<Option<String>>)>> {
        match self {
            Db::Sqlite(s) => s.child_rows(instance, table).await,
            Db::Postgres(s) => s.child_rows(instance, table).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn refresh_ea_view(
        &self,
        instance: &str,
        kind: Kind,
        force: bool,
    ) -> Result<Option<(String, Vec<EaColumn>)>> {
        match self {
            Db::Sqlite(s) => s.refresh_ea_view(instance, kind, force).await,
            Db::Postgres(s) => s.refresh_ea_view(instance, kind, force).await,
        }
    }

    async fn database_bytes(&self) -> Result<i64> {
        match self {
            Db::Sqlite(s) => s.database_bytes().await,
            Db::Postgres(s) => s.database_bytes().await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn prune_history(&self, before: DateTime<Utc>) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.prune_history(before).await,
            Db::Postgres(s) => s.prune_history(before).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn purge_devices(&self, instance: &str, kind: Kind, ids: &[i64]) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.purge_devices(instance, kind, ids).await,
            Db::Postgres(s) => s.purge_devices(instance, kind, ids).await,
        }
    }

    async fn extension_attributes(
        &self,
        instance: &str,
        kind: Kind,
    ) -> Result<Vec<(i64, String, Option<String>)>> {
        match self {
            Db::Sqlite(s) => s.extension_attributes(instance, kind).await,
            Db::Postgres(s) => s.extension_attributes(instance, kind).await,
        }
    }

    async fn group_rows(
        &self,
        instance: &str,
        kind: Kind,
        group_id: &str,
    ) -> Result<Vec<GroupRow>> {
        match self {
            Db::Sqlite(s) => s.group_rows(instance, kind, group_id).await,
            Db::Postgres(s) => s.group_rows(instance, kind, group_id).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn replace_group(
        &self,
        instance: &str,
        kind: Kind,
        group: &GroupMembers<'_>,
    ) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.replace_group(instance, kind, group).await,
            Db::Postgres(s) => s.replace_group(instance, kind, group).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn drop_groups_except(&self, instance: &str, kind: Kind, keep: &[String]) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.drop_groups_except(instance, kind, keep).await,
            Db::Postgres(s) => s.drop_groups_except(instance, kind, keep).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn purge_instance(
        &self,
        instance: &str,
        apply: bool,
    ) -> Result<Vec<(&'static str, u64)>> {
        match self {
            Db::Sqlite(s) => s.purge_instance(instance, apply).await,
            Db::Postgres(s) => s.purge_instance(instance, apply).await,
        }
    }

    async fn synced_at(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> Result<Vec<(i64, DateTime<Utc>)>> {
        match self {
            Db::Sqlite(s) => s.synced_at(instance, kind, ids).await,
            Db::Postgres(s) => s.synced_at(instance, kind, ids).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.backend()))]
    async fn enqueue_webhook_event(
        &self,
        event: &NewWebhookEvent<'_>,
        max_queued: i64,
    ) -> Result<Option<i64>> {
        match self {
            Db::Sqlite(s) => s.enqueue_webhook_event(event, max_queued).await,
            Db::Postgres(s) => s.enqueue_webhook_event(event, max_queued).await,
        }
    }

    async fn queued_webhook_events(
        &self,
        instance: &str,
        due_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<QueuedEvent>> {
        match self {
            Db::Sqlite(s) => s.queued_webhook_events(instance, due_by, limit).await,
            Db::Postgres(s) => s.queued_webhook_events(instance, due_by, limit).await,
        }
    }

    async fn delete_webhook_events(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.delete_webhook_events(instance, ids).await,
            Db::Postgres(s) => s.delete_webhook_events(instance, ids).await,
        }
    }

    async fn defer_webhook_events(
        &self,
        instance: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
        error: &str,
    ) -> Result<u64> {
        match self {
            Db::Sqlite(s) => {
                s.defer_webhook_events(instance, ids, not_before, error)
                    .await
            }
            Db::Postgres(s) => {
                s.defer_webhook_events(instance, ids, not_before, error)
                    .await
            }
        }
    }

    async fn webhook_queue_depth(&self, instance: &str) -> Result<i64> {
        match self {
            Db::Sqlite(s) => s.webhook_queue_depth(instance).await,
            Db::Postgres(s) => s.webhook_queue_depth(instance).await,
        }
    }

    async fn request_run(
        &self,
        instance: &str,
        kind: &str,
        op: &str,
        trigger: &str,
        by: &str,
    ) -> Result<(i64, bool)> {
        match self {
            Db::Sqlite(s) => s.request_run(instance, kind, op, trigger, by).await,
            Db::Postgres(s) => s.request_run(instance, kind, op, trigger, by).await,
        }
    }

    async fn handed_over(&self, instance: &str, ids: &[i64]) -> Result<(Vec<i64>, Vec<RunRow>)> {
        match self {
            Db::Sqlite(s) => s.handed_over(instance, ids).await,
            Db::Postgres(s) => s.handed_over(instance, ids).await,
        }
    }

    async fn withdraw_requests(&self, ids: &[i64]) -> Result<u64> {
        match self {
            Db::Sqlite(s) => s.withdraw_requests(ids).await,
            Db::Postgres(s) => s.withdraw_requests(ids).await,
        }
    }

    async fn waiting_requests(&self, instances: Option<&[String]>) -> Result<Vec<RunRequestRow>> {
        match self {
            Db::Sqlite(s) => s.waiting_requests(instances).await,
            Db::Postgres(s) => s.waiting_requests(instances).await,
        }
    }

    async fn take_request(&self, id: i64) -> Result<()> {
        match self {
            Db::Sqlite(s) => s.take_request(id).await,
            Db::Postgres(s) => s.take_request(id).await,
        }
    }

    async fn pacing_memory(
        &self,
        instance: &str,
        server: &str,
    ) -> Result<Option<(PacingMemory, DateTime<Utc>)>> {
        match self {
            Db::Sqlite(s) => s.pacing_memory(instance, server).await,
            Db::Postgres(s) => s.pacing_memory(instance, server).await,
        }
    }

    async fn save_pacing_memory(
        &self,
        instance: &str,
        server: &str,
        memory: &PacingMemory,
        saved_at: DateTime<Utc>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(s) => {
                s.save_pacing_memory(instance, server, memory, saved_at)
                    .await
            }
            Db::Postgres(s) => {
                s.save_pacing_memory(instance, server, memory, saved_at)
                    .await
            }
        }
    }
}
