//! Test databases: a fresh one per test (a SQLite file, or a new PostgreSQL database on
//! `TEST_DATABASE_URL`), removed when the fixture is dropped, also when the test fails.

use std::sync::Arc;

use jamf_sync::config::DatabaseUrl;
use jamf_sync::store::Db;
use secrecy::SecretString;
use sqlx::Connection;

pub struct TestDb {
    pub db: Arc<Db>,
    url: String,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Runs one statement on either backend, with `at` as its `$1` when given; rows affected.
    pub async fn execute(
        &self,
        sql: &str,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.db.as_ref() {
            Db::Sqlite(s) => {
                let q = sqlx::query(sql);
                let q = match at {
                    Some(t) => q.bind(t),
                    None => q,
                };
                Ok(q.execute(s.pool()).await?.rows_affected())
            }
            Db::Postgres(p) => {
                let q = sqlx::query(sql);
                let q = match at {
                    Some(t) => q.bind(t),
                    None => q,
                };
                Ok(q.execute(p.pool()).await?.rows_affected())
            }
        }
    }

    /// The one integer a query answers, on either backend.
    pub async fn scalar(&self, sql: &str) -> Result<i64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.db.as_ref() {
            Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p.pool()).await,
        }
    }

    /// Wraps a database opened elsewhere (nothing to clean up).
    pub fn wrap(db: Db) -> TestDb {
        TestDb {
            db: Arc::new(db),
            url: String::new(),
            pg_admin: None,
            _dir: None,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Closes the pool; the database itself goes when the fixture is dropped.
    pub async fn cleanup(self) {
        self.db.close().await;
    }
}

impl Drop for TestDb {
    /// Drops the per-test PostgreSQL database, whether the test passed or panicked. `Drop`
    /// cannot await, so a thread with a runtime of its own does it (`WITH (FORCE)` ends the
    /// connections the pool may still hold).
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg_admin.take() else {
            return;
        };
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let db = Db::connect(
        &DatabaseUrl::parse(SecretString::from(url.clone())).expect("url"),
        5,
    )
    .await
    .expect("sqlite connect");
    TestDb {
        db: Arc::new(db),
        url,
        pg_admin: None,
        _dir: Some(dir),
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn postgres() -> TestDb {
    jamf_sync::tls::install_crypto_provider();
    let admin = pg_admin_url();
    let name = format!("jamf_sync_test_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be reachable at TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin).expect("admin url");
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    let db = Db::connect(
        &DatabaseUrl::parse(SecretString::from(url.clone())).expect("url"),
        5,
    )
    .await
    .expect("postgres connect");
    TestDb {
        db: Arc::new(db),
        url,
        pg_admin: Some((admin, name)),
        _dir: None,
    }
}

/// Opens a database a daemon or command made (its URL), migrated.
pub(crate) async fn open(url: &str) -> Db {
    Db::connect(
        &DatabaseUrl::parse(SecretString::from(url.to_string())).expect("url"),
        2,
    )
    .await
    .expect("open db")
}
