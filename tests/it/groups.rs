//! Group membership refresh: memberships that change without new inventory (an admin edits a
//! static group) reach the copy through the groups' member lists; only changed groups are
//! rewritten; groups gone from Jamf lose their rows; the device side and the group side agree.

use std::collections::BTreeSet;

use jamf_sync::config::FetchStrategy;
use jamf_sync::domain::children::memberships;
use jamf_sync::domain::{Kind, RunStatus, Trigger};
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::{GroupMembers, Store};

use crate::support::{self, TestDb};

/// `(jamf_id, group id, group name)` of every membership.
type Members = BTreeSet<(i64, String, String)>;

fn sim_members(sim: &Simulator, kind: Kind) -> Members {
    let mut out = Members::new();
    match kind {
        Kind::Computers => {
            for id in sim.computer_ids() {
                for (g, name, _) in sim.computer(id).expect("computer").groups() {
                    out.insert((id, g.to_string(), name.to_string()));
                }
            }
        }
        Kind::MobileDevices => {
            for id in sim.mobile_ids() {
                for (g, name, _) in sim.mobile(id).expect("mobile").groups() {
                    out.insert((id, g.to_string(), name.to_string()));
                }
            }
        }
    }
    out
}

/// The stored memberships, and whether every stored smart flag is the simulator's (or NULL).
async fn stored_members(db: &TestDb, kind: Kind) -> Members {
    let rows = db
        .db
        .child_rows("test", memberships(kind))
        .await
        .expect("rows");
    let n = rows.len();
    let set: Members = rows
        .into_iter()
        .map(|(id, v)| {
            let text = |i: usize| v[i].clone().unwrap_or_default();
            (id, text(0), text(1))
        })
        .collect();
    assert_eq!(set.len(), n, "no membership stored twice");
    set
}

both_backends!(static_group_edits_reach_the_copy_and_only_changed_groups_are_rewritten);
async fn static_group_edits_reach_the_copy_and_only_changed_groups_are_rewritten(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut cfg = support::sync_cfg(100, FetchStrategy::Inline);
    cfg.sections.push("GROUP_MEMBERSHIPS".into());
    let engine = support::engine(db, support::settings(&sim), cfg);
    let full = support::run(&engine, true).await;
    assert!(full.succeeded(), "{full}");
    assert_eq!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );

    // The device side and the group side agree: nothing to rewrite.
    let first = engine
        .refresh_groups(Kind::Computers, Trigger::Cli)
        .await
        .expect("store");
    assert!(first.succeeded(), "{first}");
    assert_eq!(
        (first.groups, first.changed, first.unchanged),
        (4, 0, 4),
        "{first}"
    );
    assert_eq!(first.rows, 0);
    assert_eq!(sim.requests_to("/JSSResource/computergroups"), 1);
    assert_eq!(sim.requests_to("/JSSResource/computergroups/id/{id}"), 4);

    // An admin adds Mac 1 to "Pilot Ring" and takes Mac 7 out: no inventory, so a delta sees
    // nothing, and the group refresh rewrites that one group.
    assert!(sim.set_computer_static_group(1, "4", true));
    assert!(sim.set_computer_static_group(7, "4", false));
    let delta = support::run(&engine, false).await;
    assert_eq!(delta.counts.upserted, 0, "{delta}");
    assert_ne!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );
    let second = engine
        .refresh_groups(Kind::Computers, Trigger::Cli)
        .await
        .expect("store");
    assert!(second.succeeded(), "{second}");
    assert_eq!((second.changed, second.unchanged), (1, 3), "{second}");
    let pilots = sim_members(&sim, Kind::Computers)
        .iter()
        .filter(|m| m.1 == "4")
        .count();
    assert_eq!(second.rows, pilots as i64);
    assert_eq!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );
    let runs = db.db.recent_runs("test", 1).await.expect("runs");
    assert_eq!(runs[0].kind, "groups");
    assert_eq!(runs[0].status, RunStatus::Succeeded.as_str());
    assert_eq!(runs[0].counts.upserted, 1);

    // Nothing changed since: nothing written.
    let third = engine
        .refresh_groups(Kind::Computers, Trigger::Cli)
        .await
        .expect("store");
    assert_eq!((third.changed, third.rows), (0, 0), "{third}");

    // Mac 1's next inventory agrees with the group side (its hash was forgotten, so its rows
    // are rewritten from the record and stay exact).
    assert!(sim.edit_computer(1, |c| c.username = "new owner".into()));
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    assert!(delta.counts.child_rows > 0, "{delta}");
    assert_eq!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );

    // A group gone from Jamf loses its rows.
    let written = db
        .db
        .replace_group(
            "test",
            Kind::Computers,
            &GroupMembers {
                id: "99",
                name: "Retired",
                smart: false,
                members: &[2, 3],
            },
        )
        .await
        .expect("write");
    assert_eq!(written, 2);
    let fourth = engine
        .refresh_groups(Kind::Computers, Trigger::Cli)
        .await
        .expect("store");
    assert!(fourth.succeeded(), "{fourth}");
    assert_eq!(fourth.removed, 2, "{fourth}");
    assert_eq!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );
    sim.stop().await;
}

