//! One shape per device kind, one writer where newer data wins: every path that stores a
//! device (sync page, webhook refresh, reconcile) stores the same JSON shape, and no write puts
//! an older copy back, whatever order concurrent writers commit in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jamf_sync::config::{FetchStrategy, MobileDevicesConfig, MobileSource, ReconcileConfig};
use jamf_sync::domain::{Kind, Trigger};
use jamf_sync::simulator::webhooks::{envelope, SimEvent, WebhookFormat};
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::{Db, Store};
use jamf_sync::sync::reconcile::ReconcileOptions;
use jamf_sync::sync::{Engine, SyncOptions};

use crate::support::daemon::spawn_app;
use crate::support::{self, TestDb};

const COMPUTER_PAGES: &str = "/api/v4/computers-inventory";
const MOBILE_PAGES: &str = "/api/v2/mobile-devices/detail";

fn mobile_engine(db: &TestDb, sim: &Simulator, source: MobileSource) -> Engine<Db> {
    support::engine(
        db,
        support::settings(sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    )
    .with_mobile(MobileDevicesConfig {
        source,
        ..MobileDevicesConfig::default()
    })
}

/// A simulator with `computers` computers, an inline engine over `db`, one full sync done.
async fn synced_computers(db: &TestDb, computers: usize) -> (Simulator, Engine<Db>) {
    let sim = support::sim(SimConfig {
        computers,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    assert!(support::run(&engine, true).await.succeeded());
    (sim, engine)
}

/// Waits until the simulator has received `n` requests for `endpoint`.
async fn wait_requests(sim: &Simulator, endpoint: &str, n: u64) {
    let started = Instant::now();
    while sim.requests_to(endpoint) < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no request to {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a full sync of `kind` and returns once its first list page has been read by the
/// simulator (and is being delayed on its way back): whatever changes in Jamf from now on,
/// that page carries the device as it was.
async fn start_slow_sync(
    engine: &Arc<Engine<Db>>,
    sim: &Simulator,
    kind: Kind,
    pages: &str,
) -> tokio::task::JoinHandle<jamf_sync::sync::RunSummary> {
    let before = sim.requests_to(pages);
    // 100 records × 4-5 sections × 5 ms: the first page takes two seconds or more to arrive.
    sim.set_per_record_section_us(5000);
    let e = engine.clone();
    let sync = tokio::spawn(async move {
        e.sync(kind, SyncOptions::new(true, Trigger::Cli))
            .await
            .expect("store must not fail")
    });
    wait_requests(sim, pages, before + 1).await;
    // The simulator reads the page at once, then sleeps: let it read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sync
}

fn millis(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

both_backends!(a_slow_sync_page_never_puts_an_older_record_back);
async fn a_slow_sync_page_never_puts_an_older_record_back(db: &TestDb) {
    let (sim, engine) = synced_computers(db, 120).await;
    let engine = Arc::new(engine);
    let id = 42;
    let sync = start_slow_sync(&engine, &sim, Kind::Computers, COMPUTER_PAGES).await;
    // Meanwhile the device submits inventory and a webhook refresh stores it.
    sim.touch_ids(&[id]);
    let newer = sim.computer(id).expect("device").report_date;
    let done = engine
        .refresh(Kind::Computers, &[id])
        .await
        .expect("refresh");
    assert_eq!((done.stored.as_slice(), done.upserted), (&[id][..], 1));
    let stored = || support::stored_device(db, Kind::Computers, id);
    assert_eq!(millis(stored().await.as_of), millis(Some(newer)));
    // The page read before the refresh commits after it: the newer record stays.
    let summary = sync.await.expect("sync task");
    assert!(summary.succeeded(), "{summary}");
    assert!(!sync_page_was_fast(&summary), "{summary}");
    assert_eq!(summary.counts.stale, 1, "{summary}");
    assert_eq!(
        millis(stored().await.as_of),
        millis(Some(newer)),
        "report date went backwards ({})",
        db.backend()
    );
    sim.set_per_record_section_us(0);
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

/// The slow page really was slow (the test's interleaving happened as designed).
fn sync_page_was_fast(summary: &jamf_sync::sync::RunSummary) -> bool {
    summary.elapsed < Duration::from_millis(1500)
}

both_backends!(an_unenroll_refreshed_after_an_older_page_stays);
async fn an_unenroll_refreshed_after_an_older_page_stays(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 150,
        ..SimConfig::default()
    })
    .await;
    let engine = Arc::new(mobile_engine(db, &sim, MobileSource::ProApi));
    assert!(support::run_mobile(&engine, true).await.succeeded());
    let id = sim
        .mobile_ids()
        .into_iter()
        .take(100)
        .find(|id| sim.mobile(*id).is_some_and(|m| m.managed))
        .expect("a managed device on the first page");
    let sync = start_slow_sync(&engine, &sim, Kind::MobileDevices, MOBILE_PAGES).await;
    // Unenrolled in Jamf (no new inventory time); the event's refresh stores it unmanaged.
    assert!(sim.unenroll_mobile(id));
    let done = engine
        .refresh(Kind::MobileDevices, &[id])
        .await
        .expect("refresh");
    assert_eq!(done.upserted, 1);
    let managed = || async {
        support::stored_device(db, Kind::MobileDevices, id)
            .await
            .info
            .managed
    };
    assert_eq!(managed().await, Some(false));
    // The page read while the device was still managed commits last: it must not win.
    let summary = sync.await.expect("sync task");
    assert!(summary.succeeded(), "{summary}");
    assert!(!sync_page_was_fast(&summary), "{summary}");
    assert_eq!(summary.counts.stale, 1, "{summary}");
    assert_eq!(
        managed().await,
        Some(false),
        "an older page undid the unenroll ({})",
        db.backend()
    );
    sim.set_per_record_section_us(0);
    support::assert_mobiles_match_sim(db, &sim).await;
    sim.stop().await;
}

/// `(jamf_id, changed_at, raw_hash)` of every stored device of a kind.
async fn fingerprint(db: &TestDb, instance: &str, kind: Kind) -> Vec<(i64, DateTime<Utc>, i64)> {
    match kind {
        Kind::Computers => db
            .db
            .devices(instance, Kind::Computers)
            .await
            .expect("rows")
            .into_iter()
            .map(|c| (c.jamf_id, c.changed_at, c.raw_hash))
            .collect(),
        Kind::MobileDevices => db
            .db
            .devices(instance, Kind::MobileDevices)
            .await
            .expect("rows")
            .into_iter()
            .map(|m| (m.jamf_id, m.changed_at, m.raw_hash))
            .collect(),
    }
}

both_backends!(reconcile_and_refresh_of_an_unchanged_fleet_change_nothing);
async fn reconcile_and_refresh_of_an_unchanged_fleet_change_nothing(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 120,
        mobile_devices: 60,
        ..SimConfig::default()
    })
    .await;
    let cases = [
        (
            Kind::Computers,
            FetchStrategy::Inline,
            MobileSource::AdvancedSearch,
        ),
        (
            Kind::Computers,
            FetchStrategy::Detail,
            MobileSource::AdvancedSearch,
        ),
        (
            Kind::MobileDevices,
            FetchStrategy::Inline,
            MobileSource::AdvancedSearch,
        ),
        (
            Kind::MobileDevices,
            FetchStrategy::Inline,
            MobileSource::ProApi,
        ),
    ];
    // Each case is an instance of its own in the database: one case's shape never meets
    // another's.
    for (i, (kind, strategy, source)) in cases.into_iter().enumerate() {
        let what = format!("{kind:?} {strategy:?} {source:?} ({})", db.backend());
        let instance = format!("case{i}");
        let mut settings = support::settings(&sim);
        settings.instance = instance.clone();
        let engine = support::engine(db, settings, support::sync_cfg(100, strategy))
            .with_mobile(MobileDevicesConfig {
                source,
                ..MobileDevicesConfig::default()
            })
            .with_reconcile(ReconcileConfig::default());
        let first = engine
            .sync(kind, SyncOptions::new(true, Trigger::Cli))
            .await
            .expect("sync");
        assert!(first.succeeded(), "{what}: {first}");
        let before = fingerprint(db, &instance, kind).await;
        assert!(!before.is_empty());
        // A listing glitch hides one device: reconcile keeps it (it still answers) and
        // writes what its source fetches for it, if anything.
        let hidden = 7 + i as i64;
        match kind {
            Kind::Computers => sim.unlist_computer(hidden),
            Kind::MobileDevices => sim.unlist_mobile(hidden),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r = engine
            .reconcile(
                kind,
                ReconcileOptions {
                    dry_run: false,
                    force: false,
                    trigger: Trigger::Cli,
                },
            )
            .await
            .expect("reconcile");
        assert!(r.succeeded(), "{what}: {r}");
        assert_eq!((r.candidates, r.kept, r.deleted), (1, 1, 0), "{what}: {r}");
        // A webhook refresh of unchanged devices.
        let ids: Vec<i64> = before.iter().take(30).map(|(id, _, _)| *id).collect();
        let done = engine.refresh(kind, &ids).await.expect("refresh");
        assert_eq!(done.upserted, 0, "{what}: {done:?}");
        assert_eq!(
            fingerprint(db, &instance, kind).await,
            before,
            "{what}: changed_at or raw_hash moved though nothing changed in Jamf"
        );
    }
    sim.stop().await;
}

both_backends!(a_reconcile_long_after_a_sync_has_its_own_deadline);
async fn a_reconcile_long_after_a_sync_has_its_own_deadline(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 50,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = support::sync_cfg(100, FetchStrategy::Inline);
    cfg.run_deadline_secs = 1;
    let engine = support::engine(db, support::settings(&sim), cfg);
    assert!(support::run(&engine, true).await.succeeded());
    // The daemon's engine lives on; the next run comes more than a deadline later.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = engine
        .reconcile(
            Kind::Computers,
            ReconcileOptions {
                dry_run: false,
                force: false,
                trigger: Trigger::Schedule,
            },
        )
        .await
        .expect("reconcile");
    assert!(r.succeeded(), "{r}");
    assert!(support::run(&engine, false).await.succeeded());
    sim.stop().await;
}

both_backends!(overwrite_writes_what_a_restored_jamf_says);
async fn overwrite_writes_what_a_restored_jamf_says(db: &TestDb) {
    let (sim, engine) = synced_computers(db, 30).await;
    // Jamf restored from a backup: a device's record is a day older than the stored copy.
    let mut c = sim.take_computer(5).expect("device");
    c.report_date -= chrono::Duration::days(1);
    c.name = "restored".into();
    let restored = c.report_date;
    sim.put_computer(c);
    let row = || support::stored_device(db, Kind::Computers, 5);
    let plain = support::run(&engine, true).await;
    assert!(plain.succeeded(), "{plain}");
    assert_eq!(plain.counts.stale, 1, "{plain}");
    assert_ne!(row().await.info.name.as_deref(), Some("restored"));
    let forced = engine
        .sync(
            Kind::Computers,
            SyncOptions {
                full: true,
                trigger: Trigger::Cli,
                overwrite: true,
            },
        )
        .await
        .expect("sync");
    assert!(forced.succeeded(), "{forced}");
    assert_eq!(
        (forced.counts.stale, forced.counts.upserted),
        (0, 1),
        "{forced}"
    );
    let now = row().await;
    assert_eq!(now.info.name.as_deref(), Some("restored"));
    assert_eq!(millis(now.as_of), millis(Some(restored)));
    sim.stop().await;
}

both_backends!(a_forged_unenroll_event_leaves_jamfs_value);
async fn a_forged_unenroll_event_leaves_jamfs_value(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 5,
        mobile_devices: 20,
        ..SimConfig::default()
    })
    .await;
    let d = spawn_app(
        &sim,
        db.url(),
        &[
            ("JAMF_SYNC__JAMF__INSTANCE", "test"),
            ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
            ("JAMF_SYNC__WEBHOOKS__USERNAME", "hooks"),
            ("JAMF_SYNC__WEBHOOKS__PASSWORD", "hook-password"),
            ("JAMF_SYNC__WEBHOOKS__COALESCE_MS", "50"),
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 3 1 1 *"),
            ("JAMF_SYNC__RECONCILE__ENABLED", "false"),
        ],
    )
    .await;
    d.wait_ready(30).await;
    d.wait_for(30, "the start-up syncs", || async {
        let s = d.status().await;
        s["kinds"][0]["last_success"]["status"] == "succeeded"
            && s["kinds"][1]["last_success"]["status"] == "succeeded"
    })
    .await;
    let id = sim
        .mobile_ids()
        .into_iter()
        .find(|id| sim.mobile(*id).is_some_and(|m| m.managed))
        .expect("a managed device");
    let m = sim.mobile(id).expect("device");
    // Someone with the webhook credentials replays an unenroll Jamf never sent.
    let (body, ct) = envelope(
        &SimEvent {
            name: "MobileDeviceUnEnrolled",
            jss_id: id,
            udid: m.udid,
            serial: m.serial,
            device_name: m.name,
        },
        WebhookFormat::Json,
        1,
    );
    let code = d
        .http
        .post(format!("{}/webhooks/jamf", d.base))
        .basic_auth("hooks", Some("hook-password"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .expect("post");
    assert_eq!(code, 202);
    d.wait_for(30, "the event to be handled", || async {
        d.status().await["webhooks"]["queue_depth"] == 0
    })
    .await;
    let stored = db
        .db
        .devices("test", Kind::MobileDevices)
        .await
        .expect("rows");
    let row = stored.iter().find(|r| r.jamf_id == id).expect("stored");
    assert_eq!(row.info.managed, Some(true), "the copy says what Jamf says");
    assert!(row.deleted_at.is_none());
    d.stop().await.expect("clean shutdown");
    sim.stop().await;
}

both_backends!(a_refresh_marks_deleted_only_what_jamf_answers_404_for);
async fn a_refresh_marks_deleted_only_what_jamf_answers_404_for(db: &TestDb) {
    let (sim, engine) = synced_computers(db, 20).await;
    // 3 is deleted in Jamf; 4 is only hidden from lists (its record still answers).
    assert!(sim.delete_computer(3));
    sim.unlist_computer(4);
    let done = engine
        .refresh(Kind::Computers, &[3, 4, 5])
        .await
        .expect("refresh");
    assert_eq!(done.stored, vec![5]);
    assert_eq!(done.missing, vec![3], "{done:?}");
    let deleted: Vec<i64> = db
        .db
        .device_ids("test", Kind::Computers)
        .await
        .expect("ids")
        .into_iter()
        .filter(|(_, deleted)| *deleted)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        deleted,
        vec![3],
        "only the 404 is marked deleted ({})",
        db.backend()
    );
    sim.stop().await;
}
