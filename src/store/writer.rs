//! The one write path for devices, both backends (`writer_impl!`): any [`DeviceRecord`] is
//! written through its column projection, with the newer-wins guard in the upsert's SQL.
//!
//! Per chunk of a page: read the stored hashes → records identical to their stored copy only
//! move `synced_at` → the others are upserted with `ON CONFLICT … DO UPDATE … WHERE <guard>`,
//! so a row the guard keeps is not rewritten → extension attributes are replaced for exactly
//! the rows written; with history on, the stored copies of the changed devices are read first
//! and their changed fields appended to `inventory_changes` (`store::history`). Devices that failed (recorded in `sync_failures`) and the ones written
//! (their rows there removed) go in the same transaction. All of it, and the run's progress,
//! in one transaction; on SQLite it begins `IMMEDIATE`, so a writer running beside another (a
//! webhook refresh beside a sync) waits for the lock instead of failing to upgrade a read
//! snapshot.
//!
//! The backends differ in how rows travel. SQLite is in-process: multi-row `VALUES` cost
//! nothing to send. PostgreSQL is a round trip away and parses what it gets: one array per
//! column (`UNNEST`) and `= ANY($n)` keep each statement's text fixed, so it is prepared once
//! per connection, and `RETURNING` names the rows written without a second read.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::backends::{PgStore, SqliteStore};
use super::Result;
use crate::domain::children::{ChildTable, Val, ValType};
use crate::domain::{Cell, DeviceInfo, DeviceRecord, EaValue};

/// Rows per multi-row statement: 20 parameters a row stays well under SQLite's 32,766 limit.
pub(super) const CHUNK: usize = 500;

/// Child rows per insert statement: 256 × (2 + up to 10 columns) stays well under SQLite's
/// 32,766 parameters.
pub(super) const CHILD_ROWS_PER_STATEMENT: usize = 256;

/// How a backend matches a column against a list of ids.
pub(super) trait IdList: sqlx::Database {
    /// Appends the tail of an id-list statement, after the column name.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]);
}

impl IdList for Sqlite {
    /// ` IN ($1, $2, …)`: SQLite has no array parameters.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]) {
        q.push(" IN (");
        let mut sep = q.separated(", ");
        for id in ids {
            sep.push_bind(*id);
        }
        q.push(")");
    }
}

impl IdList for Postgres {
    /// ` = ANY($1)` with one array: the statement text is the same whatever the count, so it
    /// is prepared once, and PostgreSQL's generic plan for a long `IN` list (a sequential scan
    /// testing each row against every parameter) never happens.
    fn push_ids(q: &mut QueryBuilder<Self>, ids: &[i64]) {
        q.push(" = ANY(").push_bind(ids.to_vec()).push(")");
    }
}

pub(super) fn push_ids<DB: IdList>(q: &mut QueryBuilder<DB>, ids: &[i64]) {
    DB::push_ids(q, ids)
}

/// Every projected column of a record type, in the order of [`DeviceRecord::all_cells`].
pub(super) fn projected<R: DeviceRecord>() -> impl Iterator<Item = &'static str> {
    DeviceInfo::COLUMNS.iter().chain(R::COLUMNS).copied()
}

/// The upsert's column list after `instance, jamf_id`.
pub(super) fn insert_columns<R: DeviceRecord>() -> String {
    let mut cols: Vec<&str> = projected::<R>().collect();
    cols.extend([
        "raw",
        "raw_hash",
        "fetched_at",
        "first_seen_at",
        "changed_at",
        "synced_at",
        "deleted_at",
    ]);
    cols.join(", ")
}

