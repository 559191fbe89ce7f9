//! Child tables and extension attributes as stored, and the typed extension attribute views,
//! recreated only when an instance's attributes changed.

use chrono::{DateTime, Utc};

use super::{Backend, Col, SqlStore};
use crate::domain::Kind;
use crate::store::views::{self, EaColumn};
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
    pub(crate) async fn child_rows(
        &self,
        instance: &str,
        table: &'static crate::domain::children::ChildTable,
    ) -> Result<Vec<(i64, Vec<Option<String>>)>> {
        use crate::domain::children::{Val, ValType};
        use sqlx::Row;
        let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let sql = format!(
            "SELECT jamf_id, {} FROM {} WHERE instance = $1 ORDER BY jamf_id",
            names.join(", "),
            table.name
        );
        let mut out = Vec::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .fetch_all(&self.pool)
            .await?
        {
            let mut values = Vec::with_capacity(names.len());
            for (i, (_, ty)) in table.columns.iter().enumerate() {
                let v = match ty {
                    ValType::Text => Val::Text(row.try_get(i + 1)?),
                    ValType::Bool => Val::Bool(row.try_get(i + 1)?),
                    ValType::Int => Val::Int(row.try_get(i + 1)?),
                    ValType::Time => Val::Time(row.try_get(i + 1)?),
                };
                values.push(v.as_text());
            }
            out.push((row.try_get(0)?, values));
        }
        Ok(out)
    }

    pub(crate) async fn extension_attributes(
        &self,
        instance: &str,
        kind: Kind,
    ) -> Result<Vec<(i64, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT jamf_id, name, value FROM extension_attributes \
             WHERE instance = $1 AND device_type = $2 ORDER BY jamf_id, definition_id",
        )
        .bind(instance)
        .bind(kind.device_type())
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn refresh_ea_view(
        &self,
        instance: &str,
        kind: Kind,
        force: bool,
    ) -> Result<Option<(String, Vec<EaColumn>)>> {
        let columns: Vec<EaColumn> = sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT name, MAX(data_type) FROM extension_attributes \
             WHERE instance = $1 AND device_type = $2 GROUP BY name ORDER BY name",
        )
        .bind(instance)
        .bind(kind.device_type())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(name, data_type)| EaColumn { name, data_type })
        .collect();
        let signature = views::signature(&columns);
        let mut tx = DB::begin_write(self, instance).await?;
        let stored: Option<(String,)> = sqlx::query_as(
            "SELECT signature FROM ea_views WHERE instance = $1 AND device_type = $2",
        )
        .bind(instance)
        .bind(kind.device_type())
        .fetch_optional(&mut *tx)
        .await?;
        if !force && stored.is_some_and(|s| s.0 == signature) {
            return Ok(None);
        }
        let name = views::view_name(instance, kind);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP VIEW IF EXISTS {name}")))
            .execute(&mut *tx)
            .await?;
        let sql = views::create_sql(DB::DIALECT, instance, kind, &columns);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ea_views (instance, device_type, view_name, signature) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (instance, device_type) \
             DO UPDATE SET view_name = excluded.view_name, signature = excluded.signature",
        )
        .bind(instance)
        .bind(kind.device_type())
        .bind(&name)
        .bind(&signature)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((name, columns)))
    }
}
