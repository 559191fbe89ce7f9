//! Mobile devices: advanced search + XML records, and the Jamf Pro API alternative.

use jamf_sync::config::{FetchStrategy, MobileDevicesConfig, MobileSource};
use jamf_sync::domain::Kind;
use jamf_sync::simulator::{Faults, SimConfig};
use jamf_sync::store::Store;
use serde_json::Value;

use crate::support::{self, TestDb};

const RECORD: &str = "/JSSResource/mobiledevices/id/{id}";
const SEARCH: &str = "/JSSResource/advancedmobiledevicesearches/id/{id}";

fn engine(
    db: &TestDb,
    sim: &jamf_sync::simulator::Simulator,
    mobile: MobileDevicesConfig,
) -> jamf_sync::sync::Engine<jamf_sync::store::Db> {
    support::engine(
        db,
        support::settings(sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    )
    .with_mobile(mobile)
}

both_backends!(advanced_search_full_then_delta);
async fn advanced_search_full_then_delta(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 400,
        ..SimConfig::default()
    })
    .await;
    let engine = engine(db, &sim, MobileDevicesConfig::default());
    let first = support::run_mobile(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.mode, "full");
    assert_eq!(first.counts.fetched, 400);
    assert_eq!(sim.requests_to(RECORD), 400);
    support::assert_mobiles_match_sim(db, &sim).await;
    // Non-ASCII and XML-special characters survive the round trip (ids divisible by 5).
    let rows = db
        .db
        .devices("test", Kind::MobileDevices)
        .await
        .expect("rows");
    let special = rows.iter().find(|r| r.jamf_id == 5).expect("device 5");
    assert_eq!(special.info.name.as_deref(), Some("Zoë’s iPad & <Cart 5>"));
    let raw: Value = serde_json::from_str(&special.raw).expect("raw is JSON");
    assert_eq!(raw["location"]["department"], "R&D <Labs> 'West'");
    assert_eq!(
        raw["applications"].as_array().map(Vec::len),
        Some(2),
        "lists are arrays"
    );
    assert_eq!(raw["general"]["asset_tag"], "");
    let eas = db
        .db
        .extension_attributes("test", Kind::MobileDevices)
        .await
        .expect("eas");
    assert_eq!(eas.len(), 400);
    assert!(eas.iter().all(|(_, name, _)| name == "Cart"));

    sim.reset_stats();
    let changed = sim.touch_random_mobiles(20);
    let second = support::run_mobile(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    assert_eq!(second.mode, "delta");
    assert_eq!(second.counts.upserted, 20, "{second}");
    // Only devices inside the search window (and the prefilter's tolerance) are fetched.
    assert!(sim.requests_to(RECORD) < 400 / 2, "{:?}", sim.stats());
    support::assert_mobiles_match_sim(db, &sim).await;
    let eas = db
        .db
        .extension_attributes("test", Kind::MobileDevices)
        .await
        .expect("eas");
    let (_, _, value) = eas.iter().find(|(id, _, _)| *id == changed[0]).expect("ea");
    assert_eq!(value.as_deref(), Some("rev 1 & <more>"));

    // One saved search, created once and updated on every later run, never duplicated.
    let third = support::run_mobile(&engine, false).await;
    assert!(third.succeeded(), "{third}");
    let searches = sim.searches();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].name, "jamf-sync: inventory updated recently");
    assert_eq!(searches[0].updates, 2);
    assert_eq!(
        searches[0].less_than_days,
        Some(2),
        "a daily delta asks for 1 day + 1"
    );
    // A forced full run clears the criterion again.
    let full = support::run_mobile(&engine, true).await;
    assert_eq!(full.counts.unchanged, 400, "{full}");
    assert_eq!(sim.searches()[0].less_than_days, None);
    assert_eq!(
        db.db
            .count_devices("test", Kind::MobileDevices)
            .await
            .expect("count"),
        400
    );
    sim.stop().await;
}

