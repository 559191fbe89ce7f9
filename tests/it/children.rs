//! Child tables: after a sync they hold exactly what the simulator served; a device whose
//! section changed gets its rows replaced (and application changes in the history), an
//! unchanged section writes no rows, and a section not asked for leaves its table alone.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use jamf_sync::config::{FetchStrategy, HistoryConfig, MobileDevicesConfig, MobileSource};
use jamf_sync::domain::children::{
    ChildTable, COMPUTER_APPLICATIONS, COMPUTER_CERTIFICATES, COMPUTER_CONFIGURATION_PROFILES,
    COMPUTER_GROUP_MEMBERSHIPS, COMPUTER_LOCAL_USER_ACCOUNTS, MOBILE_DEVICE_APPLICATIONS,
    MOBILE_DEVICE_CERTIFICATES, MOBILE_DEVICE_CONFIGURATION_PROFILES,
    MOBILE_DEVICE_GROUP_MEMBERSHIPS,
};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::Store;

use crate::support::{self, TestDb};

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
    let mut s: Vec<String> = support::sync_cfg(100, FetchStrategy::Inline).sections;
    s.extend(extra.iter().map(|x| x.to_string()));
    s
}

both_backends!(child_tables_follow_the_sections_and_only_changes_write);
async fn child_tables_follow_the_sections_and_only_changes_write(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 25,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = support::sync_cfg(100, FetchStrategy::Inline);
    cfg.sections = sections(&[
        "APPLICATIONS",
        "GROUP_MEMBERSHIPS",
        "CONFIGURATION_PROFILES",
        "LOCAL_USER_ACCOUNTS",
        "CERTIFICATES",
    ]);
    let engine =
        support::engine(db, support::settings(&sim), cfg).with_history(HistoryConfig::default());
    let full = support::run(&engine, true).await;
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
    let delta = support::run(&engine, false).await;
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
    let again = support::run(&engine, false).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(again.counts.child_rows, 0, "{again}");

    // A configuration without APPLICATIONS leaves the table as it was, even for a device
    // that changed.
    let before = stored_apps(db).await;
    let plain = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    assert!(sim.edit_computer(3, |c| {
        c.name = "Elsewhere".into();
        c.app_updates += 1;
    }));
    let run = support::run(&plain, false).await;
    assert!(run.succeeded(), "{run}");
    // Written (its raw record differs without the section), child rows untouched.
    assert!(run.counts.upserted >= 1, "{run}");
    assert_eq!(run.counts.child_rows, 0, "{run}");
    assert_eq!(stored_apps(db).await, before);
    sim.stop().await;
}

/// `(jamf_id, values as text)` of one child table.
type Rows = BTreeSet<(i64, Vec<Option<String>>)>;

fn text(s: impl ToString) -> Option<String> {
    Some(s.to_string())
}

