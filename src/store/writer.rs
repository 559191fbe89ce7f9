//! The one write path for devices, both backends (`writer_impl!`): any [`DeviceRecord`] is
//! written through its column projection, with the newer-wins guard in the upsert's SQL.
//!
//! Per chunk of a page: read the stored hashes → records identical to their stored copy only
//! move `synced_at` → the others are upserted with `ON CONFLICT … DO UPDATE … WHERE <guard>`,
//! so a row the guard keeps is not rewritten; when fewer rows were affected than upserted, the
//! stored hashes tell which were written → extension attributes are replaced for exactly the
//! rows written. Devices that failed (recorded in `sync_failures`) and the ones written (their
//! rows there removed) go in the same transaction. All of it, and the run's
//! progress, in one transaction; on SQLite it begins `IMMEDIATE`, so a writer running beside
//! another (a webhook refresh beside a sync) waits for the lock instead of failing to upgrade
//! a read snapshot.

use sqlx::QueryBuilder;

use crate::domain::{DeviceInfo, DeviceRecord};

/// Rows per multi-row statement: 20 parameters a row stays well under SQLite's 32,766 limit.
pub(super) const CHUNK: usize = 500;

/// Appends ` IN ($1, $2, …)` binding `ids`: the tail of every id-list statement.
pub(super) fn push_ids<DB>(q: &mut QueryBuilder<DB>, ids: &[i64])
where
    DB: sqlx::Database,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.push(" IN (");
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    q.push(")");
}

/// Every projected column of a record type, in the order of [`DeviceRecord::all_cells`].
fn projected<R: DeviceRecord>() -> impl Iterator<Item = &'static str> {
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

/// Binds one record's projected cells.
macro_rules! push_cells {
    ($b:expr, $record:expr) => {
        for cell in $record.all_cells() {
            match cell {
                Cell::Text(v) => {
                    $b.push_bind(v.map(str::to_string));
                }
                Cell::Bool(v) => {
                    $b.push_bind(v);
                }
                Cell::Time(v) => {
                    $b.push_bind(v);
                }
            }
        }
    };
}
pub(super) use push_cells;

/// The write path's body for one backend (which has a `begin_write` method); `$json_cast`
/// follows the `raw` parameter.
macro_rules! writer_impl {
    ($store:ty, $db:ty, $json_cast:literal) => {
        impl $store {
            async fn write_devices_tx<R: DeviceRecord>(
                &self,
                w: Write<'_, R>,
            ) -> Result<PageOutcome> {
                let Write {
                    instance,
                    records,
                    failures,
                    progress,
                    overwrite,
                    now,
                } = w;
                let table = R::KIND.as_str();
                let mut tx = self.begin_write().await?;
                let mut outcome = PageOutcome::default();
                for chunk in records.chunks(CHUNK) {
                    let ids: Vec<i64> = chunk.iter().map(|r| r.jamf_id()).collect();
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                        "SELECT jamf_id, raw_hash, deleted_at IS NOT NULL FROM {table} WHERE instance = "
                    ));
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                    push_ids(&mut q, &ids);
                    let stored: Vec<(i64, i64, bool)> =
                        q.build_query_as().fetch_all(&mut *tx).await?;
                    let (changed, unchanged) = partition_changed(chunk, &stored);

                    if !unchanged.is_empty() {
                        let mut q: QueryBuilder<$db> =
                            QueryBuilder::new(format!("UPDATE {table} SET synced_at = "));
                        q.push_bind(now).push(" WHERE instance = ").push_bind(instance.to_string());
                        q.push(" AND jamf_id");
                        push_ids(&mut q, &unchanged);
                        q.build().execute(&mut *tx).await?;
                    }
                    outcome.unchanged += unchanged.len() as i64;
                    if changed.is_empty() {
                        continue;
                    }

                    let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                        "INSERT INTO {table} (instance, jamf_id, {}) ",
                        insert_columns::<R>()
                    ));
                    q.push_values(changed.iter(), |mut b, r| {
                        b.push_bind(instance.to_string()).push_bind(r.jamf_id());
                        push_cells!(b, r);
                        b.push_bind(r.raw().to_string())
                            .push_unseparated($json_cast)
                            .push_bind(r.raw_hash())
                            .push_bind(r.fetched_at())
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(now)
                            .push("NULL");
                    });
                    q.push(upsert_tail::<R>(overwrite));
                    let affected = q.build().execute(&mut *tx).await?.rows_affected();
                    let mut written: std::collections::HashSet<i64> =
                        changed.iter().map(|r| r.jamf_id()).collect();
                    if affected < changed.len() as u64 {
                        // The guard kept some stored copies (rare): the rows written now hold
                        // this page's hashes, the others a newer copy's.
                        let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                            "SELECT jamf_id, raw_hash FROM {table} WHERE instance = "
                        ));
                        q.push_bind(instance.to_string()).push(" AND jamf_id");
                        push_ids(&mut q, &written.iter().copied().collect::<Vec<_>>());
                        let now_stored: std::collections::HashMap<i64, i64> =
                            q.build_query_as::<(i64, i64)>()
                                .fetch_all(&mut *tx)
                                .await?
                                .into_iter()
                                .collect();
                        written.retain(|id| {
                            changed.iter().any(|r| {
                                r.jamf_id() == *id && now_stored.get(id) == Some(&r.raw_hash())
                            })
                        });
                    }
                    outcome.upserted += written.len() as i64;
                    outcome.stale += (changed.len() - written.len()) as i64;
                    if written.is_empty() {
                        continue;
                    }

                    let written_ids: Vec<i64> = written.iter().copied().collect();
                    let device_type = R::KIND.device_type();
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "DELETE FROM extension_attributes WHERE device_type = ",
                    );
                    q.push_bind(device_type).push(" AND instance = ");
                    q.push_bind(instance.to_string()).push(" AND jamf_id");
                    push_ids(&mut q, &written_ids);
                    q.build().execute(&mut *tx).await?;

                    let eas: Vec<(i64, &EaValue)> = changed
                        .iter()
                        .filter(|r| written.contains(&r.jamf_id()))
                        .flat_map(|r| r.extension_attributes().iter().map(move |e| (r.jamf_id(), e)))
                        .collect();
                    for ea_chunk in eas.chunks(CHUNK * 2) {
                        let mut q: QueryBuilder<$db> = QueryBuilder::new(
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
                        q.build().execute(&mut *tx).await?;
                    }
                }
                let kind = R::KIND.as_str();
                let answered: Vec<i64> = records.iter().map(|r| r.jamf_id()).collect();
                Self::clear_failures(&mut tx, instance, R::KIND, &answered).await?;
                for (id, error) in failures {
                    let error: String = error.chars().take(1000).collect();
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
                if let Some(p) = progress {
                    let mut total = p.counts;
                    total.upserted += outcome.upserted;
                    total.unchanged += outcome.unchanged;
                    total.stale += outcome.stale;
                    sqlx::query(
                        "UPDATE sync_runs SET listed = $1, fetched = $2, upserted = $3, \
                         unchanged = $4, stale = $5, failed = $6, missing = $7, \
                         last_id = COALESCE($8, last_id) WHERE id = $9",
                    )
                    .bind(total.listed)
                    .bind(total.fetched)
                    .bind(total.upserted)
                    .bind(total.unchanged)
                    .bind(total.stale)
                    .bind(total.failed)
                    .bind(total.missing)
                    .bind(p.last_id)
                    .bind(p.run_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }
        }
    };
}
pub(super) use writer_impl;

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