both_backends!(pro_api_full_then_delta);
async fn pro_api_full_then_delta(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 250,
        ..SimConfig::default()
    })
    .await;
    let engine = engine(
        db,
        &sim,
        MobileDevicesConfig {
            source: MobileSource::ProApi,
            ..MobileDevicesConfig::default()
        },
    );
    let first = support::run_mobile(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.counts.fetched, 250);
    // Nothing stored yet: the probe for the highest id and the count, then the three pages
    // at once (too short a listing for one-record ramp pages).
    assert_eq!(sim.requests_to("/api/v2/mobile-devices/detail"), 4);
    assert_eq!(sim.requests_to(SEARCH), 0);
    support::assert_mobiles_match_sim(db, &sim).await;
    sim.touch_random_mobiles(10);
    let second = support::run_mobile(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    assert_eq!(second.counts.upserted, 10, "{second}");
    support::assert_mobiles_match_sim(db, &sim).await;
    sim.stop().await;
}

both_backends!(auto_source_follows_the_server_version);
async fn auto_source_follows_the_server_version(db: &TestDb) {
    let auto = MobileDevicesConfig {
        source: MobileSource::Auto,
        ..MobileDevicesConfig::default()
    };
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 30,
        version: "11.3.0".into(),
        ..SimConfig::default()
    })
    .await;
    assert!(support::run_mobile(&engine(db, &sim, auto.clone()), false)
        .await
        .succeeded());
    assert_eq!(sim.requests_to("/api/v2/mobile-devices/detail"), 0);
    assert_eq!(sim.requests_to(RECORD), 30);
    sim.stop().await;
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 30,
        ..SimConfig::default()
    })
    .await;
    assert!(support::run_mobile(&engine(db, &sim, auto), true)
        .await
        .succeeded());
    assert_eq!(sim.requests_to("/api/v2/mobile-devices/detail"), 1);
    assert_eq!(sim.requests_to(RECORD), 0);
    sim.stop().await;
}

both_backends!(replication_lag_deleted_devices_bad_records_and_faults);
async fn replication_lag_deleted_devices_bad_records_and_faults(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 300,
        // No session affinity: a new search is invisible for a while on the "other node".
        sticky_sessions: false,
        replication_lag_ms: 400,
        latency_ms: 2,
        faults: Faults {
            rate_500: 0.01,
            rate_502: 0.01,
            rate_503: 0.01,
            rate_quota: 0.01,
            rate_reset: 0.01,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    sim.vanish_mobile(7);
    sim.corrupt_mobile(9);
    let engine = engine(db, &sim, MobileDevicesConfig::default());
    let run = support::run_mobile(&engine, false).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.counts.missing, 1, "device 7 answered 404: {run}");
    // Device 9's record is truncated. A device whose every attempt drew an injected 500 looks
    // like a broken record too: isolated, recorded, read by the next run.
    let failing: Vec<i64> = db
        .db
        .sync_failures("test", Kind::MobileDevices)
        .await
        .expect("failures")
        .iter()
        .map(|f| f.jamf_id)
        .collect();
    assert!(
        failing.contains(&9),
        "device 9's record was truncated: {run}"
    );
    assert!(run.counts.failed <= 3, "only the odd devices: {run}");
    assert_eq!(run.counts.failed, failing.len() as i64, "{run}");
    assert_eq!(run.counts.upserted + run.counts.failed, 299, "{run}");
    let stats = sim.stats();
    assert!(
        sim.requests_to(SEARCH) >= 2,
        "the lagging search was retried: {stats:?}"
    );
    assert!(stats.faults_injected > 0, "{stats:?}");
    assert!(
        stats.peak_in_flight <= 5 && stats.peak_connections <= 5,
        "{stats:?}"
    );
    let ids: Vec<i64> = db
        .db
        .devices("test", Kind::MobileDevices)
        .await
        .expect("rows")
        .iter()
        .map(|r| r.jamf_id)
        .collect();
    assert!(!ids.contains(&7) && !ids.contains(&9));
    assert_eq!(ids.len() as i64, 299 - run.counts.failed);
    sim.stop().await;
}

