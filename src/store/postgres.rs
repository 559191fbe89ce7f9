//! PostgreSQL, for shared and larger deployments: several processes may share the database
//! (writes fenced by the instance's lease, [`super::lease`]), and rows travel as one array per
//! column (`UNNEST`, `= ANY($n)`), so each statement's text is fixed and prepared once per
//! connection; `RETURNING` names the rows written without a second read. Child rows, a
//! million on a first fill, take the bulk path: `COPY` into a transaction's staging table.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Postgres, QueryBuilder};

use super::lease::Fence;
use super::sql::upsert::{insert_columns, upsert_tail};
use super::sql::{attribute_rows, Backend, SqlStore, Tx, Written};
use super::views::Dialect;
use super::Result;
use crate::domain::children::{ChildTable, Val, ValType};
use crate::domain::{Cell, Record};

/// The PostgreSQL store.
pub type PgStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
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

    /// Fences every write from now on; `false` if already fenced.
    pub fn coordinate(&self, fence: Arc<Fence>) -> bool {
        self.fence.set(fence).is_ok()
    }

    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.get()
    }
}

impl Backend for Postgres {
    const CONCURRENT_WRITES: usize = 2;
    const DIALECT: Dialect = Dialect::Postgres;
    const SIZE_SQL: &'static str = "SELECT pg_database_size(current_database())::bigint";
    const RAW_TEXT: &'static str = "raw::text";
    const INDEXES_SQL: &'static str =
        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         WHERE t.relname = $1 AND t.relnamespace = current_schema()::regnamespace \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) \
         ORDER BY 1";
    const BEGIN_SCHEMA: &'static str = "BEGIN";
    const SCHEMA_LOCK: &'static str =
        "SELECT pg_advisory_xact_lock(hashtextextended('jamf-sync deferred indexes', 0))";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
        &MIGRATOR
    }

    /// ` = ANY($1)` with one array: the statement text is the same whatever the count, so it
    /// is prepared once, and PostgreSQL's generic plan for a long `IN` list (a sequential scan
    /// testing each row against every parameter) never happens.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]) {
        q.push(" = ANY(").push_bind(ids.to_vec()).push(")");
    }

    /// A write transaction for `instance`; when coordinated, it first proves this process
    /// holds the instance ([`Fence::check`]).
    async fn begin_write(store: &SqlStore<Self>, instance: &str) -> Result<Tx<Self>> {
        let mut tx = store.pool.begin().await?;
        if let Some(fence) = store.fence.get() {
            fence.check(&mut tx, instance).await?;
        }
        Ok(tx)
    }

    /// A transaction that appends to an instance's webhook queue, holding the instance's queue
    /// lock (a transaction-scoped advisory lock): under READ COMMITTED two receivers would
    /// otherwise both count the queue one short of full and both append.
    async fn begin_queue(store: &SqlStore<Self>, instance: &str) -> Result<Tx<Self>> {
        let mut tx = store.pool.begin().await?;
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
    async fn refuse_if_held(tx: &mut Tx<Self>, instance: &str) -> Result<()> {
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
        store: &SqlStore<Self>,
        table: &str,
        instance: &str,
    ) -> Result<Tx<Self>> {
        let mut tx = Self::begin_write(store, instance).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    /// Child rows through PostgreSQL's bulk path: `COPY … FROM STDIN` (text format) into a
    /// temporary staging table, then one set-based `INSERT … SELECT` into the table. The
    /// staging table lives only inside this transaction (`ON COMMIT DROP`, so PgBouncer in
    /// transaction mode can hand the next transaction any server connection) and is dropped
    /// here already, so the next call of the transaction starts from a new one. `instance`
    /// travels once, as a parameter, not on every row.
    async fn insert_child_rows(
        tx: &mut Tx<Self>,
        instance: &str,
        table: &ChildTable,
        rows: &[(i64, &Vec<Val>)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let names = names.join(", ");
        let stage = format!("stage_{}", table.name);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS \
             SELECT jamf_id, {names} FROM {} WITH NO DATA",
            table.name
        )))
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        let mut copy = tx
            .copy_in_raw(&format!("COPY {stage} (jamf_id, {names}) FROM STDIN"))
            .await?;
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_SEND_BYTES + 4096);
        for (id, row) in rows {
            copy_row(&mut buf, *id, table, row);
            if buf.len() >= COPY_SEND_BYTES {
                if let Err(e) = copy.send(buf.as_slice()).await {
                    let _ = copy.abort("jamf-sync: sending child rows failed").await;
                    return Err(e.into());
                }
                buf.clear();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = copy.send(buf.as_slice()).await {
                let _ = copy.abort("jamf-sync: sending child rows failed").await;
                return Err(e.into());
            }
        }
        copy.finish().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (instance, jamf_id, {names}) SELECT $1, jamf_id, {names} FROM {stage}",
            table.name
        )))
        .bind(instance)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {stage}")))
            .persistent(false)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// One `INSERT … SELECT FROM UNNEST(…)` with the guard, one array per column: the
    /// statement's text depends only on the record type, so PostgreSQL parses and plans it
    /// once per connection whatever the chunk's size. `RETURNING` names the rows written (a row
    /// the guard keeps is not returned) and which of them are new: an update never sets
    /// `first_seen_at`, so only a row inserted by this statement carries this write's `now`.
    async fn upsert_changed<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        changed: &[&R],
        overwrite: bool,
        now: DateTime<Utc>,
    ) -> Result<Written> {
        let Some(first) = changed.first() else {
            return Ok(Written::default());
        };
        let mut columns: Vec<Column<'_>> = first
            .all_cells()
            .iter()
            .map(|c| Column::for_cell(c, changed.len()))
            .collect();
        for r in changed {
            for (column, cell) in columns.iter_mut().zip(r.all_cells()) {
                column.push(cell);
            }
        }
        // $1 instance, $2 now, $3 ids, then one per projected column, raw, hash, fetched_at.
        let n = columns.len();
        let mut arrays = vec!["$3::bigint[]".to_string()];
        arrays.extend(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", i + 4, c.sql_type())),
        );
        arrays.push(format!("${}::text[]", n + 4));
        arrays.push(format!("${}::bigint[]", n + 5));
        arrays.push(format!("${}::timestamptz[]", n + 6));
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} (instance, jamf_id, {cols}) \
             SELECT $1, u.jamf_id, {cells}, u.raw::jsonb, u.raw_hash, u.fetched_at, $2, $2, $2, NULL \
             FROM UNNEST({arrays}) AS u(jamf_id, {names}, raw, raw_hash, fetched_at){tail} \
             RETURNING jamf_id, first_seen_at = $2",
            table = R::KIND.as_str(),
            cols = insert_columns::<R>(),
            cells = names.iter().map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", "),
            arrays = arrays.join(", "),
            names = names.join(", "),
            tail = upsert_tail::<R>(overwrite),
        );
        let mut q = sqlx::query_as::<_, (i64, bool)>(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .bind(now)
            .bind(changed.iter().map(|r| r.jamf_id()).collect::<Vec<i64>>());
        for column in columns {
            q = match column {
                Column::Text(v) => q.bind(v),
                Column::Bool(v) => q.bind(v),
                Column::Time(v) => q.bind(v),
            };
        }
        let rows = q
            .bind(changed.iter().map(|r| r.raw()).collect::<Vec<&str>>())
            .bind(changed.iter().map(|r| r.raw_hash()).collect::<Vec<i64>>())
            .bind(changed.iter().map(|r| r.fetched_at()).collect::<Vec<_>>())
            .fetch_all(&mut **tx)
            .await?;
        Ok(Written {
            existed: rows.iter().filter(|r| !r.1).map(|r| r.0).collect(),
            ids: rows.into_iter().map(|r| r.0).collect(),
        })
    }

    /// Replaces the extension attributes of the devices written: one `DELETE … = ANY` for the
    /// devices that were stored before, one `INSERT … UNNEST`.
    async fn replace_attributes<R: Record>(
        tx: &mut Tx<Self>,
        instance: &str,
        written: &[&R],
        existed: &[i64],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let device_type = R::KIND.device_type();
        if !existed.is_empty() {
            sqlx::query(
                "DELETE FROM extension_attributes WHERE device_type = $1 AND instance = $2 \
                 AND jamf_id = ANY($3)",
            )
            .bind(device_type)
            .bind(instance)
            .bind(existed)
            .execute(&mut **tx)
            .await?;
        }
        let eas = attribute_rows(written);
        if eas.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO extension_attributes (instance, device_type, jamf_id, definition_id, \
             name, value, data_type, updated_at) SELECT $1, $2, u.*, $3 FROM \
             UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[]) AS u \
             ON CONFLICT DO NOTHING",
        )
        .bind(instance)
        .bind(device_type)
        .bind(now)
        .bind(eas.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(
            eas.iter()
                .map(|(_, e)| e.definition_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(eas.iter().map(|(_, e)| e.name.as_str()).collect::<Vec<_>>())
        .bind(
            eas.iter()
                .map(|(_, e)| e.value.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            eas.iter()
                .map(|(_, e)| e.data_type.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// How much `COPY` data is gathered before it is sent: large enough that the rows travel
/// in few messages, small enough that a big write's rows never sit in memory twice over.
const COPY_SEND_BYTES: usize = 1 << 20;

/// One child row as a line of `COPY`'s text format: tab-separated, `\N` for NULL. A value of
/// the wrong type for its column is NULL, as a bound parameter's would be.
fn copy_row(buf: &mut Vec<u8>, id: i64, table: &ChildTable, row: &[Val]) {
    use std::io::Write as _;
    let _ = write!(buf, "{id}");
    for (i, (_, ty)) in table.columns.iter().enumerate() {
        buf.push(b'\t');
        match (ty, row.get(i)) {
            (ValType::Text, Some(Val::Text(Some(v)))) => copy_text(buf, v),
            (ValType::Bool, Some(Val::Bool(Some(v)))) => buf.push(if *v { b't' } else { b'f' }),
            (ValType::Int, Some(Val::Int(Some(v)))) => {
                let _ = write!(buf, "{v}");
            }
            (ValType::Time, Some(Val::Time(Some(v)))) => {
                let _ = write!(
                    buf,
                    "{}",
                    v.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                );
            }
            _ => buf.extend_from_slice(b"\\N"),
        }
    }
    buf.push(b'\n');
}

/// Text escaped for `COPY`'s text format. Byte by byte is safe: no byte of a multi-byte UTF-8
/// character is ASCII. NUL, which PostgreSQL's `text` refuses, becomes U+FFFD as everywhere.
fn copy_text(buf: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0 => buf.extend_from_slice("\u{fffd}".as_bytes()),
            _ => buf.push(b),
        }
    }
}

/// One projected column as a PostgreSQL array parameter.
enum Column<'a> {
    Text(Vec<Option<&'a str>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl<'a> Column<'a> {
    fn for_cell(cell: &Cell<'_>, len: usize) -> Self {
        match cell {
            Cell::Text(_) => Column::Text(Vec::with_capacity(len)),
            Cell::Bool(_) => Column::Bool(Vec::with_capacity(len)),
            Cell::Time(_) => Column::Time(Vec::with_capacity(len)),
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Column::Text(_) => "text[]",
            Column::Bool(_) => "bool[]",
            Column::Time(_) => "timestamptz[]",
        }
    }

    /// Appends a record's cell; a cell of another type than the column's is a programming
    /// error in a `Record` impl, and is stored as NULL rather than misaligning the rows.
    fn push(&mut self, cell: Cell<'a>) {
        match (self, cell) {
            (Column::Text(v), Cell::Text(c)) => v.push(c),
            (Column::Bool(v), Cell::Bool(c)) => v.push(c),
            (Column::Time(v), Cell::Time(c)) => v.push(c),
            (Column::Text(v), _) => v.push(None),
            (Column::Bool(v), _) => v.push(None),
            (Column::Time(v), _) => v.push(None),
        }
    }
}