/// `ON CONFLICT … DO UPDATE SET … [WHERE guard]` for a record type.
pub(super) fn upsert_tail<R: DeviceRecord>(overwrite: bool) -> String {
    let table = R::KIND.as_str();
    let mut set: Vec<String> = projected::<R>()
        .chain(["raw", "raw_hash", "fetched_at", "changed_at", "synced_at"])
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    set.push("deleted_at = NULL".into());
    let mut sql = format!(
        " ON CONFLICT (instance, jamf_id) DO UPDATE SET {}",
        set.join(", ")
    );
    if !overwrite {
        // The SQL form of `store::newer_wins`.
        let d = R::AS_OF_COLUMN;
        sql.push_str(&format!(
            " WHERE CASE WHEN {table}.deleted_at IS NOT NULL \
             THEN ({table}.fetched_at IS NULL OR excluded.fetched_at > {table}.fetched_at) \
             ELSE (excluded.{d} > {table}.{d} \
             OR ({table}.{d} IS NULL AND excluded.{d} IS NOT NULL) \
             OR (excluded.{d} IS NOT DISTINCT FROM {table}.{d} \
             AND ({table}.fetched_at IS NULL OR excluded.fetched_at >= {table}.fetched_at))) END"
        ));
    }
    sql
}

/// The write path's body for one backend (which has `begin_write` and `write_chunk`): chunks
/// of the page, then its failures and the run's progress, all in one transaction.
macro_rules! writer_impl {
    ($store:ty) => {
        impl $store {
            /// One write: chunks of the page, then its failures and the run's progress, in
            /// one transaction. With `isolate`, each chunk is written inside a savepoint and a
            /// chunk the database refuses for its data (a record's error, `refusal::record_error`) is
            /// written again in halves down to the single record, which is then left out and
            /// recorded in `sync_failures` with the database's message.
            async fn write_devices_tx<R: DeviceRecord>(
                &self,
                w: Write<'_, R>,
                isolate: bool,
            ) -> Result<PageOutcome> {
                let Write {
                    instance,
                    records,
                    failures,
                    progress,
                    overwrite,
                    history,
                    now,
                } = w;
                let mut tx = self.begin_write(instance).await?;
                let mut outcome = PageOutcome::default();
                let run_id = progress.map(|p| p.run_id);
                let mut refused: Vec<(i64, String)> = Vec::new();
                for chunk in records.chunks(CHUNK) {
                    if !isolate {
                        let o = Self::write_chunk(&mut tx, instance, chunk, overwrite, history, run_id, now)
                            .await?;
                        outcome.add(&o);
                        continue;
                    }
                    let mut parts: Vec<&[R]> = vec![chunk];
                    while let Some(part) = parts.pop() {
                        sqlx::query("SAVEPOINT jamf_sync_part").execute(&mut *tx).await?;
                        match Self::write_chunk(&mut tx, instance, part, overwrite, history, run_id, now)
                            .await
                        {
                            Ok(o) => {
                                sqlx::query("RELEASE SAVEPOINT jamf_sync_part")
                                    .execute(&mut *tx)
                                    .await?;
                                outcome.add(&o);
                            }
                            Err(e) => {
                                let Some(message) = super::refusal::record_error(&e) else {
                                    return Err(e);
                                };
                                sqlx::query("ROLLBACK TO SAVEPOINT jamf_sync_part")
                                    .execute(&mut *tx)
                                    .await?;
                                sqlx::query("RELEASE SAVEPOINT jamf_sync_part")
                                    .execute(&mut *tx)
                                    .await?;
                                match part {
                                    [one] => {
                                        super::log_refused(R::KIND, one.jamf_id(), &message);
                                        refused.push((one.jamf_id(), message));
                                    }
                                    _ => {
                                        let (a, b) = part.split_at(part.len() / 2);
                                        // First half first: rows keep their page order.
                                        parts.push(b);
                                        parts.push(a);
                                    }
                                }
                            }
                        }
                    }
                }
                outcome.isolated = refused.len() as i64;
                let failures: Vec<(i64, String)> = failures.iter().cloned().chain(refused).collect();
                let kind = R::KIND.as_str();
                // A refused record is recorded below, not cleared: its earlier row keeps its
                // first sighting and attempts.
                let answered: Vec<i64> = records
                    .iter()
                    .map(|r| r.jamf_id())
                    .filter(|id| !failures.iter().any(|(f, _)| f == id))
                    .collect();
                Self::clear_failures(&mut tx, instance, R::KIND, &answered).await?;
                for (id, error) in &failures {
                    let error: String = super::storable_text(error).chars().take(1000).collect();
                    sqlx::query(
                        "INSERT INTO sync_failures (instance, kind, jamf_id, error, first_seen_at, \
                         last_seen_at, attempts) VALUES ($1, $2, $3, $4, $5, $5, 1) \
                         ON CONFLICT (instance, kind, jamf_id) DO UPDATE SET error = excluded.error, \
                         last_seen_at = excluded.last_seen_at, \
                         attempts = sync_failures.attempts + 1",
                    )
                    .bind(instance)
                    .bind(kind)
                    .bind(*id)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                // Pages arrive out of id order (parallel spans) and writes may commit out of
                // order (`Store::concurrent_writes`): counts are added, `last_id` keeps the
                // highest.
                if let Some(p) = progress {
                    let this = outcome.counts(p.counts);
                    sqlx::query(
                        "UPDATE sync_runs SET listed = listed + $1, fetched = fetched + $2, \
                         upserted = upserted + $3, unchanged = unchanged + $4, \
                         stale = stale + $5, failed = failed + $6, missing = missing + $7, \
                         child_rows = child_rows + $10, \
                         last_id = CASE WHEN last_id IS NULL OR $8 > last_id \
                         THEN COALESCE($8, last_id) ELSE last_id END WHERE id = $9",
                    )
                    .bind(this.listed)
                    .bind(this.fetched)
                    .bind(this.upserted)
                    .bind(this.unchanged)
                    .bind(this.stale)
                    .bind(this.failed)
                    .bind(this.missing)
                    .bind(p.last_id)
                    .bind(p.run_id)
                    .bind(this.child_rows)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }

            /// One chunk of a write: unchanged records touched, changed ones upserted with
            /// their history, child rows and extension attributes.
            async fn write_chunk<R: DeviceRecord>(
                tx: &mut Tx<Self>,
                instance: &str,
                chunk: &[R],
                overwrite: bool,
                history: &HistoryConfig,
                run_id: Option<i64>,
                now: DateTime<Utc>,
            ) -> Result<PageOutcome> {
                let mut outcome = PageOutcome::default();
                let (changed, unchanged, stored) =
                    Self::touch_unchanged(tx, instance, chunk, now).await?;
                outcome.unchanged += unchanged;
                if changed.is_empty() {
                    return Ok(outcome);
                }
                // The stored copies of the changed devices, before they are replaced.
                let before = if history.enabled && !stored.is_empty() {
                    Self::snapshots::<R>(tx, instance, changed[0], &stored).await?
                } else {
                    std::collections::HashMap::new()
                };
                let written =
                    Self::upsert_changed(tx, instance, &changed, overwrite, now).await?;
                if !before.is_empty() {
                    let columns: Vec<&str> = super::writer::projected::<R>().collect();
                    let changes: Vec<(super::history::Change, Option<DateTime<Utc>>)> = changed
                        .iter()
                        .filter(|r| written.ids.contains(&r.jamf_id()))
                        .filter_map(|r| before.get(&r.jamf_id()).map(|b| (r, b)))
                        .flat_map(|(r, b)| {
                            super::history::diff(&columns, b, *r, history)
                                .into_iter()
                                .map(|c| (c, r.as_of()))
                        })
                        .collect();
                    Self::record_changes(tx, instance, R::KIND, &changes, run_id, now)
                        .await?;
                }
                let written_records: Vec<&R> = changed
                    .iter()
                    .copied()
                    .filter(|r| written.ids.contains(&r.jamf_id()) && !r.children().is_empty())
                    .collect();
                if !written_records.is_empty() {
                    let known: std::collections::HashSet<i64> =
                        before.keys().copied().collect();
                    outcome.child_rows += Self::replace_children(
                        tx,
                        instance,
                        &written_records,
                        &known,
                        history,
                        run_id,
                        now,
                    )
                    .await?;
                }
                outcome.upserted += written.ids.len() as i64;
                outcome.stale += (changed.len() - written.ids.len()) as i64;
                if !written.ids.is_empty() {
                    let records: Vec<&R> = changed
                        .iter()
                        .copied()
                        .filter(|r| written.ids.contains(&r.jamf_id()))
                        .collect();
                    let existed: Vec<i64> = written.existed.iter().copied().collect();
                    Self::replace_attributes(tx, instance, &records, &existed, now)
                        .await?;
                }
                Ok(outcome)
            }

            /// Reads the stored hashes of `chunk`; records identical to their stored copy only
            /// move `synced_at`. Returns the others, how many were unchanged and which of the
            /// others are stored.
            async fn touch_unchanged<'r, R: DeviceRecord>(
                tx: &mut Tx<Self>,
                instance: &str,
                chunk: &'r [R],
                now: DateTime<Utc>,
            ) -> Result<(Vec<&'r R>, i64, Vec<i64>)> {
                let table = R::KIND.as_str();
                let ids: Vec<i64> = chunk.iter().map(|r| r.jamf_id()).collect();
                let mut q = QueryBuilder::new(format!(
                    "SELECT jamf_id, raw_hash, deleted_at IS NOT NULL FROM {table} WHERE instance = "
                ));
                q.push_bind(instance.to_string()).push(" AND jamf_id");
                push_ids(&mut q, &ids);
                let stored: Vec<(i64, i64, bool)> =
                    q.build_query_as().fetch_all(&mut **tx).await?;
                let (changed, unchanged) = partition_changed(chunk, &stored);
                if !unchanged.is_empty() {
                    let mut q = QueryBuilder::new(format!("UPDATE {table} SET synced_at = "));
                    q.push_bind(now).push(" WHERE instance = ").push_bind(instance.to_string());
                    q.push(" AND jamf_id");
                    push_ids(&mut q, &unchanged);
                    q.build().execute(&mut **tx).await?;
                }
                let unchanged_ids: std::collections::HashSet<i64> = unchanged.iter().copied().collect();
                let existing = stored
                    .iter()
                    .map(|s| s.0)
                    .filter(|id| !unchanged_ids.contains(id))
                    .collect();
                Ok((changed, unchanged.len() as i64, existing))
            }

            /// The stored copies of `ids` as the history compares them; `sample` tells each
            /// column's type.
            async fn snapshots<R: DeviceRecord>(
                tx: &mut Tx<Self>,
                instance: &str,
                sample: &R,
                ids: &[i64],
            ) -> Result<std::collections::HashMap<i64, super::history::Snapshot>> {
                use sqlx::Row;
                let table = R::KIND.as_str();
                let columns: Vec<&str> = super::writer::projected::<R>().collect();
                let mut q = QueryBuilder::new(format!(
                    "SELECT jamf_id, deleted_at IS NOT NULL AS gone, {} FROM {table} WHERE instance = ",
                    columns.join(", ")
                ));
                q.push_bind(instance.to_string()).push(" AND jamf_id");
                push_ids(&mut q, ids);
                let types = sample.all_cells();
                let mut out = std::collections::HashMap::new();
                for row in q.build().fetch_all(&mut **tx).await? {
                    let mut snap = super::history::Snapshot {
                        deleted: row.try_get("gone")?,
                        ..super::history::Snapshot::default()
                    };
                    for (i, cell) in types.iter().enumerate() {
                        let at = i + 2;
                        snap.cells.push(match cell {
                            crate::domain::Cell::Text(_) => row.try_get::<Option<String>, _>(at)?,
                            crate::domain::Cell::Bool(_) => crate::domain::Cell::Bool(row.try_get(at)?).history_text(),
                            crate::domain::Cell::Time(_) => crate::domain::Cell::Time(row.try_get(at)?).history_text(),
                        });
                    }
                    out.insert(row.try_get::<i64, _>("jamf_id")?, snap);
                }
                let mut q = QueryBuilder::new(
                    "SELECT jamf_id, name, value FROM extension_attributes WHERE device_type = ",
                );
                q.push_bind(R::KIND.device_type()).push(" AND instance = ");
                q.push_bind(instance.to_string()).push(" AND jamf_id");
                push_ids(&mut q, ids);
                let eas: Vec<(i64, String, Option<String>)> =
                    q.build_query_as().fetch_all(&mut **tx).await?;
                for (id, name, value) in eas {
                    if let Some(snap) = out.get_mut(&id) {
                        snap.eas.insert(name, value);
                    }
                }
                Ok(out)
            }

            /// Replaces the child rows of the written devices whose section changed (by
            /// `child_hashes`); a section a record does not carry is left alone. With history
            /// on, a table's keyed values of devices in `known` (stored before, with rows
            /// filled before) become change rows. Returns the rows written.
            #[allow(clippy::too_many_arguments)]
            async fn replace_children<R: DeviceRecord>(
                tx: &mut Tx<Self>,
                instance: &str,
                written: &[&R],
                known: &std::collections::HashSet<i64>,
                history: &HistoryConfig,
                run_id: Option<i64>,
                now: DateTime<Utc>,
            ) -> Result<i64> {
                use crate::domain::children::{ChildTable, Children, Val};
                let device_type = R::KIND.device_type();
                let mut tables: Vec<&'static ChildTable> = Vec::new();
                for r in written {
                    for c in r.children() {
                        if !tables.iter().any(|t| std::ptr::eq(*t, c.table)) {
                            tables.push(c.table);
                        }
                    }
                }
                let mut rows_written = 0i64;
                for table in tables {
                    let with: Vec<(&R, &Children)> = written
                        .iter()
                        .filter_map(|r| {
                            r.children()
                                .iter()
                                .find(|c| std::ptr::eq(c.table, table))
                                .map(|c| (*r, c))
                        })
                        .collect();
                    let ids: Vec<i64> = with.iter().map(|(r, _)| r.jamf_id()).collect();
                    let mut q = QueryBuilder::new(
                        "SELECT jamf_id, hash FROM child_hashes WHERE device_type = ",
                    );
                    q.push_bind(device_type).push(" AND child = ").push_bind(table.name);
                    q.push(" AND instance = ").push_bind(instance.to_string());
                    q.push(" AND jamf_id");
                    push_ids(&mut q, &ids);
                    let stored: std::collections::HashMap<i64, i64> = q
                        .build_query_as::<(i64, i64)>()
                        .fetch_all(&mut **tx)
                        .await?
                        .into_iter()
                        .collect();
                    let changed: Vec<(&R, &Children, i64)> = with
                        .into_iter()
                        .map(|(r, c)| (r, c, c.hash()))
                        .filter(|(r, _, h)| stored.get(&r.jamf_id()) != Some(h))
                        .collect();
                    if changed.is_empty() {
                        continue;
                    }
                    let changed_ids: Vec<i64> = changed.iter().map(|(r, _, _)| r.jamf_id()).collect();
                    if let Some(h) = table.history.filter(|_| history.enabled) {
                        // A device without a stored hash has its rows filled for the first time
                        // (new, or stored before child tables existed): nothing to compare.
                        let compared: Vec<i64> = changed_ids
                            .iter()
                            .copied()
                            .filter(|id| known.contains(id) && stored.contains_key(id))
                            .collect();
                        if !compared.is_empty() {
                            let col = |i: usize| table.columns.get(i).map_or("NULL", |c| c.0);
                            let mut q = QueryBuilder::new(format!(
                                "SELECT jamf_id, {}, {}, {} FROM {} WHERE instance = ",
                                col(h.key),
                                col(h.fallback),
                                col(h.value),
                                table.name
                            ));
                            q.push_bind(instance.to_string()).push(" AND jamf_id");
                            push_ids(&mut q, &compared);
                            let old_rows: Vec<(i64, Option<String>, Option<String>, Option<String>)> =
                                q.build_query_as().fetch_all(&mut **tx).await?;
                            let mut old: std::collections::HashMap<
                                i64,
                                std::collections::BTreeMap<String, Option<String>>,
                            > = std::collections::HashMap::new();
                            for (id, key, fallback, value) in old_rows {
                                if let Some(key) = crate::domain::children::history_key(key, fallback) {
                                    old.entry(id).or_default().insert(key, value);
                                }
                            }
                            let changes: Vec<_> = changed
                                .iter()
                                .filter(|(r, _, _)| compared.contains(&r.jamf_id()))
                                .flat_map(|(r, c, _)| {
                                    let before = old.remove(&r.jamf_id()).unwrap_or_default();
                                    super::history::diff_keyed(
                                        r.jamf_id(),
                                        h.prefix,
                                        &before,
                                        &c.history_values(),
                                        history,
                                    )
                                    .into_iter()
                                    .map(|change| (change, r.as_of()))
                                    .collect::<Vec<_>>()
                                })
                                .collect();
                            Self::record_changes(tx, instance, R::KIND, &changes, run_id, now)
                                .await?;
                        }
                    }
                    let mut q =
                        QueryBuilder::new(format!("DELETE FROM {} WHERE instance = ", table.name));
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                    push_ids(&mut q, &changed_ids);
                    q.build().execute(&mut **tx).await?;
                    let rows: Vec<(i64, &Vec<Val>)> = changed
                        .iter()
                        .flat_map(|(r, c, _)| c.rows.iter().map(move |row| (r.jamf_id(), row)))
                        .collect();
                    Self::insert_child_rows(tx, instance, table, &rows).await?;
                    rows_written += rows.len() as i64;
                    for part in changed.chunks(CHUNK) {
                        let mut q = QueryBuilder::new(
                            "INSERT INTO child_hashes (instance, device_type, jamf_id, child, hash) ",
                        );
                        q.push_values(part.iter(), |mut b, (r, _, hash)| {
                            b.push_bind(instance.to_string())
                                .push_bind(device_type)
                                .push_bind(r.jamf_id())
                                .push_bind(table.name)
                                .push_bind(*hash);
                        });
                        q.push(
                            " ON CONFLICT (instance, device_type, child, jamf_id) \
                             DO UPDATE SET hash = excluded.hash",
                        );
                        q.build().persistent(false).execute(&mut **tx).await?;
                    }
                }
                Ok(rows_written)
            }

            /// Appends change rows (each with its record's report date) to the history.
            async fn record_changes(
                tx: &mut Tx<Self>,
                instance: &str,
                kind: Kind,
                changes: &[(super::history::Change, Option<DateTime<Utc>>)],
                run_id: Option<i64>,
                now: DateTime<Utc>,
            ) -> Result<()> {
                for part in changes.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO inventory_changes (instance, device_type, jamf_id, \
                         changed_at, recorded_at, field, old_value, new_value, run_id) ",
                    );
                    q.push_values(part.iter(), |mut b, (c, changed_at)| {
                        b.push_bind(instance.to_string())
                            .push_bind(kind.device_type())
                            .push_bind(c.jamf_id)
                            .push_bind(*changed_at)
                            .push_bind(now)
                            .push_bind(c.field.clone())
                            .push_bind(c.old.clone())
                            .push_bind(c.new.clone())
                            .push_bind(run_id);
                    });
                    q.build().persistent(false).execute(&mut **tx).await?;
                }
                Ok(())
            }
        }
    };
}
pub(super) use writer_impl;

