//! The change history (`inventory_changes`): exactly the fields that changed, with old and new
//! values, written with the record; nothing for a first sight, an unchanged record or an older
//! one; deletions and reappearances; excluded fields; retention.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use jamf_sync::config::{
    FetchStrategy, HistoryConfig, MobileDevicesConfig, MobileSource, ReconcileConfig,
};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::{ChangeRow, Db, Store};
use jamf_sync::sync::Engine;

use crate::support::{self, TestDb};

/// `(jamf_id, field, old, new)` of every history row of a kind.
type Rows = BTreeSet<(i64, String, Option<String>, Option<String>)>;

async fn all_changes(db: &TestDb) -> Vec<ChangeRow> {
    let mut rows = Vec::new();
    for id in 1..=40 {
        for kind in [Kind::Computers, Kind::MobileDevices] {
            rows.extend(
                db.db
                    .device_history("test", &id.to_string(), Some(kind))
                    .await
                    .expect("history"),
            );
        }
    }
    rows
}

fn rows_of(changes: &[ChangeRow]) -> Rows {
    changes
        .iter()
        .map(|c| {
            (
                c.jamf_id,
                c.field.clone(),
                c.old_value.clone(),
                c.new_value.clone(),
            )
        })
        .collect()
}

fn text(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

async fn setup(db: &TestDb, history: HistoryConfig) -> (Simulator, Engine<Db>) {
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 10,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    )
    .with_mobile(MobileDevicesConfig {
        source: MobileSource::AdvancedSearch,
        ..MobileDevicesConfig::default()
    })
    .with_reconcile(ReconcileConfig {
        max_delete_fraction: 0.5,
        ..ReconcileConfig::default()
    })
    .with_history(history);
    assert!(support::run(&engine, true).await.succeeded());
    assert!(support::run_mobile(&engine, true).await.succeeded());
    (sim, engine)
}

both_backends!(a_delta_records_exactly_what_changed_and_nothing_else);
async fn a_delta_records_exactly_what_changed_and_nothing_else(db: &TestDb) {
    let (sim, engine) = setup(db, HistoryConfig::default()).await;
    assert!(
        all_changes(db).await.is_empty(),
        "a first sight writes none"
    );

    let before = |id| support::stored_device(db, Kind::Computers, id);
    let (b1, b2, b3) = (before(1).await, before(2).await, before(3).await);
    let old_build = |raw: &str| {
        let v: serde_json::Value = serde_json::from_str(raw).expect("raw");
        v["operatingSystem"]["build"].as_str().map(str::to_string)
    };
    assert!(sim.edit_computer(1, |c| c.name = "RENAMED-1".into()));
    assert!(sim.edit_computer(2, |c| c.os = (c.os + 1) % 3));
    assert!(sim.edit_computer(3, |c| c.ea_values[0] = "D-NEW".into()));
    // Reports again with nothing else new: only the report date and last contact move.
    assert!(sim.edit_computer(4, |_| {}));
    assert!(sim.edit_mobile(5, |m| m.username = "new.user".into()));
    let old_mobile = support::stored_device(db, Kind::MobileDevices, 5).await;

    let run = support::run(&engine, false).await;
    assert!(run.succeeded(), "{run}");
    assert!(support::run_mobile(&engine, false).await.succeeded());
    let a2 = before(2).await;
    let changes = all_changes(db).await;
    let mut want: Rows = [
        (
            1,
            "name",
            b1.info.name.clone(),
            Some("RENAMED-1".to_string()),
        ),
        (
            2,
            "os_version",
            b2.info.os_version.clone(),
            a2.info.os_version.clone(),
        ),
        (2, "os_build", old_build(&b2.raw), old_build(&a2.raw)),
        (
            3,
            "ea:Department Code",
            sim_ea_before(&b3.raw),
            Some("D-NEW".to_string()),
        ),
        (
            5,
            "username",
            old_mobile.info.username.clone(),
            Some("new.user".to_string()),
        ),
        // The simulator derives the e-mail address from the user name, as a directory does.
        (
            5,
            "email",
            old_mobile.info.email.clone(),
            Some("new.user@example.com".to_string()),
        ),
    ]
    .into_iter()
    .map(|(id, f, o, n)| (id, f.to_string(), o, n))
    .collect();
    assert_eq!(rows_of(&changes), want);
    assert_ne!(b2.info.os_version, a2.info.os_version);
    for c in &changes {
        let kind = if c.device_type == "computer" {
            Kind::Computers
        } else {
            Kind::MobileDevices
        };
        let now = support::stored_device(db, kind, c.jamf_id).await;
        assert_eq!(
            c.changed_at.map(|t| t.timestamp()),
            now.as_of.map(|t| t.timestamp()),
            "changed_at is the record's report date: {c:?}"
        );
        assert!(c.run_id.is_some(), "{c:?}");
    }
    assert!(changes
        .iter()
        .filter(|c| c.device_type == "computer")
        .all(|c| c.run_id == Some(run.run_id)));

    // A second delta with no changes adds nothing.
    assert!(support::run(&engine, false).await.succeeded());
    assert!(support::run_mobile(&engine, false).await.succeeded());
    assert_eq!(rows_of(&all_changes(db).await), want);

    // An older copy (a full sync listing a device whose report went back) writes none.
    let mut c6 = sim.take_computer(6).expect("computer 6");
    let stored6 = support::stored_device(db, Kind::Computers, 6).await;
    c6.name = "OLDER".into();
    c6.report_date = stored6.as_of.expect("report date") - chrono::Duration::days(1);
    sim.put_computer(c6);
    assert!(support::run(&engine, true).await.succeeded());
    assert_eq!(rows_of(&all_changes(db).await), want);

    // Deleted in Jamf and found by reconcile; then back with a new report.
    let c7 = sim.take_computer(7).expect("computer 7");
    let r = support::reconcile(&engine, Kind::Computers, false, false).await;
    assert_eq!(r.deleted, 1, "{r:?}");
    sim.put_computer(c7);
    assert!(sim.edit_computer(7, |_| {}));
    assert!(support::run(&engine, false).await.succeeded());
    want.insert((
        7,
        "deleted".into(),
        Some("false".into()),
        Some("true".into()),
    ));
    want.insert((
        7,
        "deleted".into(),
        Some("true".into()),
        Some("false".into()),
    ));
    let changes = all_changes(db).await;
    assert_eq!(rows_of(&changes), want);

    // By serial number as well as by id; the timeline is in order.
    let serial = b1.info.serial_number.clone().expect("serial");
    let by_serial = db
        .db
        .device_history("test", &serial, None)
        .await
        .expect("history");
    assert_eq!(rows_of(&by_serial).len(), 1);
    assert_eq!(by_serial[0].field, "name");
    let seven: Vec<_> = changes.iter().filter(|c| c.jamf_id == 7).collect();
    assert_eq!(seven[0].new_value.as_deref(), Some("true"), "{seven:?}");

    // Retention: rows recorded before the cut go.
    let n = db
        .db
        .prune_history(Utc::now() + chrono::Duration::seconds(5))
        .await
        .expect("prune");
    assert_eq!(n as usize, changes.len());
    assert!(all_changes(db).await.is_empty());
    sim.stop().await;
}

