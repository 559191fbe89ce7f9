//! The query guide (docs/queries.md), run as written on both backends against a synced simulator, each
//! answer checked against what the simulator served.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use jamf_sync::config::{FetchStrategy, HistoryConfig};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::SimConfig;
use jamf_sync::store::{Db, Store};
use sqlx::Row;

use crate::support::{self, TestDb};

/// The guide's queries by number, from docs/queries.md.
fn guide() -> BTreeMap<u32, String> {
    let readme = crate::support::repo_file("docs/queries.md");
    let start = readme.find("<!-- query-guide -->").expect("guide start");
    let end = readme.find("<!-- /query-guide -->").expect("guide end");
    let mut out = BTreeMap::new();
    let mut number = None;
    let mut sql: Option<String> = None;
    for line in readme[start..end].lines() {
        if let Some(rest) = line.strip_prefix("#### Q") {
            number = rest.split('.').next().and_then(|n| n.parse::<u32>().ok());
        } else if line == "```sql" {
            sql = Some(String::new());
        } else if line == "```" {
            if let (Some(n), Some(q)) = (number.take(), sql.take()) {
                out.insert(n, q);
            }
        } else if let Some(q) = sql.as_mut() {
            q.push_str(line);
            q.push('\n');
        }
    }
    out
}

/// A query parameter.
#[derive(Clone)]
enum Param {
    Time(DateTime<Utc>),
    Text(String),
}

/// One result cell as text (numbers and booleans as Rust prints them; SQLite's times as stored,
/// PostgreSQL's as RFC 3339).
fn cell<R: Row>(row: &R, i: usize) -> Option<String>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<chrono::NaiveDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // Numbers first: SQLite would read an integer as a time since 1970.
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map(|n| n.to_string());
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v;
    }
    if let Ok(v) = row.try_get::<Option<DateTime<Utc>>, _>(i) {
        return v.map(|t| t.to_rfc3339());
    }
    if let Ok(v) = row.try_get::<Option<chrono::NaiveDateTime>, _>(i) {
        return v.map(|t| t.to_string());
    }
    row.try_get::<Option<bool>, _>(i)
        .ok()
        .flatten()
        .map(|b| b.to_string())
}

type Rows = Vec<Vec<Option<String>>>;

async fn query(db: &TestDb, sql: &str, params: &[Param]) -> Rows {
    // The same statement on either pool (their row types differ, so one body per pool).
    macro_rules! run_on {
        ($pool:expr, $backend:literal) => {{
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
            for p in params {
                q = match p {
                    Param::Time(t) => q.bind(*t),
                    Param::Text(t) => q.bind(t.clone()),
                };
            }
            q.fetch_all($pool)
                .await
                .expect(concat!("query runs on ", $backend))
                .iter()
                .map(|r| (0..r.len()).map(|i| cell(r, i)).collect())
                .collect()
        }};
    }
    match &*db.db {
        Db::Sqlite(s) => run_on!(s.pool(), "SQLite"),
        Db::Postgres(s) => run_on!(s.pool(), "PostgreSQL"),
    }
}

