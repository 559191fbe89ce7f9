//! `sync_runs`, `sync_cursors` and `sync_failures`: a run starts, adds its progress with its
//! pages (in the write path), and finishes; only a succeeded run moves its kind's cursor, in
//! the transaction that marks it succeeded, and never backwards.

use chrono::{DateTime, Utc};

use super::{Backend, Col, RowsAffected, SqlStore};
use crate::domain::{Kind, RunKind, RunStatus};
use crate::store::rows::RUN_COLUMNS;
use crate::store::{CursorRow, NewRun, Result, RunEnd, RunRow, SyncFailure};

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: Col<DB>,
    i32: Col<DB>,
    bool: Col<DB>,
    String: Col<DB>,
    DateTime<Utc>: Col<DB>,
    Option<i64>: Col<DB>,
    Option<bool>: Col<DB>,
    Option<String>: Col<DB>,
    Option<DateTime<Utc>>: Col<DB>,
    for<'a> Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    pub(crate) async fn cursor(&self, instance: &str, kind: Kind) -> Result<Option<DateTime<Utc>>> {
        let row: Option<(DateTime<Utc>,)> =
            sqlx::query_as("SELECT cursor FROM sync_cursors WHERE instance = $1 AND kind = $2")
                .bind(instance)
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    pub(crate) async fn start_run(&self, run: &NewRun<'_>) -> Result<i64> {
        let mut tx = DB::begin_write(self, run.instance).await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO sync_runs (instance, kind, \"trigger\", mode, status, started_at, cursor_before, request_id) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) RETURNING id",
        )
        .bind(run.instance)
        .bind(run.kind.as_str())
        .bind(run.trigger.as_str())
        .bind(run.mode)
        .bind(run.started_at)
        .bind(run.cursor_before)
        .bind(run.trigger.request_id())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if let (RunKind::Sync(kind), "full") = (run.kind, run.mode) {
            self.defer_child_indexes(run.instance, kind, id).await?;
        }
        Ok(id)
    }

    pub(crate) async fn finish_run(&self, end: &RunEnd<'_>) -> Result<()> {
        // Before the run is marked: a finished first fill has its indexes. A failure to build
        // them does not keep the run from ending; they are built at the next start or run.
        let rebuilt = match end.kind {
            RunKind::Sync(_) => self
                .rebuild_child_indexes(super::fill::Rebuild::Run(end.run_id))
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
        let mut tx = DB::begin_write(self, end.instance).await?;
        let c = &end.counts;
        let cursor_after = if end.status == RunStatus::Succeeded {
            end.cursor_after
        } else {
            None
        };
        sqlx::query(
            "UPDATE sync_runs SET status = $1, finished_at = $2, listed = $3, fetched = $4, \
             upserted = $5, unchanged = $6, failed = $7, missing = $8, error = $9, child_rows = $14, \
             cursor_after = $10, stale = $11, clock_offset_ms = $13 WHERE id = $12",
        )
        .bind(end.status.as_str())
        .bind(end.finished_at)
        .bind(c.listed)
        .bind(c.fetched)
        .bind(c.upserted)
        .bind(c.unchanged)
        .bind(c.failed)
        .bind(c.missing)
        .bind(end.error.as_deref())
        .bind(cursor_after)
        .bind(c.stale)
        .bind(end.run_id)
        .bind(end.clock_offset_ms)
        .bind(c.child_rows)
        .execute(&mut *tx)
        .await?;
        if let Some(cursor) = cursor_after {
            // Never move backwards, even if runs finish out of order.
            sqlx::query(
                "INSERT INTO sync_cursors (instance, kind, cursor, run_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance, kind) DO UPDATE SET \
                 cursor = excluded.cursor, run_id = excluded.run_id, updated_at = excluded.updated_at \
                 WHERE sync_cursors.cursor < excluded.cursor",
            )
            .bind(end.instance)
            .bind(end.kind.as_str())
            .bind(cursor)
            .bind(end.run_id)
            .bind(end.finished_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        rebuilt
    }

    pub(crate) async fn interrupt_stale_runs(&self, instance: &str) -> Result<u64> {
        let mut tx = DB::begin_write(self, instance).await?;
        let r = sqlx::query(
            "UPDATE sync_runs SET status = 'interrupted', finished_at = $1, \
             error = COALESCE(error, 'process stopped while the run was in progress') \
             WHERE instance = $2 AND status = 'running'",
        )
        .bind(Utc::now())
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    pub(crate) async fn fail_running_runs(
        &self,
        instance: &str,
        kind: RunKind,
        error: &str,
    ) -> Result<u64> {
        let mut tx = DB::begin_write(self, instance).await?;
        let r = sqlx::query(
            "UPDATE sync_runs SET status = 'failed', finished_at = $1, error = $2 \
             WHERE instance = $3 AND kind = $4 AND status = 'running'",
        )
        .bind(Utc::now())
        .bind(error)
        .bind(instance)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    pub(crate) async fn last_clock_offset(
        &self,
        instance: &str,
        kind: RunKind,
    ) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT clock_offset_ms FROM sync_runs WHERE instance = $1 AND kind = $2 \
             AND clock_offset_ms IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(instance)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| r.0))
    }

    pub(crate) async fn last_finished(
        &self,
        instance: &str,
        kind: RunKind,
        succeeded_only: bool,
    ) -> Result<Option<DateTime<Utc>>> {
        let row: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "SELECT finished_at FROM sync_runs WHERE instance = $1 AND kind = $2 \
             AND finished_at IS NOT NULL AND (status = 'succeeded' OR NOT $3) \
             ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(instance)
        .bind(kind.as_str())
        .bind(succeeded_only)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| r.0))
    }

    pub(crate) async fn recent_runs(&self, instance: &str, limit: i64) -> Result<Vec<RunRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE instance = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(instance)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn cursors(&self, instance: &str) -> Result<Vec<CursorRow>> {
        Ok(sqlx::query_as(
            "SELECT instance, kind, cursor, run_id, updated_at FROM sync_cursors \
             WHERE instance = $1 ORDER BY kind",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn sync_failures(
        &self,
        instance: &str,
        kind: Kind,
    ) -> Result<Vec<SyncFailure>> {
        Ok(sqlx::query_as(
            "SELECT jamf_id, error, first_seen_at, last_seen_at, attempts FROM sync_failures \
             WHERE instance = $1 AND kind = $2 ORDER BY first_seen_at, jamf_id",
        )
        .bind(instance)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn failing_sample(
        &self,
        instance: &str,
        kind: Kind,
        limit: i64,
    ) -> Result<(i64, Vec<SyncFailure>)> {
        let (total,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM sync_failures WHERE instance = $1 AND kind = $2")
                .bind(instance)
                .bind(kind.as_str())
                .fetch_one(&self.pool)
                .await?;
        // The count alone (the gauges ask for it on every scrape): no second query.
        if limit == 0 {
            return Ok((total, Vec::new()));
        }
        let sample = sqlx::query_as(
            "SELECT jamf_id, error, first_seen_at, last_seen_at, attempts FROM sync_failures \
             WHERE instance = $1 AND kind = $2 ORDER BY first_seen_at, jamf_id LIMIT $3",
        )
        .bind(instance)
        .bind(kind.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, sample))
    }
}
