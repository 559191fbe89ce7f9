//! Group memberships replaced group by group. A group's rows and a device's rows overlap, so
//! both are written under the membership table's lock ([`Backend::begin_memberships`]).

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{Backend, Col, SqlStore, CHUNK};
use crate::domain::children;
use crate::domain::Kind;
use crate::store::{GroupMembers, GroupRow, Result};

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
    pub(crate) async fn group_rows(
        &self,
        instance: &str,
        kind: Kind,
        group_id: &str,
    ) -> Result<Vec<GroupRow>> {
        let sql = format!(
            "SELECT jamf_id, group_name, smart FROM {} WHERE instance = $1 AND group_id = $2",
            children::memberships(kind).name
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .bind(group_id)
            .fetch_all(&self.pool)
            .await?)
    }

    pub(crate) async fn replace_group(
        &self,
        instance: &str,
        kind: Kind,
        group: &GroupMembers<'_>,
    ) -> Result<u64> {
        let table = children::memberships(kind).name;
        let mut tx = DB::begin_memberships(self, table, instance).await?;
        let old: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE instance = $1 AND group_id = $2 RETURNING jamf_id"
        )))
        .bind(instance)
        .bind(group.id)
        .fetch_all(&mut *tx)
        .await?;
        for chunk in group.members.chunks(CHUNK) {
            let mut q: QueryBuilder<DB> = QueryBuilder::new(format!(
                "INSERT INTO {table} (instance, jamf_id, group_id, group_name, smart) "
            ));
            q.push_values(chunk, |mut b, id| {
                b.push_bind(instance.to_string())
                    .push_bind(*id)
                    .push_bind(group.id.to_string())
                    .push_bind(group.name.to_string())
                    .push_bind(group.smart);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        let mut touched: Vec<i64> = old
            .into_iter()
            .chain(group.members.iter().copied())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        Self::forget_child_hashes(&mut tx, instance, kind, Some(table), &touched).await?;
        tx.commit().await?;
        Ok(group.members.len() as u64)
    }

    pub(crate) async fn drop_groups_except(
        &self,
        instance: &str,
        kind: Kind,
        keep: &[String],
    ) -> Result<u64> {
        let table = children::memberships(kind).name;
        let mut tx = DB::begin_memberships(self, table, instance).await?;
        let mut q: QueryBuilder<DB> =
            QueryBuilder::new(format!("DELETE FROM {table} WHERE instance = "));
        q.push_bind(instance.to_string());
        if !keep.is_empty() {
            q.push(" AND group_id NOT IN (");
            let mut list = q.separated(", ");
            for id in keep {
                list.push_bind(id.clone());
            }
            q.push(")");
        }
        q.push(" RETURNING jamf_id");
        let mut touched: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
        let n = touched.len() as u64;
        touched.sort_unstable();
        touched.dedup();
        Self::forget_child_hashes(&mut tx, instance, kind, Some(table), &touched).await?;
        tx.commit().await?;
        Ok(n)
    }
}