/// The devices an upsert wrote.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub ids: HashSet<i64>,
    /// Those that were stored before (inserted ones have no attributes to remove).
    pub existed: HashSet<i64>,
}

/// A backend's write transaction.
pub(super) type Tx<S> = sqlx::Transaction<'static, <S as Backend>::Db>;

/// Names a store's database type, for [`Tx`].
pub(super) trait Backend {
    type Db: sqlx::Database;
}

impl Backend for SqliteStore {
    type Db = Sqlite;
}

impl Backend for PgStore {
    type Db = Postgres;
}

impl SqliteStore {
    /// One multi-row upsert with the guard; returns the ids written. When fewer rows were
    /// affected than sent, the stored hashes tell which were written.
    pub(super) async fn upsert_changed<R: DeviceRecord>(
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
    pub(super) async fn insert_child_rows(
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
    pub(super) async fn replace_attributes<R: DeviceRecord>(
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

        let eas: Vec<(i64, &EaValue)> = written
            .iter()
            .flat_map(|r| {
                r.extension_attributes()
                    .iter()
                    .map(move |e| (r.jamf_id(), e))
            })
            .collect();
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

/// Column `i` of child rows as one array; a value of another type than the column's (a
/// programming error in a table's definition) is NULL rather than misaligning the rows.
fn column<T>(
    rows: &[(i64, &Vec<Val>)],
    i: usize,
    pick: impl Fn(&Val) -> Option<Option<T>>,
) -> Vec<Option<T>> {
    rows.iter()
        .map(|(_, r)| r.get(i).and_then(&pick).flatten())
        .collect()
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
    /// error in a `DeviceRecord` impl, and is stored as NULL rather than misaligning the rows.
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

impl PgStore {
    /// Inserts child rows with one `INSERT … SELECT FROM UNNEST(…)` (one array per column):
    /// the statement's text depends only on the table, so it is prepared once.
    pub(super) async fn insert_child_rows(
        tx: &mut Tx<Self>,
        instance: &str,
        table: &ChildTable,
        rows: &[(i64, &Vec<Val>)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let types: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                let ty = match t {
                    ValType::Text => "text[]",
                    ValType::Bool => "bool[]",
                    ValType::Int => "bigint[]",
                    ValType::Time => "timestamptz[]",
                };
                format!("${}::{ty}", i + 3)
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} (instance, jamf_id, {}) SELECT $1, * FROM UNNEST($2::bigint[], {})",
            table.name,
            names.join(", "),
            types.join(", ")
        );
        for part in rows.chunks(CHUNK * 20) {
            let ids: Vec<i64> = part.iter().map(|(id, _)| *id).collect();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(instance)
                .bind(ids);
            for (i, (_, t)) in table.columns.iter().enumerate() {
                q = match t {
                    ValType::Text => q.bind(column(part, i, |v| match v {
                        Val::Text(x) => Some(x.clone()),
                        _ => None,
                    })),
                    ValType::Bool => q.bind(column(part, i, |v| match v {
                        Val::Bool(x) => Some(*x),
                        _ => None,
                    })),
                    ValType::Int => q.bind(column(part, i, |v| match v {
                        Val::Int(x) => Some(*x),
                        _ => None,
                    })),
                    ValType::Time => q.bind(column(part, i, |v| match v {
                        Val::Time(x) => Some(*x),
                        _ => None,
                    })),
                };
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// One `INSERT … SELECT FROM UNNEST(…)` with the guard, one array per column: the
    /// statement's text depends only on the record type, so PostgreSQL parses and plans it
    /// once per connection whatever the chunk's size. `RETURNING` names the rows written (a row
    /// the guard keeps is not returned) and which of them are new: an update never sets
    /// `first_seen_at`, so only a row inserted by this statement carries this write's `now`.
    pub(super) async fn upsert_changed<R: DeviceRecord>(
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
    pub(super) async fn replace_attributes<R: DeviceRecord>(
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
        let eas: Vec<(i64, &EaValue)> = written
            .iter()
            .flat_map(|r| {
                r.extension_attributes()
                    .iter()
                    .map(move |e| (r.jamf_id(), e))
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Computer, MobileDevice};

    #[test]
    fn the_guard_names_the_kinds_own_date_and_overwrite_drops_it() {
        let c = upsert_tail::<Computer>(false);
        assert!(
            c.contains("excluded.report_date > computers.report_date"),
            "{c}"
        );
        let m = upsert_tail::<MobileDevice>(false);
        assert!(m.contains("mobile_devices.last_inventory_update"), "{m}");
        assert!(!upsert_tail::<Computer>(true).contains("WHERE"));
        assert!(insert_columns::<MobileDevice>()
            .starts_with("udid, serial_number, name, model, os_version, managed, supervised, username, email, os_type, last_inventory_update, raw"));
    }
}