/// The Department Code value in a stored computer's raw JSON.
fn sim_ea_before(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).expect("raw");
    v["general"]["extensionAttributes"]
        .as_array()
        .into_iter()
        .chain(v["extensionAttributes"].as_array())
        .flatten()
        .find(|e| e["name"] == "Department Code")
        .and_then(|e| e["values"][0].as_str().map(str::to_string))
}

both_backends!(excluded_fields_and_disabled_history_write_nothing_for_them);
async fn excluded_fields_and_disabled_history_write_nothing_for_them(db: &TestDb) {
    let (sim, engine) = setup(
        db,
        HistoryConfig {
            exclude_fields: vec!["name".into(), "ea:Department Code".into()],
            ..HistoryConfig::default()
        },
    )
    .await;
    let before = support::stored_device(db, Kind::Computers, 1).await;
    assert!(sim.edit_computer(1, |c| {
        c.name = "HIDDEN".into();
        c.username = "someone.else".into();
        c.ea_values[0] = "D-HIDDEN".into();
    }));
    assert!(support::run(&engine, false).await.succeeded());
    let after = support::stored_device(db, Kind::Computers, 1).await;
    assert_eq!(
        after.info.name.as_deref(),
        Some("HIDDEN"),
        "the record is written"
    );
    let want: Rows = [
        (
            1,
            "username",
            before.info.username.clone(),
            Some("someone.else"),
        ),
        (
            1,
            "email",
            before.info.email.clone(),
            Some("someone.else@example.com"),
        ),
    ]
    .into_iter()
    .map(|(id, f, o, n)| (id, f.to_string(), o, n.map(str::to_string)))
    .collect();
    assert_eq!(rows_of(&all_changes(db).await), want);
    assert_eq!(
        text(after.as_of),
        all_changes(db).await[0]
            .changed_at
            .and_then(|t| text(Some(t)))
    );

    // History off: the record is written, no row.
    let off = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    )
    .with_history(HistoryConfig {
        enabled: false,
        ..HistoryConfig::default()
    });
    assert!(sim.edit_computer(2, |c| c.name = "QUIET".into()));
    assert!(support::run(&off, false).await.succeeded());
    assert_eq!(
        support::stored_device(db, Kind::Computers, 2)
            .await
            .info
            .name
            .as_deref(),
        Some("QUIET")
    );
    assert_eq!(rows_of(&all_changes(db).await), want);
    sim.stop().await;
}