fn col(rows: &Rows, i: usize) -> Vec<String> {
    rows.iter()
        .map(|r| r[i].clone().unwrap_or_default())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

both_backends!(the_query_guide_answers_from_the_synced_fleet);
async fn the_query_guide_answers_from_the_synced_fleet(db: &TestDb) {
    let guide = guide();
    assert_eq!(guide.len(), 11, "{:?}", guide.keys());
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = support::sync_cfg(100, FetchStrategy::Inline);
    cfg.sections.extend(
        [
            "APPLICATIONS",
            "GROUP_MEMBERSHIPS",
            "CONFIGURATION_PROFILES",
            "LOCAL_USER_ACCOUNTS",
            "CERTIFICATES",
        ]
        .map(String::from),
    );
    let engine =
        support::engine(db, support::settings(&sim), cfg).with_history(HistoryConfig::default());
    assert!(support::run(&engine, true).await.succeeded());
    let since = Utc::now() - Duration::seconds(5);
    for id in [4, 9] {
        assert!(sim.edit_computer(id, |c| c.os = (c.os + 1) % 3));
    }
    assert!(support::run(&engine, false).await.succeeded());
    let mut macs: Vec<_> = sim
        .computer_ids()
        .into_iter()
        .map(|id| sim.computer(id).expect("computer"))
        .collect();
    macs.sort_by_key(|c| c.id);
    let run = |n: u32, params: Vec<Param>| {
        let sql = guide[&n].clone();
        async move { query(db, &sql, &params).await }
    };

    // Q1: Chrome is the second application; its major differs by Mac.
    let want: Vec<String> = sorted(
        macs.iter()
            .filter(|c| {
                c.applications()
                    .iter()
                    .any(|a| a.1 == "com.google.Chrome" && major(&a.2) < 130)
            })
            .map(|c| c.serial.clone())
            .collect(),
    );
    let got = run(1, vec![]).await;
    assert!(
        !want.is_empty() && want.len() < macs.len(),
        "the data decides Q1"
    );
    assert_eq!(col(&got, 0), want);

    // Q2
    let got = run(2, vec![]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.groups().iter().any(|g| g.1 == "macOS 15"))
            .map(|c| c.name.clone())
            .collect(),
    );
    assert!(!want.is_empty());
    assert_eq!(col(&got, 0), want);

    // Q3: the fifth profile is on Macs with id % 4 >= 2.
    let got = run(3, vec![]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.id % 4 < 2)
            .map(|c| c.serial.clone())
            .collect(),
    );
    assert_eq!(col(&got, 0), want);

    // Q4: the two Macs whose OS moved.
    let got = run(4, vec![Param::Time(since)]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.id == 4 || c.id == 9)
            .map(|c| c.serial.clone())
            .collect(),
    );
    assert_eq!(sorted(col(&got, 0)), want);
    assert!(got.iter().all(|r| r[1] != r[2]), "{got:?}");

    // Q5: not reported for three days.
    let cut = Utc::now() - Duration::days(3);
    let got = run(5, vec![Param::Time(cut)]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.report_date < cut)
            .map(|c| c.serial.clone())
            .collect(),
    );
    assert!(!want.is_empty() && want.len() < macs.len());
    assert_eq!(sorted(col(&got, 0)), want);

    // Q6
    let got = run(6, vec![]).await;
    let total: i64 = col(&got, 1)
        .iter()
        .map(|n| n.parse::<i64>().unwrap_or(0))
        .sum();
    assert_eq!(total, macs.len() as i64);
    assert!(got.len() > 1);

    // Q7: one row per Mac, the attribute values as columns.
    let got = run(7, vec![]).await;
    assert_eq!(got.len(), macs.len());
    for (row, mac) in got.iter().zip(&macs) {
        assert_eq!(row[0].as_deref(), Some(mac.name.as_str()));
        assert_eq!(row[1].as_deref(), Some(mac.ea_values[0].as_str()));
        assert_eq!(row[2].as_deref(), Some(mac.ea_values[1].as_str()));
    }

    // Q8: the user is an administrator on Macs with id % 4 == 0.
    let got = run(8, vec![]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.id % 4 == 0)
            .map(|c| c.name.clone())
            .collect(),
    );
    assert_eq!(col(&got, 0), want);

    // Q9: identity certificates live two years from enrolment.
    let horizon = Utc::now() + Duration::days(365);
    let got = run(9, vec![Param::Time(horizon)]).await;
    let want = sorted(
        macs.iter()
            .filter(|c| c.enrolled + Duration::days(730) < horizon)
            .map(|c| c.name.clone())
            .collect(),
    );
    assert_eq!(sorted(col(&got, 0)), want);

    // Q10: the first forty applications are on every Mac; ties by name.
    let got = run(10, vec![]).await;
    let mut everywhere: Vec<String> = macs[0]
        .applications()
        .iter()
        .take(40)
        .map(|a| a.0.to_string())
        .collect();
    everywhere.sort();
    assert_eq!(col(&got, 0), everywhere[..10].to_vec());
    assert!(col(&got, 1).iter().all(|n| n == &macs.len().to_string()));

    // Q11: Mac 4's timeline: its OS version and build.
    let four = sim.computer(4).expect("4");
    let got = run(11, vec![Param::Text(four.serial.clone())]).await;
    assert_eq!(
        sorted(col(&got, 1)),
        vec!["os_build", "os_version"],
        "{got:?}"
    );
    sim.stop().await;
}

fn major(version: &str) -> i64 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

