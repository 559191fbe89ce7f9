//! SQLite and PostgreSQL implementations of [`Store`](super::Store).
//!
//! One body serves both (`store_impl!` here, `writer_impl!` for the write path): the SQL is
//! identical but for how id lists are matched ([`IdList`](super::writer::IdList)), how a write
//! transaction begins, the upsert of changed devices (multi-row `VALUES` on SQLite, array
//! parameters on PostgreSQL), and the migrations folder. Batched statements keep the cost per
//! page at a handful of round trips whatever the page size.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;

use super::history::{Change, ChangeRow};
use super::lease::Fence;
use super::views::{self, EaColumn};
use super::writer::{self, push_ids, writer_impl, Tx, CHUNK};
use super::{
    partition_changed, CursorRow, GroupMembers, NewRun, NewWebhookEvent, PageOutcome, QueuedEvent,
    Result, RunEnd, RunRequestRow, RunRow, Store, StoredDevice, StoredIds, SyncFailure, Write,
};
use crate::config::HistoryConfig;
use crate::domain::children;
use crate::domain::{DeviceInfo, DeviceRecord, Kind, PacingMemory, RunKind, RunStatus};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set when several processes may share the database ([`super::lease`]).
    fence: Arc<OnceLock<Arc<Fence>>>,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets `status` and dashboards read while a sync writes.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        create_private(opts.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction that holds SQLite's write lock from the start: a deferred one that
    /// read first could not upgrade once another writer committed (`SQLITE_BUSY_SNAPSHOT`).
    async fn begin_write(
        &self,
        _instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A transaction that appends to an instance's webhook queue: SQLite's one writer already
    /// keeps two appends apart.
    async fn begin_queue(
        &self,
        _instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Purge may go on: on SQLite the writer lock the command holds already keeps every other
    /// process out.
    async fn refuse_if_held(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _instance: &str,
    ) -> Result<()> {
        Ok(())
    }

    /// A write transaction on a group membership table: SQLite's one writer already keeps a
    /// device write and a group write apart.
    async fn begin_memberships(
        &self,
        _table: &str,
        instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_write(instance).await
    }
}

/// Creates a new database file readable by its owner only: it holds the fleet's inventory.
/// SQLite gives its `-wal` and `-shm` files the database file's mode. An existing file keeps
/// the mode its owner chose.
fn create_private(path: &std::path::Path) -> Result<()> {
    let name = path.to_string_lossy();
    // `file:…` names are in-memory databases (`sqlite::memory:`).
    if name.is_empty() || name.starts_with("file:") || name == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        // Another process created it meanwhile: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(super::StoreError::Sqlx(sqlx::Error::Io(e))),
    }
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        // A new connection costs far more than a query (a TLS handshake and authentication;
        // with sqlx 0.9.0, which did not set TCP_NODELAY, ~90 ms on loopback). The few a run
        // uses at once (its writer, the run's bookkeeping, a second kind) are opened in the
        // background from the start and kept, instead of one by one as a run first needs them.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(max_connections.min(3))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self {
            pool,
            fence: Arc::new(OnceLock::new()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fences every write from now on; `false` if already fenced.
    pub fn coordinate(&self, fence: Arc<Fence>) -> bool {
        self.fence.set(fence).is_ok()
    }

    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.get()
    }

    /// A write transaction for `instance`; when coordinated, it first proves this process
    /// holds the instance ([`Fence::check`]).
    async fn begin_write(
        &self,
        instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = self.fence.get() {
            fence.check(&mut tx, instance).await?;
        }
        Ok(tx)
    }

    /// A transaction that appends to an instance's webhook queue, holding the instance's queue
    /// lock (a transaction-scoped advisory lock): under READ COMMITTED two receivers would
    /// otherwise both count the queue one short of full and both append.
    async fn begin_queue(
        &self,
        instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('jamf-sync webhook queue ' || $1, 0))",
        )
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    /// Refuses to purge an instance a live process holds (its lease is unexpired), whatever
    /// this configuration lists: that process would go on writing it. The lease row stays
    /// locked until the purge commits, so nobody takes it meanwhile.
    async fn refuse_if_held(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        instance: &str,
    ) -> Result<()> {
        let holder: Option<(String,)> = sqlx::query_as(
            "SELECT holder FROM instance_leases WHERE instance = $1 AND expires_at > now() \
             FOR UPDATE",
        )
        .bind(instance)
        .fetch_optional(&mut **tx)
        .await?;
        match holder {
            Some((holder,)) => Err(super::StoreError::Held {
                instance: instance.to_string(),
                holder,
            }),
            None => Ok(()),
        }
    }

    /// A write transaction that keeps other writers of a group membership table out until it
    /// commits: a device's rows (replaced by device) and a group's rows (replaced by group)
    /// overlap, and two such transactions interleaved under READ COMMITTED could both insert
    /// the same membership. Readers are not blocked.
    async fn begin_memberships(
        &self,
        table: &str,
        instance: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.begin_write(instance).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }
}

