//! One odd record never stops a sync (issue 27): records with values no schema foresees are
//! stored whole on both backends (what the database cannot hold replaced), a record the
//! database still refuses is isolated in `sync_failures` while the rest of its page is stored,
//! a failing database still fails the run, and a run that isolates too much fails with its
//! cursor where it was.

use jamf_sync::config::FetchStrategy;
use jamf_sync::domain::children::{COMPUTER_APPLICATIONS, MOBILE_DEVICE_APPLICATIONS};
use jamf_sync::domain::{Kind, RunStatus};
use jamf_sync::simulator::odd::{Oddity, APP_NAME_ESCAPES, APP_NAME_ESCAPES_XML};
use jamf_sync::simulator::SimConfig;
use jamf_sync::store::Store;

use crate::support::{self, TestDb};

const SECTIONS: &[&str] = &[
    "GENERAL",
    "HARDWARE",
    "OPERATING_SYSTEM",
    "USER_AND_LOCATION",
    "EXTENSION_ATTRIBUTES",
    "APPLICATIONS",
];

fn sync_cfg() -> jamf_sync::config::SyncConfig {
    jamf_sync::config::SyncConfig {
        sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
        ..support::sync_cfg(100, FetchStrategy::Inline)
    }
}

/// Runs statements on the test database (setup only: triggers that refuse rows).
async fn exec(db: &TestDb, statements: &[&'static str]) {
    for sql in statements {
        db.execute(sql, None)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A trigger on `computers` that refuses the row of computer 17 (or every row) with an error
/// of the record's kind, or of the database's.
async fn refuse(db: &TestDb, which: &str) {
    match (db.backend(), which) {
        ("sqlite", "record") => {
            exec(
                db,
                &[
                    "CREATE TRIGGER refuse BEFORE INSERT ON computers WHEN NEW.jamf_id = 17 \
                   BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
                ],
            )
            .await
        }
        ("sqlite", "every") => {
            exec(
                db,
                &["CREATE TRIGGER refuse BEFORE INSERT ON computers \
                   BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"],
            )
            .await
        }
        // "no such table" when it fires: SQLITE_ERROR, the database's (as a bug in our SQL).
        ("sqlite", "database") => {
            exec(
                db,
                &[
                    "CREATE TRIGGER refuse BEFORE INSERT ON computers WHEN NEW.jamf_id = 17 \
                   BEGIN INSERT INTO no_such_table VALUES (1); END",
                ],
            )
            .await
        }
        (_, which) => {
            let function = match which {
                "record" => {
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.jamf_id = 17 THEN RAISE EXCEPTION 'refused for the test' \
                     USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
                }
                "every" => {
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'check_violation'; \
                     END $$"
                }
                _ => {
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.jamf_id = 17 THEN RAISE EXCEPTION 'out of disk for the test' \
                     USING ERRCODE = 'disk_full'; END IF; RETURN NEW; END $$"
                }
            };
            exec(
                db,
                &[
                    function,
                    "CREATE TRIGGER refuse BEFORE INSERT ON computers FOR EACH ROW \
                     EXECUTE FUNCTION refuse()",
                ],
            )
            .await
        }
    }
}

async fn unrefuse(db: &TestDb) {
    match db.backend() {
        "sqlite" => exec(db, &["DROP TRIGGER refuse"]).await,
        _ => {
            exec(
                db,
                &["DROP TRIGGER refuse ON computers", "DROP FUNCTION refuse()"],
            )
            .await
        }
    }
}

/// The computer each oddity is served on.
fn odd_ids() -> Vec<(i64, Oddity)> {
    Oddity::ALL
        .iter()
        .enumerate()
        .map(|(i, o)| (10 + 33 * i as i64, *o))
        .collect()
}

both_backends!(odd_computers_are_stored_whole);
async fn odd_computers_are_stored_whole(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 300,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    for (id, odd) in odd_ids() {
        sim.set_odd(id, Some(odd));
    }
    let engine = support::engine(db, support::settings(&sim), sync_cfg());
    let first = support::run(&engine, true).await;
    assert!(first.succeeded(), "{first} ({})", db.backend());
    assert_eq!(first.counts.fetched, 300, "{first}");
    assert_eq!(first.counts.failed, 0, "{first}");
    let failures = db.db.sync_failures("test", Kind::Computers).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let stored = support::stored(db).await;
    assert_eq!(stored.len(), 300);
    let cursor = support::cursor(db).await.expect("the cursor moved");

    let device = |id: i64| stored.iter().find(|d| d.jamf_id == id).expect("stored");
    let apps = db
        .db
        .child_rows("test", &COMPUTER_APPLICATIONS)
        .await
        .unwrap();
    let app_with = |id: i64, column: usize, len: usize| {
        apps.iter()
            .any(|(i, v)| *i == id && v[column].as_ref().map(String::len) == Some(len))
    };
    let eas = db
        .db
        .extension_attributes("test", Kind::Computers)
        .await
        .unwrap();
    for (id, odd) in odd_ids() {
        let d = device(id);
        let sim_c = sim.computer(id).expect("sim computer");
        match odd {
            Oddity::SurrogateUnread => {
                assert!(
                    d.raw.contains("A\u{fffd}") || d.raw.contains("A\\ufffd"),
                    "{}",
                    d.raw
                )
            }
            Oddity::SurrogateInName => {
                assert_eq!(d.info.name, Some(format!("{}\u{fffd}", sim_c.name)))
            }
            Oddity::LongAppVersion => {
                assert!(app_with(id, 2, 4000), "the version stored whole");
            }
            Oddity::LongAppName => {
                assert!(app_with(id, 0, 3000), "the name stored whole");
            }
            Oddity::NulInEaValue => {
                assert!(
                    eas.iter()
                        .any(|(i, _, v)| *i == id && v.as_deref() == Some("before\u{fffd}after")),
                    "the NUL replaced"
                )
            }
            Oddity::LongEaName => assert!(
                eas.iter().any(|(i, n, _)| *i == id && n.len() == 3000),
                "the long name stored whole"
            ),
            Oddity::LongSerial => {
                assert_eq!(d.info.serial_number.as_ref().map(String::len), Some(3000))
            }
            Oddity::ControlInName => assert_eq!(
                d.info.name,
                Some(format!("{}\u{fffd}\u{1}\nINFO forged", sim_c.name))
            ),
            Oddity::EscapesInAppName => {
                let want = APP_NAME_ESCAPES.replace('\0', "\u{fffd}");
                assert!(
                    apps.iter()
                        .any(|(i, v)| *i == id && v[0].as_deref() == Some(want.as_str())),
                    "tab, newline, CR, backslashes and \\N stored as served, the NUL replaced"
                );
            }
        }
    }

    // The next delta is not blocked, and the odd devices changing again are written over
    // (their history rows embed the long names).
    let ids: Vec<i64> = odd_ids().iter().map(|(id, _)| *id).collect();
    sim.touch_ids(&ids);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta} ({})", db.backend());
    assert_eq!(delta.counts.failed, 0, "{delta}");
    assert!(delta.counts.upserted >= ids.len() as i64, "{delta}");
    assert!(support::cursor(db).await.expect("cursor") > cursor);
    sim.stop().await;
}

both_backends!(odd_mobile_devices_are_stored_whole);
async fn odd_mobile_devices_are_stored_whole(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 60,
        ..SimConfig::default()
    })
    .await;
    for (i, odd) in Oddity::ALL.iter().enumerate() {
        sim.set_odd_mobile(3 + 7 * i as i64, Some(*odd));
    }
    // Mobile devices through the advanced search and Classic XML records (the default).
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    let run = support::run_mobile(&engine, true).await;
    assert!(run.succeeded(), "{run} ({})", db.backend());
    assert_eq!(run.counts.failed, 0, "{run}");
    assert_eq!(
        db.db
            .count_devices("test", Kind::MobileDevices)
            .await
            .unwrap(),
        60
    );
    let apps = db
        .db
        .child_rows("test", &MOBILE_DEVICE_APPLICATIONS)
        .await
        .unwrap();
    let long_name = 3 + 7 * 3;
    assert!(
        apps.iter()
            .any(|(id, v)| *id == long_name && v[0].as_ref().map(String::len) == Some(3000)),
        "the 3,000-character application name is stored whole"
    );
    let escapes = 3 + 7 * 8;
    let want = APP_NAME_ESCAPES_XML.replace('\0', "\u{fffd}");
    assert!(
        apps.iter()
            .any(|(id, v)| *id == escapes && v[0].as_deref() == Some(want.as_str())),
        "the escaped application name is stored as served"
    );
    let control = support::stored_device(db, Kind::MobileDevices, 3 + 7 * 7).await;
    assert!(
        control
            .info
            .name
            .as_deref()
            .is_some_and(|n| n.contains('\u{fffd}') && !n.contains('\0')),
        "{:?}",
        control.info.name
    );
    sim.stop().await;
}

