//! Child tables: after a sync they hold exactly what the simulator served; a device whose
//! section changed gets its rows replaced (and application changes in the history), an
//! unchanged section writes no rows, and a section not asked for leaves its table alone.

use std::collections::BTreeSet;

use jamf_sync::config::{FetchStrategy, HistoryConfig};
use jamf_sync::domain::children::{
    COMPUTER_APPLICATIONS, COMPUTER_CERTIFICATES, COMPUTER_CONFIGURATION_PROFILES,
    COMPUTER_GROUP_MEMBERSHIPS, COMPUTER_LOCAL_USER_ACCOUNTS, MOBILE_DEVICE_APPLICATIONS,
    MOBILE_DEVICE_GROUP_MEMBERSHIPS,
};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::Store;

use crate::helpers::{self, TestDb};

type AppRow = (i64, String, String, String);

/// `(jamf_id, name, version, bundle id)` of every application the simulator serves.
fn sim_apps(sim: &Simulator) -> BTreeSet<AppRow> {
    let mut out = BTreeSet::new();
    for id in sim.computer_ids() {
        let c = sim.computer(id).expect("computer");
        for (name, bundle, version) in c.applications() {
            out.insert((id, name.to_string(), version, bundle.to_string()));
        }
    }
    out
}

async fn stored_apps(db: &TestDb) -> BTreeSet<AppRow> {
    let rows = db
        .db
        .child_rows("test", &COMPUTER_APPLICATIONS)
        .await
        .expect("rows");
    let n = rows.len();
    let set: BTreeSet<AppRow> = rows
        .into_iter()
        .map(|(id, v)| {
            let text = |i: usize| v[i].clone().unwrap_or_default();
            (id, text(0), text(2), text(3))
        })
        .collect();
    assert_eq!(set.len(), n, "no application stored twice");
    set
}

fn sim_groups(sim: &Simulator) -> BTreeSet<(i64, String, String, bool)> {
    let mut out = BTreeSet::new();
    for id in sim.computer_ids() {
        for (gid, name, smart) in sim.computer(id).expect("computer").groups() {
            out.insert((id, gid.to_string(), name.to_string(), smart));
        }
    }
    out
}

async fn stored_groups(db: &TestDb) -> BTreeSet<(i64, String, String, bool)> {
    db.db
        .child_rows("test", &COMPUTER_GROUP_MEMBERSHIPS)
        .await
        .expect("rows")
        .into_iter()
        .map(|(id, v)| {
            (
                id,
                v[0].clone().unwrap_or_default(),
                v[1].clone().unwrap_or_default(),
                v[2].as_deref() == Some("true"),
            )
        })
        .collect()
}

fn sections(extra: &[&str]) -> Vec<String> {
    let mut s: Vec<String> = helpers::sync_cfg(100, FetchStrategy::Inline).sections;
    s.extend(extra.iter().map(|x| x.to_string()));
    s
}

