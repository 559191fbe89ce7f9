//! The two backends' schemas stay one schema: after migrating both, every table, column,
//! primary key and index exists on both, with the same nullability and an equivalent type. The
//! legitimate differences are listed in [`EQUIVALENT`]; anything else fails with the list of
//! differences. Purge's table list is checked against the schema too.

use std::collections::{BTreeMap, BTreeSet};

use jamf_sync::store::Db;

/// `(PostgreSQL type, SQLite declared type)` pairs that store the same values.
const EQUIVALENT: &[(&str, &str, &str)] = &[
    ("bigint", "INTEGER", "SQLite has one integer type"),
    ("bigint", "BIGINT", "SQLite has one integer type"),
    ("integer", "INTEGER", "SQLite has one integer type"),
    ("boolean", "INTEGER", "SQLite stores booleans as 0/1"),
    ("boolean", "BOOLEAN", "SQLite stores booleans as 0/1"),
    ("text", "TEXT", "the same"),
    (
        "timestamp with time zone",
        "TEXT",
        "SQLite keeps times as RFC 3339 text in UTC",
    ),
    (
        "jsonb",
        "TEXT",
        "PostgreSQL keeps raw records as jsonb (lz4-compressed); SQLite as text",
    ),
];

#[derive(Debug, Default, PartialEq)]
struct Table {
    /// name → (type, not null)
    columns: BTreeMap<String, (String, bool)>,
    primary_key: BTreeSet<String>,
    indexes: BTreeSet<String>,
}

type Schema = BTreeMap<String, Table>;

async fn sqlite_schema(pool: &sqlx::SqlitePool) -> Schema {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name,) in tables {
        let mut table = Table::default();
        let cols: Vec<(String, String, bool, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        for (col, ty, not_null, pk) in cols {
            // SQLite does not imply NOT NULL for a primary key column; PostgreSQL does.
            table.columns.insert(col.clone(), (ty, not_null || pk > 0));
            if pk > 0 {
                table.primary_key.insert(col);
            }
        }
        // Explicit indexes only: a key's own index has no SQL.
        let idx: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 \
             AND sql IS NOT NULL",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        table.indexes = idx.into_iter().map(|r| r.0).collect();
        schema.insert(name, table);
    }
    schema
}