both_backends!(a_configured_search_id_is_used_as_is);
async fn a_configured_search_id_is_used_as_is(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 20,
        ..SimConfig::default()
    })
    .await;
    // Let jamf-sync create a search, then point a second configuration at it by id.
    let first = support::run_mobile(&engine(db, &sim, MobileDevicesConfig::default()), false).await;
    assert!(first.succeeded());
    let id = sim.searches()[0].id;
    let fixed = MobileDevicesConfig {
        search_id: Some(id),
        search_name: "ignored".into(),
        ..MobileDevicesConfig::default()
    };
    let second = support::run_mobile(&engine(db, &sim, fixed), false).await;
    assert!(second.succeeded(), "{second}");
    let searches = sim.searches();
    assert_eq!(searches.len(), 1, "no new search");
    assert_eq!(searches[0].updates, 0, "a configured search is not edited");
    sim.stop().await;
}

#[tokio::test]
async fn two_installations_never_share_a_search() {
    use jamf_sync::config::{Config, Sources};
    use jamf_sync::domain::Trigger;
    use jamf_sync::sync::SyncOptions;
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 10,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..2 {
        let db = support::sqlite().await;
        let env = crate::support::daemon::daemon_env(&sim, db.url(), &[])
            .into_iter()
            .collect();
        let cfg = Config::load(&Sources {
            file: None,
            env: Some(env),
        })
        .expect("config");
        let app = jamf_sync::app::App::open(&cfg, cfg.jamf_settings().expect("settings"))
            .await
            .expect("app");
        let run = app
            .engine
            .sync(Kind::MobileDevices, SyncOptions::new(false, Trigger::Cli))
            .await
            .expect("run");
        assert!(run.succeeded(), "{run}");
        app.close().await;
    }
    let names: Vec<String> = sim.searches().into_iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 2, "one search per installation: {names:?}");
    assert_ne!(names[0], names[1]);
    for name in &names {
        assert!(
            name.starts_with("jamf-sync: inventory updated recently [default "),
            "{name}"
        );
    }
    sim.stop().await;
}

both_backends!(a_configured_search_that_does_not_cover_the_run_is_refused);
async fn a_configured_search_that_does_not_cover_the_run_is_refused(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 20,
        ..SimConfig::default()
    })
    .await;
    let client = jamf_sync::jamf::JamfClient::new(support::settings(&sim)).expect("client");
    let narrow = jamf_sync::jamf::classic::search_xml("someone's 2-day search", Some(2));
    let id = client.create_search(&narrow).await.expect("create");
    let fixed = MobileDevicesConfig {
        search_id: Some(id),
        ..MobileDevicesConfig::default()
    };
    // A first (full) run must not take a 2-day window for the whole fleet.
    let run = support::run_mobile(&engine(db, &sim, fixed), false).await;
    assert!(!run.succeeded(), "{run}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("mobile_devices.search_id"), "{error}");
    assert_eq!(run.counts.upserted, 0, "{run}");
    assert_eq!(
        db.db
            .cursor("test", Kind::MobileDevices)
            .await
            .expect("cursor"),
        None,
        "a refused run never moves the cursor"
    );
    sim.stop().await;
}

both_backends!(the_pro_api_reads_leniently_past_a_device_jamf_cannot_process);
async fn the_pro_api_reads_leniently_past_a_device_jamf_cannot_process(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 30,
        ..SimConfig::default()
    })
    .await;
    // Strictly, Jamf answers 500 for any page holding device 4.
    sim.set_broken_mobile(4, true);
    let pro = MobileDevicesConfig {
        source: MobileSource::ProApi,
        ..MobileDevicesConfig::default()
    };
    let run = support::run_mobile(&engine(db, &sim, pro), false).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.counts.fetched, 30, "{run}");
    let four = support::stored_device(db, Kind::MobileDevices, 4).await;
    let raw: Value = serde_json::from_str(&four.raw).expect("json");
    assert!(
        raw["hardware"].is_null(),
        "the section Jamf could not process: {raw}"
    );
    assert!(raw["general"].is_object(), "{raw}");
    sim.stop().await;
}
