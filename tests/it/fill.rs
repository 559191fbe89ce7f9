//! First fills: a full sync that finds a child table empty sets its secondary indexes aside
//! and builds them when its run ends, whatever the end; indexes a crash left aside are built
//! at the next start, and those of a run still going are left to it.

use chrono::Utc;
use jamf_sync::domain::{Kind, RunCounts, RunKind, RunStatus, Trigger};
use jamf_sync::store::{NewRun, RunEnd, Store};

use crate::support::TestDb;

/// Explicit indexes in the database.
async fn indexes(db: &TestDb) -> i64 {
    let sql = match db.backend() {
        "sqlite" => "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
        _ => "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()",
    };
    db.scalar(sql).await.expect("index count")
}

async fn set_aside(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM deferred_indexes")
        .await
        .expect("deferred_indexes")
}

async fn start(db: &TestDb, mode: &str) -> i64 {
    db.db
        .start_run(&NewRun {
            instance: "test",
            kind: RunKind::Sync(Kind::Computers),
            trigger: Trigger::Cli,
            mode,
            started_at: Utc::now(),
            cursor_before: None,
        })
        .await
        .expect("run")
}

async fn finish(db: &TestDb, run_id: i64, status: RunStatus) {
    db.db
        .finish_run(&RunEnd {
            run_id,
            instance: "test",
            kind: RunKind::Sync(Kind::Computers),
            status,
            counts: RunCounts::default(),
            error: None,
            cursor_after: None,
            finished_at: Utc::now(),
            clock_offset_ms: None,
        })
        .await
        .expect("finish");
}

both_backends!(a_first_fill_sets_indexes_aside_until_its_run_ends);
async fn a_first_fill_sets_indexes_aside_until_its_run_ends(db: &TestDb) {
    let all = indexes(db).await;
    let run = start(db, "full").await;
    let aside = set_aside(db).await;
    assert!(
        aside > 0,
        "the empty child tables' B-tree indexes ({})",
        db.backend()
    );
    assert_eq!(indexes(db).await, all - aside, "dropped as recorded");
    // The application index the update query relies on is among them on SQLite; the device
    // index never is.
    let device = db
        .scalar("SELECT count(*) FROM deferred_indexes WHERE name LIKE '%\\_device' ESCAPE '\\'")
        .await
        .expect("device");
    assert_eq!(device, 0);
    // A failed run ends the fill too.
    finish(db, run, RunStatus::Failed).await;
    assert_eq!(set_aside(db).await, 0);
    assert_eq!(indexes(db).await, all, "every index is back");

    // A delta sets nothing aside, nor does a full sync once the table has a row.
    let delta = start(db, "delta").await;
    assert_eq!(set_aside(db).await, 0, "a delta");
    finish(db, delta, RunStatus::Succeeded).await;
    db.execute(
        "INSERT INTO computer_applications (instance, jamf_id, name) VALUES ('other', 1, 'Safari')",
        None,
    )
    .await
    .expect("row");
    let full = start(db, "full").await;
    let left = db
        .scalar("SELECT count(*) FROM deferred_indexes WHERE table_name = 'computer_applications'")
        .await
        .expect("left");
    assert_eq!(
        left, 0,
        "a table with another instance's rows keeps its indexes"
    );
    finish(db, full, RunStatus::Succeeded).await;
    assert_eq!(indexes(db).await, all);
}

both_backends!(indexes_a_crash_left_aside_are_built_at_the_next_start);
async fn indexes_a_crash_left_aside_are_built_at_the_next_start(db: &TestDb) {
    let all = indexes(db).await;
    let crashed = start(db, "full").await;
    let aside = set_aside(db).await;
    assert!(aside > 0);
    // Still running (another process's fill, as far as a start-up can tell): left alone.
    db.db.migrate().await.expect("migrate");
    assert_eq!(
        set_aside(db).await,
        aside,
        "a running fill keeps its indexes aside"
    );
    // The process died; the next one marked its run interrupted.
    db.execute(
        &format!("UPDATE sync_runs SET status = 'interrupted' WHERE id = {crashed}"),
        None,
    )
    .await
    .expect("interrupted");
    db.db.migrate().await.expect("migrate");
    assert_eq!(set_aside(db).await, 0);
    assert_eq!(indexes(db).await, all, "built again at start-up");
}