macro_rules! store_impl {
    ($store:ty, $db:ty, $migrations:expr, $raw_text:literal) => {
        writer_impl!($store);

        impl $store {
            /// Runs `head … IN (ids)` once per chunk of `ids` inside `tx`; returns the rows
            /// affected. `head` writes the statement up to the column the ids are matched on.
            async fn execute_in_chunks(
                tx: &mut sqlx::Transaction<'_, $db>,
                ids: &[i64],
                head: impl Fn(&mut QueryBuilder<$db>),
            ) -> Result<u64> {
                let mut n = 0;
                for chunk in ids.chunks(CHUNK) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new("");
                    head(&mut q);
                    push_ids(&mut q, chunk);
                    n += q.build().execute(&mut **tx).await?.rows_affected();
                }
                Ok(n)
            }

            /// Forgets these devices' hash of one child table (`table`), or of all of them:
            /// their rows changed from another side (a group's member list), so the device's
            /// next record rewrites its own rows; or the devices are purged.
            async fn forget_child_hashes(
                tx: &mut sqlx::Transaction<'_, $db>,
                instance: &str,
                kind: Kind,
                table: Option<&'static str>,
                ids: &[i64],
            ) -> Result<u64> {
                Self::execute_in_chunks(tx, ids, |q| {
                    q.push("DELETE FROM child_hashes WHERE device_type = ");
                    q.push_bind(kind.device_type());
                    if let Some(table) = table {
                        q.push(" AND child = ").push_bind(table);
                    }
                    q.push(" AND instance = ");
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                })
                .await
            }

            /// Removes these devices' `sync_failures` rows (written, or gone from Jamf).
            async fn clear_failures(
                tx: &mut sqlx::Transaction<'_, $db>,
                instance: &str,
                kind: Kind,
                ids: &[i64],
            ) -> Result<u64> {
                Self::execute_in_chunks(tx, ids, |q| {
                    q.push("DELETE FROM sync_failures WHERE instance = ");
                    q.push_bind(instance.to_string()).push(" AND kind = ");
                    q.push_bind(kind.as_str()).push(" AND jamf_id");
                })
                .await
            }

            /// [`Self::execute_in_chunks`] in a write transaction of its own.
            async fn chunked_in_own_tx(
                &self,
                instance: &str,
                ids: &[i64],
                head: impl Fn(&mut QueryBuilder<$db>),
            ) -> Result<u64> {
                let mut tx = self.begin_write(instance).await?;
                let n = Self::execute_in_chunks(&mut tx, ids, head).await?;
                tx.commit().await?;
                Ok(n)
            }
        }

        impl Store for $store {
            fn concurrent_writes(&self) -> usize {
                Self::CONCURRENT_WRITES
            }

            async fn migrate(&self) -> Result<()> {
                $migrations.run(&self.pool).await?;
                Ok(())
            }

            async fn cursor(&self, instance: &str, kind: Kind) -> Result<Option<DateTime<Utc>>> {
                let row: Option<(DateTime<Utc>,)> = sqlx::query_as(
                    "SELECT cursor FROM sync_cursors WHERE instance = $1 AND kind = $2",
                )
                .bind(instance)
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| r.0))
            }

            async fn start_run(&self, run: &NewRun<'_>) -> Result<i64> {
                let mut tx = self.begin_write(run.instance).await?;
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
                Ok(id)
            }

            async fn write_devices<R: DeviceRecord>(&self, w: Write<'_, R>) -> Result<PageOutcome> {
                // The fast path writes the page whole; only a page the database refused for
                // a record's data is written again, record by record where it must be.
                match self.write_devices_tx(w, false).await {
                    Err(e) if super::refusal::record_error(&e).is_some() => {
                        self.write_devices_tx(w, true).await
                    }
                    other => other,
                }
            }

            async fn mark_deleted(
                &self,
                instance: &str,
                kind: Kind,
                ids: &[i64],
                observed_at: DateTime<Utc>,
                history: &HistoryConfig,
            ) -> Result<u64> {
                let now = Utc::now();
                let mut tx = self.begin_write(instance).await?;
                // The devices this marks (live until now) are the history's deletions.
                let mut live: Vec<i64> = Vec::new();
                if history.enabled && !history.excludes("deleted") {
                    for part in ids.chunks(writer::CHUNK) {
                        let mut q = QueryBuilder::new(format!(
                            "SELECT jamf_id FROM {} WHERE deleted_at IS NULL AND instance = ",
                            kind.as_str()
                        ));
                        q.push_bind(instance.to_string()).push(" AND jamf_id");
                        writer::push_ids(&mut q, part);
                        let found: Vec<(i64,)> = q.build_query_as().fetch_all(&mut *tx).await?;
                        live.extend(found.into_iter().map(|r| r.0));
                    }
                }
                let n = Self::execute_in_chunks(&mut tx, ids, |q| {
                    q.push(format!("UPDATE {} SET deleted_at = ", kind.as_str()));
                    q.push_bind(now).push(", fetched_at = ").push_bind(observed_at);
                    q.push(" WHERE instance = ").push_bind(instance.to_string());
                    q.push(" AND deleted_at IS NULL AND jamf_id");
                })
                .await?;
                let changes: Vec<_> = live
                    .into_iter()
                    .map(|jamf_id| {
                        let change = Change {
                            jamf_id,
                            field: "deleted".into(),
                            old: Some("false".into()),
                            new: Some("true".into()),
                        };
                        (change, Some(observed_at))
                    })
                    .collect();
                Self::record_changes(&mut tx, instance, kind, &changes, None, now).await?;
                Self::clear_failures(&mut tx, instance, kind, ids).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn finish_run(&self, end: &RunEnd<'_>) -> Result<()> {
                let mut tx = self.begin_write(end.instance).await?;
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
                Ok(())
            }

            async fn interrupt_stale_runs(&self, instance: &str) -> Result<u64> {
                let mut tx = self.begin_write(instance).await?;
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

            async fn installation_id(&self) -> Result<String> {
                let fresh = format!("{:016x}", fastrand::u64(..));
                // Two processes starting together both insert; the first one's id stays.
                sqlx::query(
                    "INSERT INTO installation (singleton, id) VALUES (1, $1) ON CONFLICT DO NOTHING",
                )
                .bind(&fresh)
                .execute(&self.pool)
                .await?;
                let (id,): (String,) =
                    sqlx::query_as("SELECT id FROM installation WHERE singleton = 1")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(id)
            }

            async fn fail_running_runs(
                &self,
                instance: &str,
                kind: RunKind,
                error: &str,
            ) -> Result<u64> {
                let mut tx = self.begin_write(instance).await?;
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

            async fn sync_failures(&self, instance: &str, kind: Kind) -> Result<Vec<SyncFailure>> {
                Ok(sqlx::query_as(
                    "SELECT jamf_id, error, first_seen_at, last_seen_at, attempts FROM sync_failures \
                     WHERE instance = $1 AND kind = $2 ORDER BY first_seen_at, jamf_id",
                )
                .bind(instance)
                .bind(kind.as_str())
                .fetch_all(&self.pool)
                .await?)
            }

            async fn failing_sample(
                &self,
                instance: &str,
                kind: Kind,
                limit: i64,
            ) -> Result<(i64, Vec<SyncFailure>)> {
                let (total,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM sync_failures WHERE instance = $1 AND kind = $2",
                )
                .bind(instance)
                .bind(kind.as_str())
                .fetch_one(&self.pool)
                .await?;
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

            async fn last_clock_offset(&self, instance: &str, kind: RunKind) -> Result<Option<i64>> {
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

            async fn last_finished(
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

            async fn recent_runs(&self, instance: &str, limit: i64) -> Result<Vec<RunRow>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM sync_runs WHERE instance = $1 ORDER BY id DESC LIMIT $2"
                ))
                    .bind(instance)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn cursors(&self, instance: &str) -> Result<Vec<CursorRow>> {
                Ok(sqlx::query_as(
                    "SELECT instance, kind, cursor, run_id, updated_at FROM sync_cursors \
                     WHERE instance = $1 ORDER BY kind",
                )
                .bind(instance)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn devices(&self, instance: &str, kind: Kind) -> Result<Vec<StoredDevice>> {
                // One shape for both kinds: columns a kind does not have read as NULL.
                let by_kind = match kind {
                    Kind::Computers => {
                        "CAST(NULL AS TEXT) AS os_type, report_date AS as_of, last_contact"
                    }
                    Kind::MobileDevices => {
                        "os_type, last_inventory_update AS as_of, \
                         CAST(NULL AS TIMESTAMPTZ) AS last_contact"
                    }
                };
                let sql = format!(
                    "SELECT jamf_id, {}, {by_kind}, {} AS raw, raw_hash, first_seen_at, \
                     changed_at, synced_at, deleted_at FROM {} WHERE instance = $1 ORDER BY jamf_id",
                    DeviceInfo::COLUMNS.join(", "),
                    $raw_text,
                    kind.as_str()
                );
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(instance)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn count_devices(&self, instance: &str, kind: Kind) -> Result<i64> {
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE instance = $1 AND deleted_at IS NULL",
                    kind.as_str()
                );
                let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(instance)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn stored_ids(
                &self,
                instance: &str,
                kind: Kind,
                step: u32,
            ) -> Result<Option<StoredIds>> {
                // Every step-th row and the last one (its rank is the count).
                let sql = format!(
                    "SELECT jamf_id, rn FROM (SELECT jamf_id, \
                     ROW_NUMBER() OVER (ORDER BY jamf_id) AS rn, COUNT(*) OVER () AS n \
                     FROM {} WHERE instance = $1 AND deleted_at IS NULL) q \
                     WHERE rn % $2 = 0 OR rn = n ORDER BY rn",
                    kind.as_str()
                );
                let step = step.max(1);
                let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(instance)
                    .bind(i64::from(step))
                    .fetch_all(&self.pool)
                    .await?;
                let Some(&(max, count)) = rows.last() else {
                    return Ok(None);
                };
                let ids = rows
                    .iter()
                    .filter(|(_, rn)| rn % i64::from(step) == 0)
                    .map(|(id, _)| *id)
                    .collect();
                Ok(Some(StoredIds {
                    step,
                    ids,
                    count,
                    max,
                }))
            }

            async fn device_history(
                &self,
                instance: &str,
                key: &str,
                kind: Option<Kind>,
            ) -> Result<Vec<ChangeRow>> {
                let mut rows = Vec::new();
                for k in [Kind::Computers, Kind::MobileDevices] {
                    if kind.is_some_and(|want| want != k) {
                        continue;
                    }
                    let sql = format!(
                        "SELECT instance, device_type, jamf_id, changed_at, recorded_at, field, \
                         old_value, new_value, run_id FROM inventory_changes \
                         WHERE instance = $1 AND device_type = $3 AND jamf_id IN \
                         (SELECT jamf_id FROM {} WHERE instance = $1 AND (serial_number = $2 \
                         OR udid = $2 OR CAST(jamf_id AS TEXT) = $2)) ORDER BY jamf_id, id",
                        k.as_str()
                    );
                    let found: Vec<ChangeRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(instance)
                        .bind(key)
                        .bind(k.device_type())
                        .fetch_all(&self.pool)
                        .await?;
                    rows.extend(found);
                }
                Ok(rows)
            }

            async fn child_rows(
                &self,
                instance: &str,
                table: &'static crate::domain::children::ChildTable,
            ) -> Result<Vec<(i64, Vec<Option<String>>)>> {
                use crate::domain::children::{Val, ValType};
                use sqlx::Row;
                let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
                let sql = format!(
                    "SELECT jamf_id, {} FROM {} WHERE instance = $1 ORDER BY jamf_id",
                    names.join(", "),
                    table.name
                );
                let mut out = Vec::new();
                for row in sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(instance)
                    .fetch_all(&self.pool)
                    .await?
                {
                    let mut values = Vec::with_capacity(names.len());
                    for (i, (_, ty)) in table.columns.iter().enumerate() {
                        let v = match ty {
                            ValType::Text => Val::Text(row.try_get(i + 1)?),
                            ValType::Bool => Val::Bool(row.try_get(i + 1)?),
                            ValType::Int => Val::Int(row.try_get(i + 1)?),
                            ValType::Time => Val::Time(row.try_get(i + 1)?),
                        };
                        values.push(v.as_text());
                    }
                    out.push((row.try_get(0)?, values));
                }
                Ok(out)
            }

            async fn refresh_ea_view(
                &self,
                instance: &str,
                kind: Kind,
                force: bool,
            ) -> Result<Option<(String, Vec<EaColumn>)>> {
                let columns: Vec<EaColumn> = sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT name, MAX(data_type) FROM extension_attributes \
                     WHERE instance = $1 AND device_type = $2 GROUP BY name ORDER BY name",
                )
                .bind(instance)
                .bind(kind.device_type())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|(name, data_type)| EaColumn { name, data_type })
                .collect();
                let signature = views::signature(&columns);
                let mut tx = self.begin_write(instance).await?;
                let stored: Option<(String,)> = sqlx::query_as(
                    "SELECT signature FROM ea_views WHERE instance = $1 AND device_type = $2",
                )
                .bind(instance)
                .bind(kind.device_type())
                .fetch_optional(&mut *tx)
                .await?;
                if !force && stored.is_some_and(|s| s.0 == signature) {
                    return Ok(None);
                }
                let name = views::view_name(instance, kind);
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP VIEW IF EXISTS {name}")))
                    .execute(&mut *tx)
                    .await?;
                let sql = views::create_sql(Self::DIALECT, instance, kind, &columns);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO ea_views (instance, device_type, view_name, signature) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (instance, device_type) \
                     DO UPDATE SET view_name = excluded.view_name, signature = excluded.signature",
                )
                .bind(instance)
                .bind(kind.device_type())
                .bind(&name)
                .bind(&signature)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some((name, columns)))
            }

            async fn database_bytes(&self) -> Result<i64> {
                let (n,): (i64,) = sqlx::query_as(Self::SIZE_SQL).fetch_one(&self.pool).await?;
                Ok(n)
            }

            async fn prune_history(&self, before: DateTime<Utc>) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM inventory_changes WHERE recorded_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            async fn device_ids(&self, instance: &str, kind: Kind) -> Result<Vec<(i64, bool)>> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT jamf_id, deleted_at IS NOT NULL FROM {} WHERE instance = ",
                    kind.as_str()
                ));
                q.push_bind(instance.to_string()).push(" ORDER BY jamf_id");
                Ok(q.build_query_as().fetch_all(&self.pool).await?)
            }

            async fn purge_devices(&self, instance: &str, kind: Kind, ids: &[i64]) -> Result<u64> {
                // Attributes, child rows and devices go together or not at all.
                let mut tx = self.begin_write(instance).await?;
                let tables = crate::domain::children::ALL
                    .iter()
                    .filter(|t| t.device_type == kind.device_type());
                for table in tables {
                    Self::execute_in_chunks(&mut tx, ids, |q| {
                        q.push(format!("DELETE FROM {} WHERE instance = ", table.name));
                        q.push_bind(instance.to_string()).push(" AND jamf_id");
                    })
                    .await?;
                }
                Self::forget_child_hashes(&mut tx, instance, kind, None, ids).await?;
                Self::execute_in_chunks(&mut tx, ids, |q| {
                    q.push("DELETE FROM extension_attributes WHERE device_type = ");
                    q.push_bind(kind.device_type()).push(" AND instance = ");
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                })
                .await?;
                let n = Self::execute_in_chunks(&mut tx, ids, |q| {
                    q.push(format!("DELETE FROM {} WHERE instance = ", kind.as_str()));
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                })
                .await?;
                Self::clear_failures(&mut tx, instance, kind, ids).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn purge_instance(
                &self,
                instance: &str,
                apply: bool,
            ) -> Result<Vec<(&'static str, u64)>> {
                const TABLES: &[&str] = &[
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
                let mut tx = self.begin_write(instance).await?;
                Self::refuse_if_held(&mut tx, instance).await?;
                // Only the views made for exactly this instance (view names fold case and
                // punctuation: `DEFAULT` and `default` share one), and none another instance
                // still has.
                let views: Vec<(String,)> = sqlx::query_as(
                    "SELECT v.view_name FROM ea_views v WHERE v.instance = $1 AND NOT EXISTS \
                     (SELECT 1 FROM ea_views o WHERE o.view_name = v.view_name AND o.instance <> $1)",
                )
                .bind(instance)
                .fetch_all(&mut *tx)
                .await?;
                for (view,) in views {
                    // The name is ours (`views::view_name`), read back: checked before use.
                    if view.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP VIEW IF EXISTS {view}")))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let tables = children::ALL.iter().map(|t| t.name).chain(TABLES.iter().copied());
                let mut removed = Vec::new();
                for table in tables {
                    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE instance = $1"
                    )))
                    .bind(instance)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    removed.push((table, n));
                }
                if apply {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                Ok(removed)
            }

            async fn group_rows(
                &self,
                instance: &str,
                kind: Kind,
                group_id: &str,
            ) -> Result<Vec<(i64, Option<String>, Option<bool>)>> {
                let sql = format!(
                    "SELECT jamf_id, group_name, smart FROM {} WHERE instance = $1 AND group_id = $2",
                    children::memberships(kind).name
                );
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(instance)
                    .bind(group_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn replace_group(
                &self,
                instance: &str,
                kind: Kind,
                group: &GroupMembers<'_>,
            ) -> Result<u64> {
                let table = children::memberships(kind).name;
                let mut tx = self.begin_memberships(table, instance).await?;
                let old: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE instance = $1 AND group_id = $2 RETURNING jamf_id"
                )))
                .bind(instance)
                .bind(group.id)
                .fetch_all(&mut *tx)
                .await?;
                for chunk in group.members.chunks(CHUNK) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                        "INSERT INTO {table} (instance, jamf_id, group_id, group_name, smart) "
                    ));
                    q.push_values(chunk, |mut b, id| {
                        b.push_bind(instance.to_string())
                            .push_bind(*id)
                            .push_bind(group.id.to_string())
                            .push_bind(group.name.to_string())
                            .push_bind(group.smart);
                    });
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
                let mut touched: Vec<i64> = old.into_iter().chain(group.members.iter().copied()).collect();
                touched.sort_unstable();
                touched.dedup();
                Self::forget_child_hashes(&mut tx, instance, kind, Some(table), &touched).await?;
                tx.commit().await?;
                Ok(group.members.len() as u64)
            }

            async fn drop_groups_except(
                &self,
                instance: &str,
                kind: Kind,
                keep: &[String],
            ) -> Result<u64> {
                let table = children::memberships(kind).name;
                let mut tx = self.begin_memberships(table, instance).await?;
                let mut q: QueryBuilder<$db> =
                    QueryBuilder::new(format!("DELETE FROM {table} WHERE instance = "));
                q.push_bind(instance.to_string());
                if !keep.is_empty() {
                    q.push(" AND group_id NOT IN (");
                    let mut list = q.separated(", ");
                    for id in keep {
                        list.push_bind(id.clone());
                    }
                    q.push(")");
                }
                q.push(" RETURNING jamf_id");
                let mut touched: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                let n = touched.len() as u64;
                touched.sort_unstable();
                touched.dedup();
                Self::forget_child_hashes(&mut tx, instance, kind, Some(table), &touched).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn synced_at(
                &self,
                instance: &str,
                kind: Kind,
                ids: &[i64],
            ) -> Result<Vec<(i64, DateTime<Utc>)>> {
                let mut out = Vec::new();
                for chunk in ids.chunks(CHUNK) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                        "SELECT jamf_id, synced_at FROM {} WHERE deleted_at IS NULL AND instance = ",
                        kind.as_str()
                    ));
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                    push_ids(&mut q, chunk);
                    out.extend(q.build_query_as::<(i64, DateTime<Utc>)>().fetch_all(&self.pool).await?);
                }
                Ok(out)
            }

            async fn enqueue_webhook_event(
                &self,
                e: &NewWebhookEvent<'_>,
                max_queued: i64,
            ) -> Result<Option<i64>> {
                // The count stops at the cap (an index range of at most `max_queued` rows per
                // event, whatever the queue holds), and on PostgreSQL the instance's queue is
                // locked first, so two receivers never both take the last place.
                let mut tx = self.begin_queue(e.instance).await?;
                let row: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO webhook_events (instance, kind, jamf_id, event, action, received_at, \
                     event_at, not_before) SELECT $1, $2, $3, $4, $5, $6, $7, $6 \
                     WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM webhook_events WHERE instance = $1 \
                     LIMIT $8) queued) < $8 \
                     RETURNING id",
                )
                .bind(e.instance)
                .bind(e.kind.as_str())
                .bind(e.jamf_id)
                .bind(e.event)
                .bind(e.action.as_str())
                .bind(e.received_at)
                .bind(e.event_at)
                .bind(max_queued)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.map(|r| r.0))
            }

            async fn queued_webhook_events(
                &self,
                instance: &str,
                due_by: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<QueuedEvent>> {
                Ok(sqlx::query_as(
                    "SELECT id, kind, jamf_id, event, action, received_at, event_at, attempts, \
                     not_before FROM webhook_events WHERE instance = $1 AND not_before <= $2 \
                     ORDER BY id LIMIT $3",
                )
                .bind(instance)
                .bind(due_by)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_webhook_events(&self, instance: &str, ids: &[i64]) -> Result<u64> {
                self.chunked_in_own_tx(instance, ids, |q| {
                    q.push("DELETE FROM webhook_events WHERE instance = ");
                    q.push_bind(instance.to_string()).push(" AND id");
                })
                .await
            }

            async fn defer_webhook_events(
                &self,
                instance: &str,
                ids: &[i64],
                not_before: DateTime<Utc>,
                error: &str,
            ) -> Result<u64> {
                self.chunked_in_own_tx(instance, ids, |q| {
                    q.push("UPDATE webhook_events SET attempts = attempts + 1, not_before = ");
                    q.push_bind(not_before).push(", last_error = ").push_bind(error.to_string());
                    q.push(" WHERE instance = ").push_bind(instance.to_string()).push(" AND id");
                })
                .await
            }

            async fn pacing_memory(
                &self,
                instance: &str,
                server: &str,
            ) -> Result<Option<(PacingMemory, DateTime<Utc>)>> {
                let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT server, memory, saved_at FROM pacing_memory WHERE instance = $1",
                )
                .bind(instance)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.and_then(|(saved_for, memory, saved_at)| {
                    if saved_for != server {
                        return None;
                    }
                    match serde_json::from_str(&memory) {
                        Ok(m) => Some((m, saved_at)),
                        Err(e) => {
                            tracing::warn!(instance, error = %e, "ignoring unreadable pacing memory");
                            None
                        }
                    }
                }))
            }

            async fn save_pacing_memory(
                &self,
                instance: &str,
                server: &str,
                memory: &PacingMemory,
                saved_at: DateTime<Utc>,
            ) -> Result<()> {
                let text = serde_json::to_string(memory)
                    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let mut tx = self.begin_write(instance).await?;
                sqlx::query(
                    "INSERT INTO pacing_memory (instance, server, memory, saved_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (instance) DO UPDATE SET \
                     server = excluded.server, memory = excluded.memory, saved_at = excluded.saved_at",
                )
                .bind(instance)
                .bind(server)
                .bind(text)
                .bind(saved_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn request_run(
                &self,
                instance: &str,
                kind: &str,
                op: &str,
                trigger: &str,
                by: &str,
            ) -> Result<(i64, bool)> {
                // The no-op update makes RETURNING name the waiting request when there is one;
                // its older `requested_at` tells it from the row this statement inserted.
                let now = Utc::now();
                let (id, inserted): (i64, bool) = sqlx::query_as(
                    "INSERT INTO run_requests (instance, kind, op, \"trigger\", requested_at, requested_by) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instance, kind, op) \
                     DO UPDATE SET requested_at = run_requests.requested_at \
                     RETURNING id, requested_at = $5",
                )
                .bind(instance)
                .bind(kind)
                .bind(op)
                .bind(trigger)
                .bind(now)
                .bind(by)
                .fetch_one(&self.pool)
                .await?;
                Ok((id, inserted))
            }

            async fn handed_over(
                &self,
                instance: &str,
                ids: &[i64],
            ) -> Result<(Vec<i64>, Vec<RunRow>)> {
                let mut waiting = Vec::new();
                let mut runs = Vec::new();
                for id in ids {
                    let row: Option<(i64,)> =
                        sqlx::query_as("SELECT id FROM run_requests WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                    waiting.extend(row.map(|r| r.0));
                    let answers: Vec<RunRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM sync_runs WHERE instance = $1 AND request_id = $2 ORDER BY id"
                    ))
                    .bind(instance)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                    runs.extend(answers);
                }
                Ok((waiting, runs))
            }

            async fn withdraw_requests(&self, ids: &[i64]) -> Result<u64> {
                let mut n = 0;
                for id in ids {
                    n += sqlx::query("DELETE FROM run_requests WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                Ok(n)
            }

            async fn waiting_requests(
                &self,
                instances: Option<&[String]>,
            ) -> Result<Vec<RunRequestRow>> {
                let Some(instances) = instances else {
                    return Ok(sqlx::query_as(
                        "SELECT id, instance, kind, op, \"trigger\" FROM run_requests ORDER BY id",
                    )
                    .fetch_all(&self.pool)
                    .await?);
                };
                let mut rows: Vec<RunRequestRow> = Vec::new();
                for instance in instances {
                    let more: Vec<RunRequestRow> = sqlx::query_as(
                        "SELECT id, instance, kind, op, \"trigger\" FROM run_requests \
                         WHERE instance = $1 ORDER BY id",
                    )
                    .bind(instance)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.extend(more);
                }
                rows.sort_by_key(|r| r.id);
                Ok(rows)
            }

            async fn take_request(&self, id: i64) -> Result<()> {
                sqlx::query("DELETE FROM run_requests WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn webhook_queue_depth(&self, instance: &str) -> Result<i64> {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM webhook_events WHERE instance = $1")
                        .bind(instance)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(n)
            }

            async fn extension_attributes(
                &self,
                instance: &str,
                kind: Kind,
            ) -> Result<Vec<(i64, String, Option<String>)>> {
                Ok(sqlx::query_as(
                    "SELECT jamf_id, name, value FROM extension_attributes \
                     WHERE instance = $1 AND device_type = $2 ORDER BY jamf_id, definition_id",
                )
                .bind(instance)
                .bind(kind.device_type())
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

impl SqliteStore {
    const CONCURRENT_WRITES: usize = 1;
    const DIALECT: views::Dialect = views::Dialect::Sqlite;
    const SIZE_SQL: &'static str =
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";
}

impl PgStore {
    const DIALECT: views::Dialect = views::Dialect::Postgres;
    const CONCURRENT_WRITES: usize = 2;
    const SIZE_SQL: &'static str = "SELECT pg_database_size(current_database())::bigint";
}

store_impl!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::migrate!("./migrations/sqlite"),
    "raw"
);
store_impl!(
    PgStore,
    sqlx::Postgres,
    sqlx::migrate!("./migrations/postgres"),
    "raw::text"
);