fn time(t: DateTime<Utc>) -> Option<String> {
    text(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// What each mobile child table must hold for the simulator's devices. Through the Jamf Pro
/// API (`pro`) Jamf also says whether a group is smart and when a profile was installed.
fn sim_mobile_children(sim: &Simulator, pro: bool) -> Vec<(&'static ChildTable, Rows)> {
    let (mut apps, mut groups, mut profiles, mut certs) = Default::default();
    let (apps, groups, profiles, certs): (&mut Rows, &mut Rows, &mut Rows, &mut Rows) =
        (&mut apps, &mut groups, &mut profiles, &mut certs);
    for id in sim.mobile_ids() {
        let m = sim.mobile(id).expect("mobile");
        for (name, identifier, short, build) in m.applications() {
            let major = short.split('.').next().map(String::from);
            apps.insert((
                id,
                vec![
                    text(name),
                    text(identifier),
                    text(short),
                    text(build),
                    major,
                ],
            ));
        }
        for (gid, name, smart) in m.groups() {
            groups.insert((
                id,
                vec![text(gid), text(name), pro.then(|| smart.to_string())],
            ));
        }
        for (name, identifier, uuid, version, removable, at) in m.profiles() {
            profiles.insert((
                id,
                vec![
                    text(name),
                    text(identifier),
                    text(uuid),
                    text(version),
                    pro.then(|| removable.to_string()),
                    if pro { time(at) } else { None },
                ],
            ));
        }
        for (name, identity, expires) in m.certificates() {
            certs.insert((id, vec![text(name), text(identity), time(expires)]));
        }
    }
    vec![
        (&MOBILE_DEVICE_APPLICATIONS, std::mem::take(apps)),
        (&MOBILE_DEVICE_GROUP_MEMBERSHIPS, std::mem::take(groups)),
        (
            &MOBILE_DEVICE_CONFIGURATION_PROFILES,
            std::mem::take(profiles),
        ),
        (&MOBILE_DEVICE_CERTIFICATES, std::mem::take(certs)),
    ]
}

async fn stored(db: &TestDb, table: &'static ChildTable) -> Rows {
    let rows = db.db.child_rows("test", table).await.expect("rows");
    let n = rows.len();
    let set: Rows = rows.into_iter().collect();
    assert_eq!(set.len(), n, "no row of {} stored twice", table.name);
    set
}

async fn assert_mobile_children(db: &TestDb, sim: &Simulator, pro: bool) {
    for (table, want) in sim_mobile_children(sim, pro) {
        assert!(!want.is_empty(), "{} has rows to compare", table.name);
        assert_eq!(stored(db, table).await, want, "{}", table.name);
    }
}

both_backends!(mobile_child_tables_hold_what_either_source_served);
async fn mobile_child_tables_hold_what_either_source_served(db: &TestDb) {
    let (sim, classic) = support::fleet(db, 0, 12).await;
    let classic = classic.with_history(HistoryConfig::default());
    let run = support::run_mobile(&classic, true).await;
    assert!(run.succeeded(), "{run}");
    assert_mobile_children(db, &sim, false).await;
    let rows: usize = sim_mobile_children(&sim, false)
        .iter()
        .map(|(_, rows)| rows.len())
        .sum();
    assert_eq!(run.counts.child_rows, rows as i64);

    // Reported again with nothing new in its lists: no child row written.
    assert!(sim.edit_mobile(4, |m| m.username = "someone".into()));
    let again = support::run_mobile(&classic, false).await;
    assert!(again.succeeded(), "{again}");
    assert_eq!(again.counts.upserted, 1, "{again}");
    assert_eq!(again.counts.child_rows, 0, "{again}");

    // Outlook updated and the device joined the static group: both lists rewritten, the app's
    // version change in the history.
    assert!(sim.edit_mobile(3, |m| {
        m.app_updates += 1;
        m.pilot = true;
    }));
    let changed = support::run_mobile(&classic, false).await;
    assert!(changed.succeeded(), "{changed}");
    let m3 = sim.mobile(3).expect("mobile 3");
    assert_eq!(
        changed.counts.child_rows,
        (m3.applications().len() + m3.groups().len()) as i64,
        "{changed}"
    );
    assert_mobile_children(db, &sim, false).await;
    let history = db
        .db
        .device_history("test", "3", Some(Kind::MobileDevices))
        .await
        .expect("history");
    let apps: Vec<_> = history
        .iter()
        .filter(|c| c.field.starts_with("app:"))
        .map(|c| {
            (
                c.field.as_str(),
                c.old_value.as_deref(),
                c.new_value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        vec![(
            "app:com.microsoft.Office.Outlook",
            Some("4.2400"),
            Some("4.2401")
        )]
    );

    // The Jamf Pro API source with the list sections fills the same tables, with what only it
    // knows (smart groups, removable profiles, install dates).
    let settings = support::settings(&sim);
    let mut sections = MobileDevicesConfig::default().sections;
    sections.extend(
        ["APPLICATIONS", "GROUPS", "PROFILES", "CERTIFICATES"]
            .iter()
            .map(|s| s.to_string()),
    );
    let pro = support::engine(
        db,
        settings.clone(),
        support::sync_cfg(100, FetchStrategy::Inline),
    )
    .with_mobile(MobileDevicesConfig {
        source: MobileSource::ProApi,
        sections,
        ..MobileDevicesConfig::default()
    });
    let run = support::run_mobile(&pro, true).await;
    assert!(run.succeeded(), "{run}");
    assert_mobile_children(db, &sim, true).await;

    // Without those sections the Pro API source leaves every table as it was.
    let before: Vec<Rows> = {
        let mut v = Vec::new();
        for (table, _) in sim_mobile_children(&sim, true) {
            v.push(stored(db, table).await);
        }
        v
    };
    assert!(sim.edit_mobile(6, |m| {
        m.app_updates += 1;
        m.pilot = !m.pilot;
    }));
    let plain = support::engine(db, settings, support::sync_cfg(100, FetchStrategy::Inline))
        .with_mobile(MobileDevicesConfig {
            source: MobileSource::ProApi,
            ..MobileDevicesConfig::default()
        });
    let run = support::run_mobile(&plain, true).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.counts.child_rows, 0, "{run}");
    for ((table, _), rows) in sim_mobile_children(&sim, true).into_iter().zip(before) {
        assert_eq!(stored(db, table).await, rows, "{} untouched", table.name);
    }
    sim.stop().await;
}
