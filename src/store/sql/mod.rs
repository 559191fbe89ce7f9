//! The SQL both backends run, written once: [`SqlStore`] is generic over a [`Backend`]
//! (SQLite or PostgreSQL), and the SQL is grouped by what it keeps: runs and cursors
//! ([`runs`]), the write path ([`write`]), stored devices ([`devices`]), child tables and
//! extension attributes ([`children`]), group memberships ([`groups`]), the webhook queue
//! ([`queue`]), run requests ([`requests`]), first fills' deferred indexes ([`fill`]) and
//! upkeep ([`admin`]).
//!
//! Invariants:
//! - a statement's text is the same on both backends unless [`Backend`] says otherwise: the
//!   dialect differences are all in that trait (how an id list is matched, how a write
//!   transaction begins, the bulk inserts, the size query, how `raw` reads back as text);
//! - every write of an instance's rows runs in a transaction from [`Backend::begin_write`],
//!   which on a coordinated PostgreSQL store first proves this process holds the instance.
//!
//! The generic code names the column types it binds and reads in one where-clause, repeated on
//! each concern's `impl` block (Rust does not carry a trait's where-clauses to its users); the
//! two backends satisfy it, and [`super::Db`] calls the concrete stores.

pub(super) mod admin;
pub(super) mod children;
pub(super) mod devices;
pub(super) mod fill;
pub(super) mod groups;
pub(super) mod queue;
pub(super) mod requests;
pub(super) mod runs;
pub(super) mod upsert;
pub(super) mod write;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use sqlx::{Database, QueryBuilder};

use super::lease::Fence;
use super::views::Dialect;
use super::Result;
use crate::domain::children::{ChildTable, Val};
use crate::domain::{EaValue, Kind, Record};

/// Rows per multi-row statement: 20 parameters a row stays well under SQLite's 32,766 limit.
pub(super) const CHUNK: usize = 500;

/// Child rows per insert statement: 256 × (2 + up to 10 columns) stays well under SQLite's
/// 32,766 parameters.
pub(super) const CHILD_ROWS_PER_STATEMENT: usize = 256;

/// A backend's write transaction.
pub(super) type Tx<DB> = sqlx::Transaction<'static, DB>;

/// A column type the generic SQL binds and reads back.
pub trait Col<DB: Database>:
    for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send + Sync
{
}

impl<DB: Database, T> Col<DB> for T where
    T: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send + Sync
{
}

/// How many rows a statement changed, whatever the backend.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}

/// The devices an upsert wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub ids: HashSet<i64>,
    /// Those that were stored before (inserted ones have no attributes to remove).
    pub existed: HashSet<i64>,
}