both_backends!(a_record_the_database_refuses_is_isolated);
async fn a_record_the_database_refuses_is_isolated(db: &TestDb) {
    let (sim, engine) = support::computers_fleet(db, 300).await;
    refuse(db, "record").await;
    let run = support::run(&engine, true).await;
    assert!(run.succeeded(), "{run} ({})", db.backend());
    assert_eq!(run.counts.failed, 1, "{run}");
    assert_eq!(run.counts.fetched, 299, "{run}");
    let stored: Vec<i64> = support::stored(db)
        .await
        .iter()
        .map(|d| d.jamf_id)
        .collect();
    assert_eq!(stored.len(), 299);
    assert!(!stored.contains(&17));
    let failures = db.db.sync_failures("test", Kind::Computers).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].jamf_id, 17);
    assert!(
        failures[0].error.contains("refused for the test"),
        "{failures:?}"
    );
    let row = support::last_run(db).await;
    assert_eq!(
        (row.counts.failed, row.counts.fetched),
        (1, 299),
        "the run's row agrees"
    );
    assert!(support::cursor(db).await.is_some(), "the cursor moved");

    // Refused again on the next run: still one row, a second attempt.
    let again = support::run(&engine, false).await;
    assert!(again.succeeded(), "{again}");
    let failures = db.db.sync_failures("test", Kind::Computers).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].attempts, 2, "{failures:?}");

    // Once the database takes it, the next run's retry stores it and clears its row.
    unrefuse(db).await;
    let fixed = support::run(&engine, false).await;
    assert!(fixed.succeeded(), "{fixed}");
    support::assert_matches_sim(db, &sim).await;
    assert!(db
        .db
        .sync_failures("test", Kind::Computers)
        .await
        .unwrap()
        .is_empty());
    sim.stop().await;
}