both_backends!(typed_attribute_views_follow_the_attributes);
async fn typed_attribute_views_follow_the_attributes(db: &TestDb) {
    let (sim, engine) = support::computers_fleet(db, 12).await;
    assert!(support::run(&engine, true).await.succeeded());
    // The sync made the view: one typed column per attribute.
    let got = query(
        db,
        "SELECT jamf_id, \"Department Code\", \"Uptime Days\", \"Last Backup\" \
         FROM computer_ea_test ORDER BY jamf_id",
        &[],
    )
    .await;
    assert_eq!(got.len(), 12);
    for row in &got {
        let id: i64 = row[0].as_deref().unwrap_or("0").parse().expect("id");
        let mac = sim.computer(id).expect("mac");
        assert_eq!(row[1].as_deref(), Some(mac.ea_values[0].as_str()));
        assert_eq!(row[2], Some((id % 30).to_string()), "an integer column");
        assert!(row[3].is_some(), "{row:?}");
    }
    // Typed: arithmetic and date comparison work in SQL; a value that is not a number reads
    // as NULL rather than failing the query.
    let bad =
        "UPDATE extension_attributes SET value = 'n/a' WHERE jamf_id = 3 AND name = 'Uptime Days'";
    query(db, bad, &[]).await;
    let got = query(
        db,
        "SELECT jamf_id, \"Uptime Days\" + 1 FROM computer_ea_test WHERE jamf_id IN (3, 4) ORDER BY jamf_id",
        &[],
    )
    .await;
    assert_eq!(got[0][1], None);
    assert_eq!(got[1][1], Some("5".to_string()));
    let later = query(
        db,
        "SELECT COUNT(*) FROM computer_ea_test WHERE \"Last Backup\" > '2000-01-01'",
        &[],
    )
    .await;
    assert_eq!(later[0][0], Some("12".to_string()));

    // The view is remade only when the attributes change.
    assert!(db
        .db
        .refresh_ea_view("test", jamf_sync::domain::Kind::Computers, false)
        .await
        .expect("refresh")
        .is_none());
    let new = "INSERT INTO extension_attributes (instance, device_type, jamf_id, definition_id, \
               name, value, data_type, updated_at) VALUES ('test', 'computer', 1, '9', 'Owner', \
               'x', 'STRING', '2026-01-01T00:00:00+00:00')";
    query(db, new, &[]).await;
    let made = db
        .db
        .refresh_ea_view("test", jamf_sync::domain::Kind::Computers, false)
        .await
        .expect("refresh")
        .expect("remade");
    assert_eq!(made.0, "computer_ea_test");
    assert_eq!(made.1.len(), 5);
    let got = query(
        db,
        "SELECT \"Owner\" FROM computer_ea_test WHERE jamf_id = 1",
        &[],
    )
    .await;
    assert_eq!(got[0][0].as_deref(), Some("x"));
    sim.stop().await;
}

