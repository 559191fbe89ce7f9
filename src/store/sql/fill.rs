//! First fills: a full sync that finds a child table empty for every instance writes it
//! without its secondary B-tree indexes and builds them once when the run ends. Kept up row
//! by row, an index over a table that grows to a million rows costs the writer most of a
//! first sync on SQLite; built once, from sorted rows, it costs a fraction.
//!
//! Invariants:
//! - an index is set aside only in the transaction that records its definition in
//!   `deferred_indexes`, so a crash never loses one;
//! - the device index (`instance, jamf_id`) is never set aside: replacing a device's rows and
//!   reading them find them through it; nor is a hash index (PostgreSQL's), whose build walks
//!   the same bucket chains that keeping it does;
//! - an index set aside is rebuilt when its run ends (whatever its status); one whose run is
//!   no longer running (a crash, an abort) is rebuilt at start-up and when the next run of
//!   its kind starts. Rebuilding is idempotent (`IF NOT EXISTS`, the record deleted with it).

use chrono::{DateTime, Utc};

use super::{Backend, Col, SqlStore};
use crate::domain::{children, Kind};
use crate::store::Result;

/// Takes [`Backend::SCHEMA_LOCK`] for this transaction, where the backend has one.
async fn lock_schema<DB: Backend>(tx: &mut super::Tx<DB>) -> Result<()>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if !DB::SCHEMA_LOCK.is_empty() {
        sqlx::query(DB::SCHEMA_LOCK).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Which set-aside indexes to rebuild.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rebuild {
    /// Those one run set aside (it ended).
    Run(i64),
    /// Those whose run is no longer running.
    Orphaned,
}

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: Col<DB>,
    i32: Col<DB>,
    String: Col<DB>,
    DateTime<Utc>: Col<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    /// Before a full sync of `kind` writes: sets aside the secondary indexes of its child
    /// tables that hold no row at all. Returns how many.
    pub(crate) async fn defer_child_indexes(
        &self,
        instance: &str,
        kind: Kind,
        run_id: i64,
    ) -> Result<usize> {
        self.rebuild_child_indexes(Rebuild::Orphaned).await?;
        let mut n = 0;
        let tables = children::ALL
            .iter()
            .filter(|t| t.device_type == kind.device_type());
        // One table per transaction, behind one lock for every process's index changes: two
        // fills (other instances, other processes) or a fill and another instance's writer
        // then never wait on each other in a circle.
        for table in tables {
            let mut tx = DB::begin_write(self, instance).await?;
            lock_schema(&mut tx).await?;
            let any: Option<(i32,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM {} LIMIT 1",
                table.name
            )))
            .fetch_optional(&mut *tx)
            .await?;
            if any.is_some() {
                continue;
            }
            let indexes: Vec<(String, String)> = sqlx::query_as(DB::INDEXES_SQL)
                .bind(table.name)
                .fetch_all(&mut *tx)
                .await?;
            for (name, definition) in indexes {
                // A hash index (PostgreSQL's, over values of any length) builds no faster
                // than it is kept: every entry of a shared value walks the same bucket chain.
                if definition.trim_end().ends_with("(instance, jamf_id)")
                    || definition.contains(" USING hash ")
                {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO deferred_indexes (name, table_name, definition, run_id) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name.as_str())
                .bind(table.name)
                .bind(definition.as_str())
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {name}")))
                    .execute(&mut *tx)
                    .await?;
                n += 1;
            }
            tx.commit().await?;
        }
        if n > 0 {
            tracing::info!(
                kind = kind.as_str(),
                indexes = n,
                "first fill: child-table indexes set aside until the run ends"
            );
        }
        Ok(n)
    }

    /// Builds set-aside indexes again, each in its own transaction with its record's removal.
    /// Returns how many.
    pub(crate) async fn rebuild_child_indexes(&self, which: Rebuild) -> Result<usize> {
        let rows: Vec<(String, String)> =
            match which {
                Rebuild::Run(id) => sqlx::query_as(
                    "SELECT name, definition FROM deferred_indexes WHERE run_id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
                Rebuild::Orphaned => {
                    sqlx::query_as(
                        "SELECT name, definition FROM deferred_indexes d WHERE NOT EXISTS \
                     (SELECT 1 FROM sync_runs r WHERE r.id = d.run_id AND r.status = 'running') \
                     ORDER BY name",
                    )
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        let started = std::time::Instant::now();
        for (name, definition) in &rows {
            let Some(rest) = definition.strip_prefix("CREATE INDEX ") else {
                // Not a definition this module wrote: leave it for an operator to see.
                tracing::warn!(index = %name, "a set-aside index has an unexpected definition");
                continue;
            };
            let mut tx = self.pool.begin_with(DB::BEGIN_SCHEMA).await?;
            lock_schema(&mut tx).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE INDEX IF NOT EXISTS {rest}"
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM deferred_indexes WHERE name = $1")
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        if !rows.is_empty() {
            tracing::info!(
                indexes = rows.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "child-table indexes built again"
            );
        }
        Ok(rows.len())
    }
}