async fn postgres_schema(pool: &sqlx::PgPool) -> Schema {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name,) in tables {
        let mut table = Table::default();
        let cols: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for (col, ty, nullable) in cols {
            table.columns.insert(col, (ty, nullable == "NO"));
        }
        let pk: Vec<(String,)> = sqlx::query_as(
            "SELECT a.attname::text FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey) \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE x.indisprimary AND n.nspname = 'public' AND t.relname = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        table.primary_key = pk.into_iter().map(|r| r.0).collect();
        // Explicit indexes only: not the ones behind a primary key or unique constraint.
        let idx: Vec<(String,)> = sqlx::query_as(
            "SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public' AND t.relname = $1 \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        table.indexes = idx.into_iter().map(|r| r.0).collect();
        schema.insert(name, table);
    }
    schema
}

/// Every difference between the two schemas, as sentences.
fn differences(pg: &Schema, lite: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = pg.keys().chain(lite.keys()).collect();
    for name in names {
        let (Some(p), Some(l)) = (pg.get(name), lite.get(name)) else {
            let only = if pg.contains_key(name) {
                "PostgreSQL"
            } else {
                "SQLite"
            };
            out.push(format!("table {name} exists on {only} only"));
            continue;
        };
        let cols: BTreeSet<&String> = p.columns.keys().chain(l.columns.keys()).collect();
        for col in cols {
            match (p.columns.get(col), l.columns.get(col)) {
                (Some((pt, pn)), Some((lt, ln))) => {
                    if !EQUIVALENT
                        .iter()
                        .any(|(a, b, _)| a == pt && b.eq_ignore_ascii_case(lt))
                    {
                        out.push(format!(
                            "{name}.{col}: PostgreSQL {pt} and SQLite {lt} are not listed as equivalent"
                        ));
                    }
                    if pn != ln {
                        out.push(format!(
                            "{name}.{col}: NOT NULL on {} only",
                            if *pn { "PostgreSQL" } else { "SQLite" }
                        ));
                    }
                }
                (p_col, _) => out.push(format!(
                    "column {name}.{col} exists on {} only",
                    if p_col.is_some() {
                        "PostgreSQL"
                    } else {
                        "SQLite"
                    }
                )),
            }
        }
        if p.primary_key != l.primary_key {
            out.push(format!(
                "{name}: primary key {:?} on PostgreSQL, {:?} on SQLite",
                p.primary_key, l.primary_key
            ));
        }
        if p.indexes != l.indexes {
            out.push(format!(
                "{name}: indexes {:?} on PostgreSQL, {:?} on SQLite",
                p.indexes, l.indexes
            ));
        }
    }
    out
}

async fn schemas() -> (Schema, Schema) {
    let lite = crate::support::sqlite().await;
    let pg = crate::support::postgres().await;
    let (Db::Sqlite(l), Db::Postgres(p)) = (&*lite.db, &*pg.db) else {
        panic!("the fixtures open one SQLite and one PostgreSQL database");
    };
    let out = (
        postgres_schema(p.pool()).await,
        sqlite_schema(l.pool()).await,
    );
    lite.cleanup().await;
    pg.cleanup().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_migrate_to_the_same_schema() {
    let (pg, lite) = schemas().await;
    // Both were read whole: tables, their columns, keys and indexes.
    for schema in [&pg, &lite] {
        assert!(schema.len() > 20, "{:?}", schema.keys());
        let computers = &schema["computers"];
        assert!(computers.columns.len() > 15, "{computers:?}");
        assert!(computers.primary_key.contains("jamf_id"), "{computers:?}");
        assert!(!schema["inventory_changes"].indexes.is_empty());
    }
    eprintln!(
        "compared {} tables, {} columns, {} indexes",
        pg.len(),
        pg.values().map(|t| t.columns.len()).sum::<usize>(),
        pg.values().map(|t| t.indexes.len()).sum::<usize>()
    );
    let diff = differences(&pg, &lite);
    assert!(diff.is_empty(), "the schemas differ:\n{}", diff.join("\n"));
}

#[test]
fn a_difference_in_either_schema_is_found() {
    let table = |cols: &[(&str, &str, bool)], idx: &[&str]| Table {
        columns: cols
            .iter()
            .map(|(c, t, n)| (c.to_string(), (t.to_string(), *n)))
            .collect(),
        primary_key: BTreeSet::from(["id".to_string()]),
        indexes: idx.iter().map(|s| s.to_string()).collect(),
    };
    let pg = Schema::from([(
        "t".to_string(),
        table(
            &[
                ("id", "bigint", true),
                ("at", "timestamp with time zone", false),
            ],
            &["t_at"],
        ),
    )]);
    let same = Schema::from([(
        "t".to_string(),
        table(&[("id", "INTEGER", true), ("at", "TEXT", false)], &["t_at"]),
    )]);
    assert_eq!(differences(&pg, &same), Vec::<String>::new());
    let retyped = Schema::from([(
        "t".to_string(),
        table(&[("id", "INTEGER", true), ("at", "INTEGER", true)], &[]),
    )]);
    let diff = differences(&pg, &retyped);
    assert_eq!(diff.len(), 3, "{diff:?}");
    let missing = Schema::from([("u".to_string(), Table::default())]);
    assert_eq!(differences(&pg, &missing).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_knows_every_table_that_names_an_instance() {
    let (pg, _) = schemas().await;
    let with_instance: BTreeSet<&str> = pg
        .iter()
        .filter(|(_, t)| t.columns.contains_key("instance"))
        .map(|(n, _)| n.as_str())
        .collect();
    let purged: BTreeSet<&str> = jamf_sync::store::instance_tables().collect();
    assert_eq!(
        with_instance, purged,
        "store::INSTANCE_TABLES and the child tables are what purge removes"
    );
}

/// A new kind of object needs no migration of the tables that name a kind: any lower-case
/// name is taken, anything else is still refused.
async fn kinds_are_open(db: &crate::support::TestDb) {
    let now = "2026-12-09T00:00:00Z";
    for (kind, ok) in [
        ("user", true),
        ("patch_title", true),
        ("Bad Kind", false),
        ("", false),
    ] {
        let history =
            "INSERT INTO inventory_changes (instance, device_type, jamf_id, recorded_at, \
                       field) VALUES ('default', $1, 1, $2, 'name')";
        let queue = "INSERT INTO webhook_events (instance, kind, jamf_id, event, action, \
                     received_at, not_before) VALUES ('default', $1, 1, 'E', 'refresh', $2, $2)";
        for sql in [history, queue] {
            let done = match &*db.db {
                Db::Sqlite(s) => sqlx::query(sql)
                    .bind(kind)
                    .bind(now)
                    .execute(s.pool())
                    .await
                    .map(|_| ()),
                Db::Postgres(p) => sqlx::query(sql)
                    .bind(kind)
                    .bind(chrono::DateTime::parse_from_rfc3339(now).unwrap())
                    .execute(p.pool())
                    .await
                    .map(|_| ()),
            };
            assert_eq!(done.is_ok(), ok, "{kind:?} in `{sql}`: {done:?}");
        }
    }
}
both_backends!(kinds_are_open);

/// SQLite rebuilds two tables to open their kinds: a database made before keeps its history
/// and its queued events, ids included, and new rows continue after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_kinds_keeps_the_rows_of_an_older_sqlite_database() {
    use jamf_sync::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("migrations");
    std::fs::create_dir(&before).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "20261209000001" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    let file = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for id in [7, 9] {
        sqlx::query(
            "INSERT INTO inventory_changes (id, instance, device_type, jamf_id, changed_at, \
             recorded_at, field, old_value, new_value, run_id) VALUES ($1, 'default', \
             'computer', 1, '2026-12-01T00:00:00Z', '2026-12-01T00:00:01Z', 'name', 'a', 'b', 3)",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO webhook_events (id, instance, kind, jamf_id, event, action, received_at, \
         not_before) VALUES (5, 'default', 'computers', 1, 'ComputerInventoryCompleted', \
         'refresh', '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let db = Db::connect(
        &jamf_sync::config::DatabaseUrl::parse(secrecy::SecretString::from(format!(
            "sqlite://{}",
            file.display()
        )))
        .unwrap(),
        2,
    )
    .await
    .unwrap();
    let Db::Sqlite(s) = &db else {
        panic!("a SQLite URL opens SQLite");
    };
    let history: Vec<(i64, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, device_type, new_value, run_id FROM inventory_changes ORDER BY id",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![
            (7, "computer".into(), Some("b".into()), Some(3)),
            (9, "computer".into(), Some("b".into()), Some(3))
        ]
    );
    let queued = db
        .queued_webhook_events("default", chrono::Utc::now(), 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!((queued[0].id, queued[0].kind.as_str()), (5, "computers"));
    // AUTOINCREMENT goes on after the copied rows.
    let (next,): (i64,) = sqlx::query_as(
        "INSERT INTO inventory_changes (instance, device_type, jamf_id, recorded_at, field) \
         VALUES ('default', 'user', 1, '2026-12-09T00:00:00Z', 'name') RETURNING id",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(next, 10);
    db.close().await;
}
