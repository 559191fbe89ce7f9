//! Reconcile: deletions in Jamf are found, confirmed and applied safely.

use jamf_sync::config::{FetchStrategy, OnMissing, ReconcileConfig};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{Faults, SimConfig, Simulator};
use jamf_sync::store::{Db, Store};
use jamf_sync::sync::Engine;

use crate::support::{self, TestDb};

fn engine(db: &TestDb, sim: &Simulator, cfg: ReconcileConfig) -> Engine<Db> {
    let mut settings = support::settings(sim);
    settings.retry.budget_secs = 1;
    support::engine(db, settings, support::sync_cfg(100, FetchStrategy::Inline)).with_reconcile(cfg)
}

use support::reconcile;

async fn deleted_ids(db: &TestDb, kind: Kind) -> Vec<i64> {
    db.db
        .device_ids("test", kind)
        .await
        .expect("ids")
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(id, _)| id)
        .collect()
}

both_backends!(marks_exactly_the_deleted_devices);
async fn marks_exactly_the_deleted_devices(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 1000,
        mobile_devices: 200,
        ..SimConfig::default()
    })
    .await;
    let e = engine(db, &sim, ReconcileConfig::default());
    assert!(support::run(&e, false).await.succeeded());
    assert!(support::run_mobile(&e, false).await.succeeded());
    // 3% of each kind disappears from Jamf.
    let gone: Vec<i64> = (1..=30).map(|i| i * 31).collect();
    for id in &gone {
        assert!(sim.delete_computer(*id));
    }
    let gone_mobile: Vec<i64> = vec![3, 50, 77, 120, 150, 199];
    for id in &gone_mobile {
        assert!(sim.delete_mobile(*id));
    }
    // A device Jamf got with an old report date: no delta will ever list it.
    let hidden = sim.add_computer(chrono::Duration::days(40));
    assert!(support::run(&e, false).await.succeeded());
    assert!(!support::stored(db)
        .await
        .iter()
        .any(|r| r.jamf_id == hidden));

    // Dry run: the same counts, nothing written.
    let dry = reconcile(&e, Kind::Computers, true, false).await;
    assert!(dry.succeeded(), "{dry}");
    assert_eq!(
        (dry.candidates, dry.deleted, dry.missed_fetched),
        (30, 30, 1),
        "{dry}"
    );
    assert!(deleted_ids(db, Kind::Computers).await.is_empty());
    assert!(dry.run_id.is_none());
    assert!(!db
        .db
        .recent_runs("test", 50)
        .await
        .expect("runs")
        .iter()
        .any(|r| r.kind == "reconcile"));

    let real = reconcile(&e, Kind::Computers, false, false).await;
    assert!(real.succeeded(), "{real}");
    assert_eq!(
        (
            real.candidates,
            real.deleted,
            real.missed_fetched,
            real.refused
        ),
        (30, 30, 1, 0)
    );
    assert_eq!(deleted_ids(db, Kind::Computers).await, gone);
    assert!(
        support::stored(db)
            .await
            .iter()
            .any(|r| r.jamf_id == hidden),
        "missed device fetched"
    );
    let run = support::last_run(db).await;
    assert_eq!(
        (run.kind.as_str(), run.mode.as_str(), run.status.as_str()),
        ("reconcile", "computers", "succeeded")
    );
    assert_eq!(run.counts.missing, 30);
    // The rows and their history stay, marked.
    assert_eq!(
        db.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        1000 - 30 + 1
    );
    assert_eq!(support::stored(db).await.len(), 1001);

    let mobile = reconcile(&e, Kind::MobileDevices, false, false).await;
    assert!(mobile.succeeded(), "{mobile}");
    assert_eq!(mobile.deleted, 6);
    assert_eq!(deleted_ids(db, Kind::MobileDevices).await, gone_mobile);

    // A re-run is a no-op.
    let again = reconcile(&e, Kind::Computers, false, false).await;
    assert_eq!(
        (
            again.candidates,
            again.deleted,
            again.missed_fetched,
            again.revived
        ),
        (0, 0, 0, 0),
        "{again}"
    );

    // A device that comes back is revived.
    let back = sim.take_computer(2).expect("computer 2");
    assert!(reconcile(&e, Kind::Computers, false, false)
        .await
        .succeeded());
    assert_eq!(deleted_ids(db, Kind::Computers).await.len(), 31);
    sim.put_computer(back);
    let revived = reconcile(&e, Kind::Computers, false, false).await;
    assert_eq!(revived.revived, 1, "{revived}");
    assert!(!deleted_ids(db, Kind::Computers).await.contains(&2));
    sim.stop().await;
}

both_backends!(refuses_mass_deletion);
async fn refuses_mass_deletion(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 400,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let e = engine(db, &sim, ReconcileConfig::default());
    assert!(support::run(&e, false).await.succeeded());
    for id in 1..=200 {
        sim.delete_computer(id);
    }
    let refused = reconcile(&e, Kind::Computers, false, false).await;
    assert!(!refused.succeeded());
    assert_eq!((refused.refused, refused.deleted), (200, 0), "{refused}");
    assert!(
        refused
            .error
            .as_deref()
            .unwrap_or("")
            .contains("max_delete_fraction"),
        "{refused}"
    );
    assert!(
        deleted_ids(db, Kind::Computers).await.is_empty(),
        "nothing marked"
    );
    assert_eq!(support::last_run(db).await.status, "failed");
    // --force applies it.
    let forced = reconcile(&e, Kind::Computers, false, true).await;
    assert!(forced.succeeded(), "{forced}");
    assert_eq!(deleted_ids(db, Kind::Computers).await.len(), 200);
    sim.stop().await;
}

both_backends!(a_failed_listing_marks_nothing);
async fn a_failed_listing_marks_nothing(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 3000,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let e = engine(db, &sim, ReconcileConfig::default());
    assert!(support::run(&e, false).await.succeeded());
    for id in [5, 2500] {
        sim.delete_computer(id);
    }
    // The first listing page (2000 ids) works, the second fails past the retry budget.
    sim.set_faults(Faults {
        outage_after: 1,
        outage_requests: 1_000_000,
        ..Faults::default()
    });
    let failed = reconcile(&e, Kind::Computers, false, false).await;
    assert!(!failed.succeeded(), "{failed}");
    assert!(deleted_ids(db, Kind::Computers).await.is_empty());
    sim.set_faults(Faults::default());
    let ok = reconcile(&e, Kind::Computers, false, false).await;
    assert_eq!(ok.deleted, 2, "{ok}");
    sim.stop().await;
}

both_backends!(delete_mode_removes_rows_and_a_listing_glitch_keeps_the_device);
async fn delete_mode_removes_rows_and_a_listing_glitch_keeps_the_device(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 100,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let e = engine(
        db,
        &sim,
        ReconcileConfig {
            on_missing: OnMissing::Delete,
            ..ReconcileConfig::default()
        },
    );
    assert!(support::run(&e, false).await.succeeded());
    sim.delete_computer(9);
    sim.unlist_computer(40);
    let r = reconcile(&e, Kind::Computers, false, false).await;
    assert_eq!((r.candidates, r.deleted, r.kept), (2, 1, 1), "{r}");
    assert!(
        support::stored(db).await.iter().any(|c| c.jamf_id == 40),
        "answered: kept"
    );
    assert!(
        !support::stored(db).await.iter().any(|c| c.jamf_id == 9),
        "row removed"
    );
    assert_eq!(support::stored(db).await.len(), 99);
    sim.stop().await;
}