both_backends!(child_tables_follow_the_sections_and_only_changes_write);
async fn child_tables_follow_the_sections_and_only_changes_write(db: &TestDb) {
    let sim = helpers::sim(SimConfig {
        computers: 25,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = helpers::sync_cfg(100, FetchStrategy::Inline);
    cfg.sections = sections(&[
        "APPLICATIONS",
        "GROUP_MEMBERSHIPS",
        "CONFIGURATION_PROFILES",
        "LOCAL_USER_ACCOUNTS",
        "CERTIFICATES",
    ]);
    let engine =
        helpers::engine(db, helpers::settings(&sim), cfg).with_history(HistoryConfig::default());
    let full = helpers::run(&engine, true).await;
    assert!(full.succeeded(), "{full}");
    let served = sim_apps(&sim);
    assert!(served.len() >= 25 * 40, "at least 40 applications per Mac");
    assert_eq!(stored_apps(db).await, served);
    assert_eq!(stored_groups(db).await, sim_groups(&sim));
    // Profiles: 3 + id % 4 a Mac; two local accounts and two certificates each.
    let profiles: usize = (1..=25).map(|id| 3 + id % 4).sum();
    let stored_profiles = db
        .db
        .child_rows("test", &COMPUTER_CONFIGURATION_PROFILES)
        .await
        .expect("rows");
    assert_eq!(stored_profiles.len(), profiles);
    assert!(stored_profiles.iter().any(|(id, v)| *id == 5
        && v[1].as_deref() == Some("Wi-Fi Corporate")
        && v[6].as_deref().is_some_and(|t| t.ends_with('Z'))));
    let accounts = db
        .db
        .child_rows("test", &COMPUTER_LOCAL_USER_ACCOUNTS)
        .await
        .expect("rows");
    assert_eq!(accounts.len(), 50);
    let c5 = sim.computer(5).expect("5");
    assert!(accounts
        .iter()
        .any(|(id, v)| *id == 5 && v[2].as_deref() == Some(c5.username.as_str())));
    let certs = db
        .db
        .child_rows("test", &COMPUTER_CERTIFICATES)
        .await
        .expect("rows");
    assert_eq!(certs.len(), 50);
    assert!(certs
        .iter()
        .any(|(id, v)| *id == 5 && v[0].as_deref() == Some(c5.udid.as_str()) && v[9].is_some()));
    assert_eq!(
        full.counts.child_rows as usize,
        served.len() + sim_groups(&sim).len() + profiles + 100
    );

    // 1: one application updates; 2: one application removed and the OS moves (a smart
    // group follows it); 4: renamed, applications as they were.
    let c1 = sim.computer(1).expect("1");
    let c2 = sim.computer(2).expect("2");
    assert!(sim.edit_computer(1, |c| c.app_updates += 1));
    assert!(sim.edit_computer(2, |c| {
        c.apps -= 1;
        c.os = if c.os == 0 { 1 } else { 0 };
    }));
    assert!(sim.edit_computer(4, |c| c.name = "Renamed".into()));
    let delta = helpers::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    assert_eq!(stored_apps(db).await, sim_apps(&sim));
    assert_eq!(stored_groups(db).await, sim_groups(&sim));
    let rewritten = (sim.computer(1).expect("1").apps + sim.computer(2).expect("2").apps) as i64
        + sim.computer(2).expect("2").groups().len() as i64;
    assert_eq!(
        delta.counts.child_rows, rewritten,
        "only changed sections: {delta}"
    );

    let (old1, new1) = (
        c1.applications(),
        sim.computer(1).expect("1").applications(),
    );
    let removed = c2.applications().last().cloned().expect("an app");
    let mut app_rows = BTreeSet::new();
    for id in [1, 2, 4] {
        let rows = db
            .db
            .device_history("test", &id.to_string(), Some(Kind::Computers))
            .await
            .expect("history");
        for r in rows.into_iter().filter(|r| r.field.starts_with("app:")) {
            app_rows.insert((r.jamf_id, r.field, r.old_value, r.new_value));
        }
    }
    let changed = old1
        .iter()
        .zip(&new1)
        .find(|(a, b)| a.2 != b.2)
        .expect("one version changed");
    let want: BTreeSet<_> = [
        (
            1,
            format!("app:{}", changed.0 .1),
            Some(changed.0 .2.clone()),
            Some(changed.1 .2.clone()),
        ),
        (
            2,
            format!("app:{}", removed.1),
            Some(removed.2.clone()),
            None,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(app_rows, want);

    // Nothing changed: no child row written.
    let again = helpers::run(&engine, false).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(again.counts.child_rows, 0, "{again}");

    // A configuration without APPLICATIONS leaves the table as it was, even for a device
    // that changed.
    let before = stored_apps(db).await;
    let plain = helpers::engine(
        db,
        helpers::settings(&sim),
        helpers::sync_cfg(100, FetchStrategy::Inline),
    );
    assert!(sim.edit_computer(3, |c| {
        c.name = "Elsewhere".into();
        c.app_updates += 1;
    }));
    let run = helpers::run(&plain, false).await;
    assert!(run.succeeded(), "{run}");
    // Written (its raw record differs without the section), child rows untouched.
    assert!(run.counts.upserted >= 1, "{run}");
    assert_eq!(run.counts.child_rows, 0, "{run}");
    assert_eq!(stored_apps(db).await, before);
    sim.stop().await;
}

both_backends!(mobile_devices_fill_their_child_tables_from_the_classic_record);
async fn mobile_devices_fill_their_child_tables_from_the_classic_record(db: &TestDb) {
    let (sim, engine) = helpers::fleet(db, 0, 8).await;
    let run = helpers::run_mobile(&engine, true).await;
    assert!(run.succeeded(), "{run}");
    let apps = db
        .db
        .child_rows("test", &MOBILE_DEVICE_APPLICATIONS)
        .await
        .expect("rows");
    assert_eq!(apps.len(), 16, "two apps on each of eight devices");
    let keynote: Vec<_> = apps
        .iter()
        .filter(|(_, v)| v[1].as_deref() == Some("com.apple.Keynote"))
        .collect();
    assert_eq!(keynote.len(), 8);
    for (_, v) in keynote {
        // The short version is `version`; the build number stays beside it.
        assert_eq!(v[2].as_deref(), Some("14.2"));
        assert_eq!(v[3].as_deref(), Some("7038.0.45"));
        assert_eq!(v[4].as_deref(), Some("14"));
    }
    let groups = db
        .db
        .child_rows("test", &MOBILE_DEVICE_GROUP_MEMBERSHIPS)
        .await
        .expect("rows");
    assert_eq!(groups.len(), 8);
    assert!(groups
        .iter()
        .all(|(_, v)| v[1].as_deref() == Some("All Managed iPads")));
    assert_eq!(run.counts.child_rows, 24);
    // Reported again with nothing new in its lists: no child row written.
    assert!(sim.edit_mobile(3, |m| m.username = "someone".into()));
    let again = helpers::run_mobile(&engine, false).await;
    assert!(again.succeeded(), "{again}");
    assert!(again.counts.upserted >= 1, "{again}");
    assert_eq!(again.counts.child_rows, 0, "{again}");
    sim.stop().await;
}