both_backends!(a_failing_database_still_fails_the_run);
async fn a_failing_database_still_fails_the_run(db: &TestDb) {
    let (sim, engine) = support::computers_fleet(db, 300).await;
    refuse(db, "database").await;
    let run = support::run(&engine, true).await;
    assert_eq!(run.status, RunStatus::Failed, "{run} ({})", db.backend());
    assert!(
        support::cursor(db).await.is_none(),
        "a failed run never moves the cursor"
    );
    assert!(
        db.db
            .sync_failures("test", Kind::Computers)
            .await
            .unwrap()
            .is_empty(),
        "nothing is blamed on a record"
    );
    sim.stop().await;
}

both_backends!(a_run_that_isolates_too_much_fails);
async fn a_run_that_isolates_too_much_fails(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 3000,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    // A schema problem refuses every row.
    refuse(db, "every").await;
    let run = support::run(&engine, true).await;
    assert_eq!(run.status, RunStatus::Failed, "{run} ({})", db.backend());
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("schema or server-wide problem"), "{error}");
    assert!(support::cursor(db).await.is_none(), "the cursor stays");
    // Stopped once past the cap (its first write): at most the writes in flight then went on
    // (two on PostgreSQL, each of up to 1,000 records when pages queue up behind the
    // writer), not the rest of the fleet.
    assert!(
        run.counts.failed <= 2 * 1000,
        "it stopped soon after the cap: {run}"
    );
    sim.stop().await;
}
