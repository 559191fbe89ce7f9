//! Migrations, the installation id, size, history pruning, pacing memory and purging an
//! instance. Purge removes every table that names the instance ([`crate::store::instance_tables`]).

use chrono::{DateTime, Utc};

use super::{Backend, Col, RowsAffected, SqlStore};
use crate::domain::PacingMemory;
use crate::store::Result;

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
    pub(crate) async fn migrate(&self) -> Result<()> {
        DB::migrator().run(&self.pool).await?;
        // A first fill that did not end (a crash) left its indexes set aside.
        self.rebuild_child_indexes(super::fill::Rebuild::Orphaned)
            .await?;
        Ok(())
    }

    pub(crate) async fn installation_id(&self) -> Result<String> {
        let fresh = format!("{:016x}", fastrand::u64(..));
        // Two processes starting together both insert; the first one's id stays.
        sqlx::query(
            "INSERT INTO installation (singleton, id) VALUES (1, $1) ON CONFLICT DO NOTHING",
        )
        .bind(&fresh)
        .execute(&self.pool)
        .await?;
        let (id,): (String,) = sqlx::query_as("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    pub(crate) async fn database_bytes(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(DB::SIZE_SQL).fetch_one(&self.pool).await?;
        Ok(n)
    }

    pub(crate) async fn prune_history(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM inventory_changes WHERE recorded_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub(crate) async fn purge_instance(
        &self,
        instance: &str,
        apply: bool,
    ) -> Result<Vec<(&'static str, u64)>> {
        let mut tx = DB::begin_write(self, instance).await?;
        DB::refuse_if_held(&mut tx, instance).await?;
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
            if view
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP VIEW IF EXISTS {view}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let tables = crate::store::instance_tables();
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

    pub(crate) async fn pacing_memory(
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

    pub(crate) async fn save_pacing_memory(
        &self,
        instance: &str,
        server: &str,
        memory: &PacingMemory,
        saved_at: DateTime<Utc>,
    ) -> Result<()> {
        let text = serde_json::to_string(memory).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut tx = DB::begin_write(self, instance).await?;
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
}
