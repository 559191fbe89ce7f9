//! The durable webhook queue: bounded per instance (the count and the append under one lock),
//! handled in arrival order, failed events held back instead of blocking newer ones.

use chrono::{DateTime, Utc};

use super::{Backend, Col, SqlStore};
use crate::store::{NewWebhookEvent, QueuedEvent, Result};

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
    pub(crate) async fn enqueue_webhook_event(
        &self,
        e: &NewWebhookEvent<'_>,
        max_queued: i64,
    ) -> Result<Option<i64>> {
        // The count stops at the cap (an index range of at most `max_queued` rows per
        // event, whatever the queue holds), and on PostgreSQL the instance's queue is
        // locked first, so two receivers never both take the last place.
        let mut tx = DB::begin_queue(self, e.instance).await?;
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

    pub(crate) async fn queued_webhook_events(
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

    pub(crate) async fn delete_webhook_events(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        self.chunked_in_own_tx(instance, ids, |q| {
            q.push("DELETE FROM webhook_events WHERE instance = ");
            q.push_bind(instance.to_string()).push(" AND id");
        })
        .await
    }

    pub(crate) async fn defer_webhook_events(
        &self,
        instance: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
        error: &str,
    ) -> Result<u64> {
        self.chunked_in_own_tx(instance, ids, |q| {
            q.push("UPDATE webhook_events SET attempts = attempts + 1, not_before = ");
            q.push_bind(not_before)
                .push(", last_error = ")
                .push_bind(error.to_string());
            q.push(" WHERE instance = ")
                .push_bind(instance.to_string())
                .push(" AND id");
        })
        .await
    }

    pub(crate) async fn webhook_queue_depth(&self, instance: &str) -> Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_events WHERE instance = $1")
                .bind(instance)
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }
}
