//! `run_requests`: a run asked of the process that holds its instance; a repeated request
//! joins the waiting one.

use chrono::{DateTime, Utc};

use super::{Backend, Col, RowsAffected, SqlStore};
use crate::store::rows::RUN_COLUMNS;
use crate::store::{Result, RunRequestRow, RunRow};

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
    pub(crate) async fn request_run(
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

    pub(crate) async fn handed_over(
        &self,
        instance: &str,
        ids: &[i64],
    ) -> Result<(Vec<i64>, Vec<RunRow>)> {
        let mut waiting = Vec::new();
        let mut runs = Vec::new();
        for id in ids {
            let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM run_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            waiting.extend(row.map(|r| r.0));
            let answers: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM sync_runs WHERE instance = $1 AND request_id = $2 ORDER BY id"
            )))
            .bind(instance)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            runs.extend(answers);
        }
        Ok((waiting, runs))
    }

    pub(crate) async fn withdraw_requests(&self, ids: &[i64]) -> Result<u64> {
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

    pub(crate) async fn waiting_requests(
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

    pub(crate) async fn take_request(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM run_requests WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
