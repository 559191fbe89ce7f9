//! Full and delta syncs over real HTTP into real databases.

use jamf_sync::config::FetchStrategy;
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{Faults, SimConfig};
use jamf_sync::store::Store;

use crate::support::{self, TestDb};

const INVENTORY: &str = "/api/v4/computers-inventory";
const DETAIL: &str = "/api/v4/computers-inventory-detail/{id}";

both_backends!(full_then_delta_inline);
async fn full_then_delta_inline(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 2000,
        ..SimConfig::default()
    })
    .await;
    // Pacing at full width from the start: the one-record pages of a cold ramp are
    // `pacing.rs`'s business; this test counts the spans' pages.
    let mut settings = support::settings(&sim);
    settings.pacing.initial_limit = 5;
    let engine = support::engine(db, settings, support::sync_cfg(100, FetchStrategy::Inline));

    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.mode, "full");
    assert_eq!(first.counts.listed, 2000);
    assert_eq!(first.counts.upserted, 2000);
    // 2000 computers at 100 a page, nothing stored yet: the probe for the highest id and the
    // count, then the 20 pages in five spans of whole pages: no part-filled or empty page.
    assert_eq!(sim.requests_to(INVENTORY), 21);
    assert!(sim.stats().peak_in_flight >= 2, "spans were read at once");
    support::assert_matches_sim(db, &sim).await;
    let eas = db
        .db
        .extension_attributes("test", Kind::Computers)
        .await
        .expect("eas");
    assert_eq!(eas.len(), 8000, "four extension attributes per computer");
    let c1 = sim.computer(1).expect("computer 1");
    assert!(eas.contains(&(1, "Battery Health".into(), Some(c1.ea_values[1].clone()))));
    let cursor1 = support::cursor(db).await.expect("cursor after success");

    // 5% of the fleet submits inventory.
    sim.reset_stats();
    let changed = sim.touch_random(100);
    let second = support::run(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    assert_eq!(second.mode, "delta");
    assert_eq!(second.counts.listed, 100, "only changed devices are listed");
    assert_eq!(second.counts.upserted, 100);
    assert_eq!(sim.requests_to(INVENTORY), 1, "one page covers 100 changes");
    assert_eq!(sim.requests_to(DETAIL), 0);
    support::assert_matches_sim(db, &sim).await;
    // A changed device's attributes are replaced, not added to: the old value is gone.
    let eas = db
        .db
        .extension_attributes("test", Kind::Computers)
        .await
        .expect("eas");
    assert_eq!(eas.len(), 8000, "still four per computer");
    let touched = sim.computer(changed[0]).expect("touched computer");
    let mine: Vec<_> = eas.iter().filter(|e| e.0 == changed[0]).collect();
    assert_eq!(mine.len(), 4, "{mine:?}");
    assert!(
        mine.contains(&&(
            changed[0],
            "Battery Health".into(),
            Some(touched.ea_values[1].clone())
        )),
        "{mine:?}"
    );
    let cursor2 = support::cursor(db).await.expect("cursor");
    assert!(
        cursor2 > cursor1,
        "cursor moves forward after a successful run"
    );

    // A changed device's `changed_at` moved, an unchanged one's did not.
    let rows = support::stored(db).await;
    let moved = rows.iter().find(|r| r.jamf_id == changed[0]).expect("row");
    assert!(moved.changed_at > moved.first_seen_at);
    let still = rows
        .iter()
        .find(|r| !changed.contains(&r.jamf_id))
        .expect("an unchanged row");
    assert_eq!(still.changed_at, still.first_seen_at);

    // Nothing changed: a delta lists nothing, writes nothing.
    // Nothing changed since: the delta re-reads only the overlap window (the devices that
    // reported within the last hour) and writes nothing.
    let third = support::run(&engine, false).await;
    assert!(third.succeeded());
    assert_eq!(third.counts.listed, 100, "{third}");
    assert_eq!(third.counts.upserted, 0, "{third}");
    assert_eq!(third.counts.unchanged, 100, "{third}");
    // A forced full run sees everything unchanged: the upsert is idempotent.
    let full = support::run(&engine, true).await;
    assert_eq!(full.counts.unchanged, 2000, "{full}");
    assert_eq!(full.counts.upserted, 0);
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        2000
    );
    sim.stop().await;
}

