//! Reading stored devices, marking them deleted and purging them. A device marked deleted keeps
//! its rows and history; only a copy requested after the deletion was seen revives it.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{push_ids, Backend, Col, SqlStore, CHUNK};
use crate::config::HistoryConfig;
use crate::domain::{DeviceInfo, Kind};
use crate::store::history::{Change, ChangeRow};
use crate::store::{Result, StoredDevice, StoredIds};

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
    pub(crate) async fn mark_deleted(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
        observed_at: DateTime<Utc>,
        history: &HistoryConfig,
    ) -> Result<u64> {
        let now = Utc::now();
        let mut tx = DB::begin_write(self, instance).await?;
        // The devices this marks (live until now) are the history's deletions.
        let mut live: Vec<i64> = Vec::new();
        if history.enabled && !history.excludes("deleted") {
            for part in ids.chunks(CHUNK) {
                let mut q = QueryBuilder::new(format!(
                    "SELECT jamf_id FROM {} WHERE deleted_at IS NULL AND instance = ",
                    kind.as_str()
                ));
                q.push_bind(instance.to_string()).push(" AND jamf_id");
                push_ids(&mut q, part);
                let found: Vec<(i64,)> = q.build_query_as().fetch_all(&mut *tx).await?;
                live.extend(found.into_iter().map(|r| r.0));
            }
        }
        let n = Self::execute_in_chunks(&mut tx, ids, |q| {
            q.push(format!("UPDATE {} SET deleted_at = ", kind.as_str()));
            q.push_bind(now)
                .push(", fetched_at = ")
                .push_bind(observed_at);
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

    pub(crate) async fn devices(&self, instance: &str, kind: Kind) -> Result<Vec<StoredDevice>> {
        // One shape for both kinds: columns a kind does not have read as NULL.
        let by_kind = match kind {
            Kind::Computers => "CAST(NULL AS TEXT) AS os_type, report_date AS as_of, last_contact",
            Kind::MobileDevices => {
                "os_type, last_inventory_update AS as_of, \
                 CAST(NULL AS TIMESTAMPTZ) AS last_contact"
            }
        };
        let sql = format!(
            "SELECT jamf_id, {}, {by_kind}, {} AS raw, raw_hash, first_seen_at, \
             changed_at, synced_at, deleted_at FROM {} WHERE instance = $1 ORDER BY jamf_id",
            DeviceInfo::COLUMNS.join(", "),
            DB::RAW_TEXT,
            kind.as_str()
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .fetch_all(&self.pool)
            .await?)
    }

    pub(crate) async fn count_devices(&self, instance: &str, kind: Kind) -> Result<i64> {
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

    pub(crate) async fn stored_ids(
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

    pub(crate) async fn device_ids(&self, instance: &str, kind: Kind) -> Result<Vec<(i64, bool)>> {
        let mut q: QueryBuilder<DB> = QueryBuilder::new(format!(
            "SELECT jamf_id, deleted_at IS NOT NULL FROM {} WHERE instance = ",
            kind.as_str()
        ));
        q.push_bind(instance.to_string()).push(" ORDER BY jamf_id");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    pub(crate) async fn synced_at(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> Result<Vec<(i64, DateTime<Utc>)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q: QueryBuilder<DB> = QueryBuilder::new(format!(
                "SELECT jamf_id, synced_at FROM {} WHERE deleted_at IS NULL AND instance = ",
                kind.as_str()
            ));
            q.push_bind(instance.to_string()).push(" AND jamf_id");
            push_ids(&mut q, chunk);
            out.extend(
                q.build_query_as::<(i64, DateTime<Utc>)>()
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(out)
    }

    pub(crate) async fn device_history(
        &self,
        instance: &str,
        key: &str,
        kind: Option<Kind>,
    ) -> Result<Vec<ChangeRow>> {
        let mut rows = Vec::new();
        for &k in Kind::ALL {
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

    pub(crate) async fn purge_devices(
        &self,
        instance: &str,
        kind: Kind,
        ids: &[i64],
    ) -> Result<u64> {
        // Attributes, child rows and devices go together or not at all.
        let mut tx = DB::begin_write(self, instance).await?;
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
}