both_backends!(groups_fill_memberships_without_the_section_and_for_mobile_devices);
async fn groups_fill_memberships_without_the_section_and_for_mobile_devices(db: &TestDb) {
    let (sim, engine) = support::fleet(db, 20, 12).await;
    // Default sections: no GROUP_MEMBERSHIPS, so only the group side fills the table, with
    // the smart flag from the group list.
    let run = support::run(&engine, true).await;
    assert!(run.succeeded(), "{run}");
    assert!(stored_members(db, Kind::Computers).await.is_empty());
    let computers = engine
        .refresh_groups(Kind::Computers, Trigger::Cli)
        .await
        .expect("store");
    assert!(computers.succeeded(), "{computers}");
    assert_eq!(
        stored_members(db, Kind::Computers).await,
        sim_members(&sim, Kind::Computers)
    );
    let smart: BTreeSet<(String, Option<String>)> = db
        .db
        .child_rows("test", memberships(Kind::Computers))
        .await
        .expect("rows")
        .into_iter()
        .map(|(_, v)| (v[0].clone().unwrap_or_default(), v[2].clone()))
        .collect();
    for (g, flag) in smart {
        let want = ["1", "3"].contains(&g.as_str());
        assert_eq!(flag, Some(want.to_string()), "group {g}");
    }

    // Mobile devices: the Classic record fills the table (smart unknown: NULL), which the
    // group side accepts as is; a static edit without inventory is picked up.
    let mobiles = support::run_mobile(&engine, true).await;
    assert!(mobiles.succeeded(), "{mobiles}");
    let first = engine
        .refresh_groups(Kind::MobileDevices, Trigger::Cli)
        .await
        .expect("store");
    assert!(first.succeeded(), "{first}");
    assert_eq!((first.groups, first.changed), (3, 0), "{first}");
    let pilot = sim.mobile(5).expect("mobile 5").pilot;
    assert!(sim.set_mobile_pilot(5, !pilot));
    let second = engine
        .refresh_groups(Kind::MobileDevices, Trigger::Cli)
        .await
        .expect("store");
    assert_eq!((second.changed, second.unchanged), (1, 2), "{second}");
    assert_eq!(
        stored_members(db, Kind::MobileDevices).await,
        sim_members(&sim, Kind::MobileDevices)
    );
    sim.stop().await;
}

both_backends!(a_database_error_fails_the_refresh_run_instead_of_leaving_it_running);
async fn a_database_error_fails_the_refresh_run_instead_of_leaving_it_running(db: &TestDb) {
    let (_sim, engine) = support::fleet(db, 20, 0).await;
    let drop = "DROP TABLE computer_group_memberships";
    db.execute(drop, None)
        .await
        .expect("drop the membership table");
    let refreshed = engine.refresh_groups(Kind::Computers, Trigger::Cli).await;
    assert!(refreshed.is_err(), "a database error is the caller's error");
    let runs = db.db.recent_runs("test", 5).await.expect("runs");
    let run = runs
        .iter()
        .find(|r| r.kind == "groups")
        .expect("the run row");
    assert_eq!(run.status, "failed", "{run:?}");
    assert!(run.error.is_some(), "{run:?}");
}
