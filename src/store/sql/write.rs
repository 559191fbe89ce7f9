//! The one write path for devices, both backends: any [`Record`] is written through its
//! column projection, with the newer-wins guard in the upsert's SQL ([`super::upsert`]).
//!
//! Per chunk of a page: read the stored hashes → records identical to their stored copy only
//! move `synced_at` → the others are upserted with `ON CONFLICT … DO UPDATE … WHERE <guard>`,
//! so a row the guard keeps is not rewritten → extension attributes are replaced for exactly
//! the rows written; with history on, the stored copies of the changed devices are read first
//! and their changed fields appended to `inventory_changes` (`store::history`). Devices that
//! failed (recorded in `sync_failures`) and the ones written (their rows there removed) go in
//! the same transaction. All of it, and the run's progress, in one transaction; on SQLite it
//! begins `IMMEDIATE`, so a writer running beside another (a webhook refresh beside a sync)
//! waits for the lock instead of failing to upgrade a read snapshot.
//!
//! A page the database refuses for one record's data is written again with each chunk in a
//! savepoint, halved down to the record, which is left out and recorded (`store::refusal`).
//!
//! The backends differ only in how rows travel ([`Backend::upsert_changed`] and the other bulk
//! inserts): SQLite is in-process, so multi-row `VALUES` cost nothing to send; PostgreSQL is a
//! round trip away and parses what it gets, so one array per column (`UNNEST`) keeps each
//! statement's text fixed and prepared once per connection.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{push_ids, Backend, Col, SqlStore, Tx, CHUNK};
use crate::config::HistoryConfig;
use crate::domain::{Kind, Record};
use crate::store::{partition_changed, PageOutcome, Result, Write};

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
    pub(crate) async fn write_devices<R: Record>(&self, w: Write<'_, R>) -> Result<PageOutcome> {
        // The fast path writes the page whole; only a page the database refused for
        // a record's data is written again, record by record where it must be.
        match self.write_devices_tx(w, false).await {
            Err(e) if crate::store::refusal::record_error(&e).is_some() => {
                self.write_devices_tx(w, true).await
            }
            other => other,
        }
    }

    /// One write: chunks of the page, then its failures and the run's progress, in
    /// one transaction. With `isolate`, each chunk is written inside a savepoint and a
    /// chunk the database refuses for its data (a record's error, `refusal::record_error`) is
    /// written again in halves down to the single record, which is then left out and
    /// recorded in `sync_failures` with the database's message.
    pub(super) async fn write_devices_tx<R: Record>(
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
        let mut tx = DB::begin_write(self, instance).await?;
        let mut outcome = PageOutcome::default();
        let run_id = progress.map(|p| p.run_id);
        let mut refused: Vec<(i64, String)> = Vec::new();
        for chunk in records.chunks(CHUNK) {
            if !isolate {
                let o =
                    Self::write_chunk(&mut tx, instance, chunk, overwrite, history, run_id, now)
                        .await?;
                outcome.add(&o);
                continue;
            }
            let mut parts: Vec<&[R]> = vec![chunk];
            while let Some(part) = parts.pop() {
                sqlx::query("SAVEPOINT jamf_sync_part")
                    .execute(&mut *tx)
                    .await?;
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
                        let Some(message) = crate::store::refusal::record_error(&e) else {
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
                                crate::store::log_refused(R::KIND, one.jamf_id(), &message);
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
            let error: String = crate::store::storable_text(error)
                .chars()
                .take(1000)
                .collect();
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
    pub(super) async fn write_chunk<R: Record>(
        tx: &mut Tx<DB>,
        instance: &str,
        chunk: &[R],
        overwrite: bool,
        history: &HistoryConfig,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome> {
        let mut outcome = PageOutcome::default();
        let (changed, unchanged, stored) = Self::touch_unchanged(tx, instance, chunk, now).await?;
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
        let written = DB::upsert_changed(tx, instance, &changed, overwrite, now).await?;
        if !before.is_empty() {
            let columns: Vec<&str> = super::upsert::projected::<R>().collect();
            let changes: Vec<(crate::store::history::Change, Option<DateTime<Utc>>)> = changed
                .iter()
                .filter(|r| written.ids.contains(&r.jamf_id()))
                .filter_map(|r| before.get(&r.jamf_id()).map(|b| (r, b)))
                .flat_map(|(r, b)| {
                    crate::store::history::diff(&columns, b, *r, history)
                        .into_iter()
                        .map(|c| (c, r.as_of()))
                })
                .collect();
            Self::record_changes(tx, instance, R::KIND, &changes, run_id, now).await?;
        }
        let written_records: Vec<&R> = changed
            .iter()
            .copied()
            .filter(|r| written.ids.contains(&r.jamf_id()) && !r.children().is_empty())
            .collect();
        if !written_records.is_empty() {
            let known: std::collections::HashSet<i64> = before.keys().copied().collect();
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
            DB::replace_attributes(tx, instance, &records, &existed, now).await?;
        }
        Ok(outcome)
    }

    /// Reads the stored hashes of `chunk`; records identical to their stored copy only
    /// move `synced_at`. Returns the others, how many were unchanged and which of the
    /// others are stored.
    pub(super) async fn touch_unchanged<'r, R: Record>(
        tx: &mut Tx<DB>,
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
        let stored: Vec<(i64, i64, bool)> = q.build_query_as().fetch_all(&mut **tx).await?;
        let (changed, unchanged) = partition_changed(chunk, &stored);
        if !unchanged.is_empty() {
            let mut q = QueryBuilder::new(format!("UPDATE {table} SET synced_at = "));
            q.push_bind(now)
                .push(" WHERE instance = ")
                .push_bind(instance.to_string());
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
    pub(super) async fn snapshots<R: Record>(
        tx: &mut Tx<DB>,
        instance: &str,
        sample: &R,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, crate::store::history::Snapshot>> {
        use sqlx::Row;
        let table = R::KIND.as_str();
        let columns: Vec<&str> = super::upsert::projected::<R>().collect();
        let mut q = QueryBuilder::new(format!(
            "SELECT jamf_id, deleted_at IS NOT NULL AS gone, {} FROM {table} WHERE instance = ",
            columns.join(", ")
        ));
        q.push_bind(instance.to_string()).push(" AND jamf_id");
        push_ids(&mut q, ids);
        let types = sample.all_cells();
        let mut out = std::collections::HashMap::new();
        for row in q.build().fetch_all(&mut **tx).await? {
            let mut snap = crate::store::history::Snapshot {
                deleted: row.try_get("gone")?,
                ..crate::store::history::Snapshot::default()
            };
            for (i, cell) in types.iter().enumerate() {
                let at = i + 2;
                snap.cells.push(match cell {
                    crate::domain::Cell::Text(_) => row.try_get::<Option<String>, _>(at)?,
                    crate::domain::Cell::Bool(_) => {
                        crate::domain::Cell::Bool(row.try_get(at)?).history_text()
                    }
                    crate::domain::Cell::Time(_) => {
                        crate::domain::Cell::Time(row.try_get(at)?).history_text()
                    }
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
    pub(super) async fn replace_children<R: Record>(
        tx: &mut Tx<DB>,
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
            let mut q =
                QueryBuilder::new("SELECT jamf_id, hash FROM child_hashes WHERE device_type = ");
            q.push_bind(device_type)
                .push(" AND child = ")
                .push_bind(table.name);
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
                    let old_rows: Vec<KeyedRow> = q.build_query_as().fetch_all(&mut **tx).await?;
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
                            crate::store::history::diff_keyed(
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
                    Self::record_changes(tx, instance, R::KIND, &changes, run_id, now).await?;
                }
            }
            let mut q = QueryBuilder::new(format!("DELETE FROM {} WHERE instance = ", table.name));
            q.push_bind(instance.to_string()).push(" AND jamf_id");
            push_ids(&mut q, &changed_ids);
            q.build().execute(&mut **tx).await?;
            let rows: Vec<(i64, &Vec<Val>)> = changed
                .iter()
                .flat_map(|(r, c, _)| c.rows.iter().map(move |row| (r.jamf_id(), row)))
                .collect();
            DB::insert_child_rows(tx, instance, table, &rows).await?;
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
    pub(super) async fn record_changes(
        tx: &mut Tx<DB>,
        instance: &str,
        kind: Kind,
        changes: &[(crate::store::history::Change, Option<DateTime<Utc>>)],
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

/// `(jamf_id, key, fallback key, value)` of a stored child row, as its history compares it.
type KeyedRow = (i64, Option<String>, Option<String>, Option<String>);