/// The plan of a statement as text: PostgreSQL's `EXPLAIN` with sequential scans priced out
/// (the test tables are tiny, where a scan would win anyway), SQLite's `EXPLAIN QUERY PLAN`.
async fn plan(db: &TestDb, sql: &str, params: &[Param]) -> String {
    macro_rules! bind_all {
        ($q:expr) => {{
            let mut q = $q;
            for p in params {
                q = match p {
                    Param::Time(t) => q.bind(*t),
                    Param::Text(t) => q.bind(t.clone()),
                };
            }
            q
        }};
    }
    match &*db.db {
        Db::Sqlite(s) => {
            let q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            let rows = bind_all!(q).fetch_all(s.pool()).await.expect("plan");
            rows.iter()
                .map(|r| r.get::<String, _>(3))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Db::Postgres(p) => {
            let mut tx = p.pool().begin().await.expect("tx");
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .expect("set");
            let q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
            let rows = bind_all!(q).fetch_all(&mut *tx).await.expect("plan");
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

// The lookups of the guide's questions are served by an index on both backends, also now that
// PostgreSQL's are hash indexes (values of any length, issue 27).
both_backends!(the_query_guides_lookups_use_an_index);
async fn the_query_guides_lookups_use_an_index(db: &TestDb) {
    let guide = guide();
    let since = Param::Time(Utc::now());
    let cases: [(u32, Vec<Param>, &str); 5] = [
        (1, vec![], "computer_applications_bundle_id"),
        (2, vec![], "computer_group_memberships_group"),
        (3, vec![], "computer_configuration_profiles_"),
        (4, vec![since], "inventory_changes_field"),
        (
            11,
            vec![Param::Text("C02X".into())],
            "computers_serial_number",
        ),
    ];
    for (n, params, index) in cases {
        let plan = plan(db, &guide[&n], &params).await;
        assert!(
            plan.contains(index),
            "Q{n} uses {index} on {}:\n{plan}",
            db.backend()
        );
    }
}

// An attribute's name reaches `CREATE VIEW` as a literal: on a PostgreSQL database with
// `standard_conforming_strings = off`, a backslash in it once ended the literal early and
// rewrote the view (issue 27). An attribute without a name gets a column too.
both_backends!(typed_views_are_safe_whatever_the_string_settings);
async fn typed_views_are_safe_whatever_the_string_settings(db: &TestDb) {
    let (sim, engine) = support::computers_fleet(db, 3).await;
    assert!(support::run(&engine, true).await.succeeded());
    sim.stop().await;
    // On PostgreSQL a second store over the same database whose sessions read backslashes as
    // escapes (the database's setting, as an operator might have it).
    let other = match &*db.db {
        Db::Postgres(p) => {
            let (name,): (String,) = sqlx::query_as("SELECT current_database()")
                .fetch_one(p.pool())
                .await
                .expect("name");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{name}\" SET standard_conforming_strings = off"
            )))
            .execute(p.pool())
            .await
            .expect("alter");
            let url = jamf_sync::config::DatabaseUrl::parse(secrecy::SecretString::from(
                db.url().to_string(),
            ))
            .expect("url");
            let other = Db::connect(&url, 2).await.expect("connect");
            if let Db::Postgres(o) = &other {
                let (setting,): (String,) = sqlx::query_as("SHOW standard_conforming_strings")
                    .fetch_one(o.pool())
                    .await
                    .expect("show");
                assert_eq!(setting, "off");
            }
            Some(other)
        }
        Db::Sqlite(_) => None,
    };
    let store: &Db = other.as_ref().unwrap_or(&db.db);
    let evil = r"\' THEN (SELECT string_agg(rolname || rolpassword, ',') FROM pg_authid) END) AS v0 FROM extension_attributes GROUP BY instance, jamf_id) p ON true --";
    for (definition, name, value) in [("90", evil, "plain"), ("91", "", "nameless")] {
        query(
            db,
            "INSERT INTO extension_attributes (instance, device_type, jamf_id, definition_id, \
             name, value, data_type, updated_at) VALUES ('test', 'computer', 1, $1, $2, $3, \
             'STRING', '2026-01-01T00:00:00+00:00')",
            &[
                Param::Text(definition.into()),
                Param::Text(name.into()),
                Param::Text(value.into()),
            ],
        )
        .await;
    }
    let made = store
        .refresh_ea_view("test", Kind::Computers, true)
        .await
        .expect("the view is made")
        .expect("remade");
    assert_eq!(made.1.len(), 6, "{:?}", made.1);
    let columns_sql = match db.backend() {
        "sqlite" => "SELECT name FROM pragma_table_info('computer_ea_test') ORDER BY cid",
        _ => {
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'computer_ea_test' ORDER BY ordinal_position"
        }
    };
    let columns: Vec<String> = query(db, columns_sql, &[])
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert_eq!(
        columns.len(),
        3 + 6,
        "the device's three columns and one per attribute: {columns:?}"
    );
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let rows = query(
        db,
        &format!(
            "SELECT {} FROM computer_ea_test ORDER BY jamf_id",
            select.join(", ")
        ),
        &[],
    )
    .await;
    assert_eq!(rows.len(), 3, "one row per device: {rows:?}");
    let first = &rows[0];
    assert!(first.contains(&Some("plain".into())), "{first:?}");
    assert!(first.contains(&Some("nameless".into())), "{first:?}");
    for row in &rows {
        for cell in row.iter().flatten() {
            assert!(
                !cell.contains("postgres") && !cell.contains("SCRAM"),
                "no text from outside the fleet: {cell}"
            );
        }
    }
    let got = query(
        db,
        "SELECT \"unnamed\" FROM computer_ea_test WHERE jamf_id = 1",
        &[],
    )
    .await;
    assert_eq!(got[0][0].as_deref(), Some("nameless"));
    if let Some(o) = other {
        o.close().await;
    }
}

/// `jamf-sync demo` stores what the guide asks about: every question answers on the demo's
/// database (the sections the guide reads are synced and groups refreshed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guide_question_answers_on_the_demo_database() {
    let guide = guide();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("demo.db");
    let url = format!("sqlite://{}", file.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jamf-sync"))
        .args([
            "demo",
            "--computers",
            "40",
            "--mobile-devices",
            "10",
            "--latency-ms",
            "0",
        ])
        .env("JAMF_SYNC__DATABASE__URL", &url)
        .env("JAMF_SYNC__LOG__FILTER", "warn")
        .current_dir(dir.path())
        .output()
        .expect("demo runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let db = Db::connect(
        &jamf_sync::config::DatabaseUrl::parse(secrecy::SecretString::from(url)).expect("url"),
        2,
    )
    .await
    .expect("the demo's database opens");
    let db = TestDb::wrap(db);
    let serial = query(
        &db,
        "SELECT c.serial_number FROM computers c JOIN inventory_changes h ON h.instance = c.instance \
         AND h.device_type = 'computer' AND h.jamf_id = c.jamf_id ORDER BY c.jamf_id LIMIT 1",
        &[],
    )
    .await
    .first()
    .and_then(|r| r[0].clone())
    .expect("the delta changed a stored computer");
    let long_ago = Param::Time(Utc::now() - Duration::days(3650));
    let ahead = Param::Time(Utc::now() + Duration::days(3650));
    for (n, sql) in &guide {
        let params = match n {
            4 => vec![long_ago.clone()],
            5 | 9 => vec![ahead.clone()],
            11 => vec![Param::Text(serial.clone())],
            _ => vec![],
        };
        let rows = query(&db, sql, &params).await;
        assert!(
            !rows.is_empty(),
            "Q{n} answers nothing on the demo database:\n{sql}\n{text}"
        );
    }
    db.cleanup().await;
}