both_backends!(full_then_delta_detail);
async fn full_then_delta_detail(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 600,
        latency_ms: 2,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.counts.fetched, 600);
    assert_eq!(
        sim.requests_to(DETAIL),
        600,
        "one detail request per device"
    );
    support::assert_matches_sim(db, &sim).await;
    let stats = sim.stats();
    assert!(
        stats.peak_in_flight <= 5,
        "peak in flight {}",
        stats.peak_in_flight
    );
    assert!(
        stats.peak_in_flight >= 3,
        "the pool should use its connections: {}",
        stats.peak_in_flight
    );
    assert!(
        stats.peak_connections <= 5,
        "peak connections {}",
        stats.peak_connections
    );

    sim.reset_stats();
    sim.touch_random(30);
    let second = support::run(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    assert_eq!(
        sim.requests_to(DETAIL),
        30,
        "the delta fetches only the changed devices"
    );
    assert_eq!(second.counts.upserted, 30);
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

both_backends!(failed_run_keeps_cursor);
async fn failed_run_keeps_cursor(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 500,
        ..SimConfig::default()
    })
    .await;
    let mut settings = support::settings(&sim);
    settings.retry.budget_secs = 1;
    let engine = support::engine(db, settings, support::sync_cfg(20, FetchStrategy::Inline));
    assert!(support::run(&engine, false).await.succeeded());
    let cursor = support::cursor(db).await;
    assert!(cursor.is_some());

    sim.touch_random(200);
    // The server goes down after a few pages and stays down past the retry budget.
    sim.set_faults(Faults {
        outage_after: 3,
        outage_requests: 1_000_000,
        ..Faults::default()
    });
    let failed = support::run(&engine, false).await;
    assert!(!failed.succeeded(), "{failed}");
    assert!(
        failed.error.as_deref().unwrap_or("").contains("503"),
        "{failed}"
    );
    assert!(
        failed.counts.upserted > 0,
        "pages before the outage were committed: {failed}"
    );
    assert!(failed.counts.upserted < 200);
    assert_eq!(
        support::cursor(db).await,
        cursor,
        "a failed run never moves the cursor"
    );
    let run = support::last_run(db).await;
    assert_eq!(run.status, "failed");
    assert!(run.cursor_after.is_none());

    // The server recovers: the next run redoes the whole window, without duplicates.
    sim.set_faults(Faults::default());
    let redo = support::run(&engine, false).await;
    assert!(redo.succeeded(), "{redo}");
    assert_eq!(redo.counts.listed, 200, "the whole window is read again");
    assert_eq!(
        redo.counts.upserted + failed.counts.upserted,
        200,
        "records committed by the failed run are unchanged now"
    );
    assert!(support::cursor(db).await > cursor);
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        500
    );
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

both_backends!(inventory_during_sync);
/// Devices submit inventory while the run pages: none is skipped, none is read twice, and the
/// next run picks up what arrived behind the keyset position.
async fn inventory_during_sync(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 1000,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(10, FetchStrategy::Inline),
    );
    assert!(support::run(&engine, false).await.succeeded());

    let before: Vec<(i64, i64)> = sim
        .touch_random(150)
        .into_iter()
        .map(|id| {
            (
                id,
                sim.computer(id).expect("c").report_date.timestamp_millis(),
            )
        })
        .collect();
    // Every served page makes 7 more devices report: they enter the delta window mid-run,
    // some behind the keyset position, some ahead of it.
    sim.set_churn_per_page(7);
    let during = support::run(&engine, false).await;
    assert!(during.succeeded(), "{during}");
    assert_eq!(
        during.counts.listed,
        during.counts.upserted + during.counts.unchanged,
        "no device was listed twice: {during}"
    );
    assert!(during.counts.listed >= 150, "{during}");
    let rows = support::stored(db).await;
    for (id, reported) in &before {
        let row = rows.iter().find(|r| r.jamf_id == *id).expect("row");
        let stored = row.as_of.expect("report date").timestamp_millis();
        assert!(
            stored >= *reported,
            "device {id} reported before the run started but was skipped ({})",
            db.backend()
        );
    }

    // Churn stops; the next delta (overlap from the last run's start) catches the rest.
    sim.set_churn_per_page(0);
    let after = support::run(&engine, false).await;
    assert!(after.succeeded(), "{after}");
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

// PostgreSQL commits up to two writes of a run at once (`Store::concurrent_writes`), so they
// may commit in any order: each adds its own counts to the run's row.
both_backends!(writes_committed_in_any_order_add_up_in_the_run);
async fn writes_committed_in_any_order_add_up_in_the_run(db: &TestDb) {
    use jamf_sync::config::HistoryConfig;
    use jamf_sync::domain::{RunCounts, RunKind, Trigger};
    use jamf_sync::store::{NewRun, Progress, Write};

    let now = chrono::Utc::now();
    let run_id = db
        .db
        .start_run(&NewRun {
            instance: "test",
            kind: RunKind::Sync(Kind::Computers),
            trigger: Trigger::Cli,
            mode: "full",
            started_at: now,
            cursor_before: None,
        })
        .await
        .expect("run");
    let computers = |ids: std::ops::RangeInclusive<i64>| -> Vec<_> {
        ids.map(|id| {
            let raw = format!(
                r#"{{"id":"{id}","general":{{"name":"mac-{id}","reportDate":"2026-12-01T10:00:00Z"}}}}"#
            );
            let raw = serde_json::value::RawValue::from_string(raw).expect("json");
            jamf_sync::jamf::decode::computer(&raw, now).expect("record")
        })
        .collect()
    };
    let history = HistoryConfig::default();
    let (low, high) = (computers(1..=3), computers(4..=5));
    let progress = |n: i64, last: i64| Progress {
        run_id,
        counts: RunCounts {
            listed: n,
            fetched: n,
            ..RunCounts::default()
        },
        last_id: Some(last),
    };
    let (p_low, p_high) = (progress(3, 3), progress(2, 5));
    let write = |records, progress| Write {
        progress: Some(progress),
        ..Write::guarded("test", records, &history)
    };
    // The later page first, then both at once: the sums are the same in any order.
    db.db
        .write_devices(write(&high, &p_high))
        .await
        .expect("write");
    db.db
        .write_devices(write(&low, &p_low))
        .await
        .expect("write");
    let (again_low, again_high) = tokio::join!(
        db.db.write_devices(write(&low, &p_low)),
        db.db.write_devices(write(&high, &p_high)),
    );
    again_low.expect("write");
    again_high.expect("write");
    let run = support::last_run(db).await;
    assert_eq!(run.id, run_id);
    assert_eq!(
        (
            run.counts.listed,
            run.counts.fetched,
            run.counts.upserted,
            run.counts.unchanged
        ),
        (10, 10, 5, 5),
        "{run:?}"
    );
    assert_eq!(support::stored(db).await.len(), 5);
}