/// What differs between SQLite and PostgreSQL; everything else is [`SqlStore`]'s shared SQL.
pub trait Backend:
    Database<
        Arguments: sqlx::IntoArguments<Self>,
        Connection: sqlx::migrate::Migrate,
        QueryResult: RowsAffected,
    > + sqlx::database::HasStatementCache
    + Sized
{
    /// How many device writes of one run may be in flight at once (`Store::concurrent_writes`).
    const CONCURRENT_WRITES: usize;
    /// The view dialect of [`super::views`].
    const DIALECT: Dialect;
    /// The database's size in bytes, one row and column.
    const SIZE_SQL: &'static str;
    /// `raw` as text in a select list (PostgreSQL stores `jsonb`).
    const RAW_TEXT: &'static str;
    /// A table's (`$1`) explicit indexes, as `(name, definition)`: not a key's own.
    const INDEXES_SQL: &'static str;
    /// Starts a transaction that changes the schema (no instance's rows).
    const BEGIN_SCHEMA: &'static str;
    /// Keeps two processes' index changes apart until the transaction ends ("" = the
    /// transaction itself does).
    const SCHEMA_LOCK: &'static str;

    /// This backend's embedded migrations.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Appends the tail of an id-list statement, after the column name.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]);

    /// A write transaction for `instance`.
    fn begin_write(
        store: &SqlStore<Self>,
        instance: &str,
    ) -> impl Future<Output = Result<Tx<Self>>> + Send;

    /// A transaction that appends to an instance's webhook queue, keeping two appends apart.
    fn begin_queue(
        store: &SqlStore<Self>,
        instance: &str,
    ) -> impl Future<Output = Result<Tx<Self>>> + Send;

    /// A write transaction on a group membership table that keeps its other writers out
    /// until it commits.
    fn begin_memberships(
        store: &SqlStore<Self>,
        table: &str,
        instance: &str,
    ) -> impl Future<Output = Result<Tx<Self>>> + Send;

    /// Refuses to purge an instance another live process holds.
    fn refuse_if_held(tx: &mut Tx<Self>, instance: &str)
        -> impl Future<Output = Result<()>> + Send;

    /// Upserts the changed records of a chunk with the newer-wins guard; the ids written.
    fn upsert_changed<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        changed: &[&R],
        overwrite: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Written>> + Send;

    /// Inserts rows of a child table.
    fn insert_child_rows(
        tx: &mut Tx<Self>,
        instance: &str,
        table: &ChildTable,
        rows: &[(i64, &Vec<Val>)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the extension attributes of the devices written.
    fn replace_attributes<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        written: &[&R],
        existed: &[i64],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// `(jamf_id, attribute)` of every extension attribute of these records, in record order: the
/// rows both backends' `replace_attributes` insert.
pub(super) fn attribute_rows<'a, R: Record>(records: &[&'a R]) -> Vec<(i64, &'a EaValue)> {
    records
        .iter()
        .flat_map(|r| {
            r.extension_attributes()
                .iter()
                .map(move |e| (r.jamf_id(), e))
        })
        .collect()
}

/// Appends ` IN (…)` / ` = ANY(…)` for `ids` after a column name.
pub(super) fn push_ids<DB: Backend>(q: &mut QueryBuilder<DB>, ids: &[i64]) {
    DB::push_ids(q, ids)
}

/// The store of one backend.
#[derive(Debug)]
pub struct SqlStore<DB: Backend> {
    pub(super) pool: sqlx::Pool<DB>,
    /// Set when several processes may share the database ([`super::lease`]); PostgreSQL only.
    pub(super) fence: Arc<OnceLock<Arc<Fence>>>,
}

// By hand: derived, it would ask `DB: Clone` of the backend's marker type.
impl<DB: Backend> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            fence: self.fence.clone(),
        }
    }
}

impl<DB: Backend> SqlStore<DB> {
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    pub fn concurrent_writes(&self) -> usize {
        DB::CONCURRENT_WRITES
    }
}

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
    /// Runs `head … IN (ids)` once per chunk of `ids` inside `tx`; returns the rows
    /// affected. `head` writes the statement up to the column the ids are matched on.
    pub(super) async fn execute_in_chunks(
        tx: &mut sqlx::Transaction<'_, DB>,
        ids: &[i64],
        head: impl Fn(&mut QueryBuilder<DB>),
    ) -> Result<u64> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut q: QueryBuilder<DB> = QueryBuilder::new("");
            head(&mut q);
            push_ids(&mut q, chunk);
            n += q.build().execute(&mut **tx).await?.rows_affected();
        }
        Ok(n)
    }

    /// Forgets these devices' hash of one child table (`table`), or of all of them:
    /// their rows changed from another side (a group's member list), so the device's
    /// next record rewrites its own rows; or the devices are purged.
    pub(super) async fn forget_child_hashes(
        tx: &mut sqlx::Transaction<'_, DB>,
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
    pub(super) async fn clear_failures(
        tx: &mut sqlx::Transaction<'_, DB>,
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
    pub(super) async fn chunked_in_own_tx(
        &self,
        instance: &str,
        ids: &[i64],
        head: impl Fn(&mut QueryBuilder<DB>),
    ) -> Result<u64> {
        let mut tx = DB::begin_write(self, instance).await?;
        let n = Self::execute_in_chunks(&mut tx, ids, head).await?;
        tx.commit().await?;
        Ok(n)
    }
}
