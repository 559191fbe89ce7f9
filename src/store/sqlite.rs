//! SQLite, the zero-setup default: one file, one writer at a time (a write transaction takes
//! the lock when it begins), in-process, so multi-row `VALUES` cost nothing to send.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

use super::sql::upsert::{insert_columns, upsert_tail};
use super::sql::{
    attribute_rows, push_ids, Backend, SqlStore, Tx, Written, CHILD_ROWS_PER_STATEMENT, CHUNK,
};
use super::views::Dialect;
use super::Result;
use crate::domain::children::{ChildTable, Val};
use crate::domain::{Cell, Record};

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
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
        Ok(Self {
            pool,
            fence: Arc::new(OnceLock::new()),
        })
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

impl Backend for Sqlite {
    const CONCURRENT_WRITES: usize = 1;
    const DIALECT: Dialect = Dialect::Sqlite;
    const SIZE_SQL: &'static str =
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";
    const RAW_TEXT: &'static str = "raw";
    const INDEXES_SQL: &'static str = "SELECT name, sql FROM sqlite_master \
         WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name";
    const BEGIN_SCHEMA: &'static str = "BEGIN IMMEDIATE";
    const SCHEMA_LOCK: &'static str = "";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
        &MIGRATOR
    }

    /// ` IN ($1, $2, …)`: SQLite has no array parameters.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]) {
        q.push(" IN (");
        let mut sep = q.separated(", ");
        for id in ids {
            sep.push_bind(*id);
        }
        q.push(")");
    }

    /// A write transaction that holds SQLite's write lock from the start: a deferred one that
    /// read first could not upgrade once another writer committed (`SQLITE_BUSY_SNAPSHOT`).
    async fn begin_write(store: &SqlStore<Self>, _instance: &str) -> Result<Tx<Self>> {
        Ok(store.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A transaction that appends to an instance's webhook queue: SQLite's one writer already
    /// keeps two appends apart.
    async fn begin_queue(store: &SqlStore<Self>, _instance: &str) -> Result<Tx<Self>> {
        Ok(store.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Purge may go on: on SQLite the writer lock the command holds already keeps every other
    /// process out.
    async fn refuse_if_held(_tx: &mut Tx<Self>, _instance: &str) -> Result<()> {
        Ok(())
    }

    /// A write transaction on a group membership table: SQLite's one writer already keeps a
    /// device write and a group write apart.
    async fn begin_memberships(
        store: &SqlStore<Self>,
        _table: &str,
        instance: &str,
    ) -> Result<Tx<Self>> {
        Self::begin_write(store, instance).await
    }

    /// One multi-row upsert with the guard; returns the ids written. When fewer rows were
    /// affected than sent, the stored hashes tell which were written.
    async fn upsert_changed<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        changed: &[&R],
        overwrite: bool,
        now: DateTime<Utc>,
    ) -> Result<Written> {
        let table = R::KIND.as_str();
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} (instance, jamf_id, {}) ",
            insert_columns::<R>()
        ));
        q.push_values(changed.iter(), |mut b, r| {
            b.push_bind(instance.to_string()).push_bind(r.jamf_id());
            for cell in r.all_cells() {
                match cell {
                    Cell::Text(v) => b.push_bind(v.map(str::to_string)),
                    Cell::Bool(v) => b.push_bind(v),
                    Cell::Time(v) => b.push_bind(v),
                };
            }
            b.push_bind(r.raw().to_string())
                .push_bind(r.raw_hash())
                .push_bind(r.fetched_at())
                .push_bind(now)
                .push_bind(now)
                .push_bind(now)
                .push("NULL");
        });
        q.push(upsert_tail::<R>(overwrite));
        let affected = q.build().execute(&mut **tx).await?.rows_affected();
        let mut written: HashSet<i64> = changed.iter().map(|r| r.jamf_id()).collect();
        if affected < changed.len() as u64 {
            // The guard kept some stored copies (rare): the rows written now hold this page's
            // hashes, the others a newer copy's.
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "SELECT jamf_id, raw_hash FROM {table} WHERE instance = "
            ));
            q.push_bind(instance.to_string()).push(" AND jamf_id");
            push_ids(&mut q, &written.iter().copied().collect::<Vec<_>>());
            let now_stored: HashMap<i64, i64> = q
                .build_query_as::<(i64, i64)>()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
            written.retain(|id| {
                changed
                    .iter()
                    .any(|r| r.jamf_id() == *id && now_stored.get(id) == Some(&r.raw_hash()))
            });
        }
        // Deleting the attributes of a device that had none costs SQLite nothing.
        Ok(Written {
            existed: written.clone(),
            ids: written,
        })
    }

    /// Inserts child rows: full chunks of a fixed size share one statement, prepared once;
    /// the last, shorter one is not kept prepared (a cache of statements of every size, each
    /// of hundreds of rows, held megabytes and grew with the fleet).
    async fn insert_child_rows(
        tx: &mut Tx<Self>,
        instance: &str,
        table: &ChildTable,
        rows: &[(i64, &Vec<Val>)],
    ) -> Result<()> {
        let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        for part in rows.chunks(CHILD_ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} (instance, jamf_id, {}) ",
                table.name,
                names.join(", ")
            ));
            q.push_values(part.iter(), |mut b, (id, row)| {
                b.push_bind(instance.to_string()).push_bind(*id);
                for i in 0..table.columns.len() {
                    match row.get(i) {
                        Some(Val::Text(v)) => b.push_bind(v.clone()),
                        Some(Val::Bool(v)) => b.push_bind(*v),
                        Some(Val::Int(v)) => b.push_bind(*v),
                        Some(Val::Time(v)) => b.push_bind(*v),
                        None => b.push_bind(None::<String>),
                    };
                }
            });
            q.build()
                .persistent(part.len() == CHILD_ROWS_PER_STATEMENT)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Replaces the extension attributes of the devices written.
    async fn replace_attributes<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        written: &[&R],
        existed: &[i64],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let device_type = R::KIND.device_type();
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("DELETE FROM extension_attributes WHERE device_type = ");
        q.push_bind(device_type).push(" AND instance = ");
        q.push_bind(instance.to_string()).push(" AND jamf_id");
        push_ids(&mut q, existed);
        q.build().execute(&mut **tx).await?;

        let eas = attribute_rows(written);
        for ea_chunk in eas.chunks(CHUNK * 2) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO extension_attributes (instance, device_type, jamf_id, \
                 definition_id, name, value, data_type, updated_at) ",
            );
            q.push_values(ea_chunk.iter(), |mut b, (id, e)| {
                b.push_bind(instance.to_string())
                    .push_bind(device_type)
                    .push_bind(*id)
                    .push_bind(e.definition_id.clone())
                    .push_bind(e.name.clone())
                    .push_bind(e.value.clone())
                    .push_bind(e.data_type.clone())
                    .push_bind(now);
            });
            // The same definition twice for one device must not abort the page.
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}
