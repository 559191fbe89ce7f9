//! Webhooks end to end: a real daemon process, real HTTP from the test (or from the
//! simulator's emitter), the durable queue in SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jamf_sync::domain::Kind;
use jamf_sync::simulator::webhooks::{envelope, SimEvent, WebhookFormat};
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::Store;
use serde_json::Value;

use crate::support::daemon::{free_port, Daemon};
use crate::support::db::open;
use crate::support::{self, TestDb};

pub(crate) const USER: &str = "jamf-hooks";
pub(crate) const PASSWORD: &str = "hook-password-for-tests";

/// Daemon settings shared by these tests: webhooks on with Basic auth, per-device fetches (so
/// every fetch is countable), no scheduled run during the test.
pub(crate) fn hook_env<'a>(
    coalesce_ms: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("JAMF_SYNC__JAMF__INSTANCE", "test"),
        ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", USER),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", PASSWORD),
        ("JAMF_SYNC__WEBHOOKS__COALESCE_MS", coalesce_ms),
        ("JAMF_SYNC__WEBHOOKS__MAX_DELAY_SECS", "120"),
        ("JAMF_SYNC__SYNC__STRATEGY", "detail"),
        ("JAMF_SYNC__MOBILE_DEVICES__SOURCE", "advanced-search"),
        ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 3 1 1 *"),
        ("JAMF_SYNC__RECONCILE__ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    env
}

pub(crate) fn computer_event(sim: &Simulator, name: &'static str, id: i64) -> SimEvent {
    let c = sim.computer(id).expect("sim computer");
    SimEvent {
        name,
        jss_id: id,
        udid: c.udid,
        serial: c.serial,
        device_name: c.name,
    }
}

pub(crate) fn mobile_event(sim: &Simulator, name: &'static str, id: i64) -> SimEvent {
    let m = sim.mobile(id).expect("sim mobile");
    SimEvent {
        name,
        jss_id: id,
        udid: m.udid,
        serial: m.serial,
        device_name: m.name,
    }
}

/// POSTs one envelope with the right credentials; returns the status.
pub(crate) async fn post(d: &Daemon, body: String, content_type: &str) -> u16 {
    d.http
        .post(format!("{}/webhooks/jamf", d.base))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub(crate) async fn status(d: &Daemon) -> Value {
    match d.get("/status").await {
        Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Value::Null,
    }
}

pub(crate) async fn wait_initial_syncs(d: &Daemon) {
    d.wait_for(60, "the start-up syncs of both kinds", || async {
        let s = status(d).await;
        s["kinds"][0]["last_success"]["status"] == "succeeded"
            && s["kinds"][1]["last_success"]["status"] == "succeeded"
    })
    .await;
}

pub(crate) async fn wait_queue_empty(d: &Daemon, secs: u64) {
    d.wait_for(secs, "an empty webhook queue", || async {
        status(d).await["webhooks"]["queue_depth"] == 0
    })
    .await;
}

/// A sample's value in a Prometheus scrape, summed over samples matching every label.
pub(crate) fn sum(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

both_backends!(burst_of_1000_events_for_300_devices);
async fn burst_of_1000_events_for_300_devices(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 400,
        mobile_devices: 150,
        latency_ms: 3,
        ..SimConfig::default()
    })
    .await;
    // Longer than the burst takes even on a loaded machine (under a second alone, over three
    // seconds beside the rest of the suite): events of one device within the window are one
    // fetch; one arriving after its device was fetched is rightly fetched again.
    const COALESCE: Duration = Duration::from_secs(8);
    let d = Daemon::start(&sim, db.url(), &hook_env("8000", &[]));
    d.wait_ready(30).await;
    wait_initial_syncs(&d).await;

    // 200 computers and 100 mobile devices change in Jamf; then Jamf tells us, noisily.
    let computers = sim.touch_random(200);
    let mobiles = sim.touch_random_mobiles(100);
    // Not reset: the peaks below must cover connections opened by the start-up syncs too.
    let computer_before = sim.requests_to("/api/v4/computers-inventory-detail/{id}");
    let mobile_before = sim.requests_to("/JSSResource/mobiledevices/id/{id}");
    let mut rng = fastrand::Rng::with_seed(9);
    let mut events = Vec::new();
    for id in &computers {
        events.push(computer_event(&sim, "ComputerInventoryCompleted", *id));
    }
    for id in &mobiles {
        events.push(mobile_event(&sim, "MobileDeviceInventoryCompleted", *id));
    }
    while events.len() < 1000 {
        if rng.bool() {
            let id = computers[rng.usize(..computers.len())];
            let name = [
                "ComputerCheckIn",
                "ComputerInventoryCompleted",
                "ComputerAdded",
            ][rng.usize(..3)];
            events.push(computer_event(&sim, name, id));
        } else {
            let id = mobiles[rng.usize(..mobiles.len())];
            events.push(mobile_event(&sim, "MobileDeviceInventoryCompleted", id));
        }
    }
    rng.shuffle(&mut events);
    let started = Instant::now();
    let codes: Vec<u16> = futures_util::stream::iter(events.iter().enumerate())
        .map(|(i, ev)| {
            let format = if i % 2 == 0 {
                WebhookFormat::Json
            } else {
                WebhookFormat::Xml
            };
            let (body, ct) = envelope(ev, format, 7);
            post(&d, body, ct)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sent_in = started.elapsed();
    assert!(
        sent_in < COALESCE,
        "the burst took {sent_in:?}, longer than the coalescing window: fetching each device once does not apply"
    );
    assert!(
        codes.iter().all(|c| *c == 202),
        "every event accepted: {:?}",
        codes
            .iter()
            .filter(|c| **c != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    wait_queue_empty(&d, 90).await;
    let drained_in = started.elapsed();

    // Every device is current, and each was fetched at most once.
    support::assert_matches_sim(db, &sim).await;
    support::assert_mobiles_match_sim(db, &sim).await;
    let computer_fetches =
        sim.requests_to("/api/v4/computers-inventory-detail/{id}") - computer_before;
    let mobile_fetches = sim.requests_to("/JSSResource/mobiledevices/id/{id}") - mobile_before;
    assert!(
        computer_fetches + mobile_fetches <= 300,
        "fetches {computer_fetches} + {mobile_fetches} exceed the 300 distinct devices ({})",
        db.backend()
    );
    assert_eq!(computer_fetches, 200, "each changed computer fetched");
    assert_eq!(mobile_fetches, 100, "each changed mobile device fetched");
    let stats = sim.stats();
    assert!(
        (1..=5).contains(&stats.peak_connections),
        "peak connections {}",
        stats.peak_connections
    );
    assert!(
        (1..=5).contains(&stats.peak_in_flight),
        "peak in flight {}",
        stats.peak_in_flight
    );
    eprintln!(
        "webhook burst ({}): 1000 events sent in {:.2}s, drained in {:.2}s, {} fetches, peak {} connections",
        db.backend(),
        sent_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        computer_fetches + mobile_fetches,
        stats.peak_connections
    );

    // Webhooks and a full sync at the same time share the five connections.
    let more = sim.touch_random(100);
    let (code, _) = d.trigger("?kind=computers&full=true").await;
    assert_eq!(code, 202);
    let codes: Vec<u16> = futures_util::stream::iter(more.iter())
        .map(|id| {
            let (body, ct) = envelope(
                &computer_event(&sim, "ComputerInventoryCompleted", *id),
                WebhookFormat::Json,
                7,
            );
            post(&d, body, ct)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(codes.iter().all(|c| *c == 202));
    wait_queue_empty(&d, 90).await;
    d.wait_for(60, "the full sync to finish", || async {
        status(&d).await["kinds"][0]["running"] == false
    })
    .await;
    support::assert_matches_sim(db, &sim).await;
    let stats = sim.stats();
    assert!(
        (1..=5).contains(&stats.peak_connections),
        "peak connections with a sync running {}",
        stats.peak_connections
    );
    assert!((1..=5).contains(&stats.peak_in_flight));

    let (_, scrape) = d.get("/metrics").await.expect("metrics");
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "queued")]
        ),
        1100.0
    );
    assert!(
        sum(
            &scrape,
            "jamf_sync_webhook_event_to_stored_seconds_count",
            &[]
        ) >= 1100.0
    );
    assert!(
        sum(
            &scrape,
            "jamf_sync_webhook_devices_total",
            &[("outcome", "stored")]
        ) >= 300.0
    );
    assert_eq!(sum(&scrape, "jamf_sync_webhook_queue_depth", &[]), 0.0);
}

both_backends!(kill_9_with_events_queued_loses_nothing);
async fn kill_9_with_events_queued_loses_nothing(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 120,
        mobile_devices: 20,
        ..SimConfig::default()
    })
    .await;
    let url = db.url().to_string();
    // A long coalescing window: accepted events wait in the queue.
    let mut d = Daemon::start(
        &sim,
        &url,
        &hook_env("600000", &[("JAMF_SYNC__WEBHOOKS__MAX_DELAY_SECS", "900")]),
    );
    d.wait_ready(30).await;
    wait_initial_syncs(&d).await;
    let changed = sim.touch_random(40);
    let unenrolled = sim.mobile_ids()[3];
    assert!(sim.unenroll_mobile(unenrolled));
    for id in &changed {
        let (body, ct) = envelope(
            &computer_event(&sim, "ComputerInventoryCompleted", *id),
            WebhookFormat::Json,
            1,
        );
        assert_eq!(post(&d, body, ct).await, 202);
    }
    let (body, ct) = envelope(
        &mobile_event(&sim, "MobileDeviceUnEnrolled", unenrolled),
        WebhookFormat::Xml,
        1,
    );
    assert_eq!(post(&d, body, ct).await, 202);
    assert_eq!(status(&d).await["webhooks"]["queue_depth"], 41);
    d.signal("-KILL");
    d.wait_exit(10);

    let db = open(&url).await;
    assert_eq!(
        db.webhook_queue_depth("test").await.expect("depth"),
        41,
        "202 means stored"
    );
    let stale = db.devices("test", Kind::Computers).await.expect("rows");
    let before = stale
        .iter()
        .filter(|c| changed.contains(&c.jamf_id))
        .filter(|c| {
            sim.computer(c.jamf_id).is_some_and(|s| {
                Some(s.report_date.timestamp_millis()) == c.as_of.map(|r| r.timestamp_millis())
            })
        })
        .count();
    assert_eq!(
        before, 0,
        "the changed devices are not current before the restart"
    );
    db.close().await;

    let d = Daemon::start(&sim, &url, &hook_env("200", &[]));
    d.wait_ready(30).await;
    wait_queue_empty(&d, 60).await;
    let tdb = TestDb::wrap(open(&url).await);
    support::assert_matches_sim(&tdb, &sim).await;
    let m = tdb
        .db
        .devices("test", Kind::MobileDevices)
        .await
        .expect("mobiles");
    let row = m
        .iter()
        .find(|r| r.jamf_id == unenrolled)
        .expect("kept, not deleted");
    assert_eq!(
        row.info.managed,
        Some(false),
        "an unenroll marks the device unmanaged"
    );
    assert!(row.deleted_at.is_none());
    tdb.cleanup().await;
}

both_backends!(simulator_events_reach_a_separate_webhook_listener);
async fn simulator_events_reach_a_separate_webhook_listener(db: &support::TestDb) {
    let hook_port = free_port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/webhooks/jamf");
    let sim = Simulator::start(
        SimConfig {
            computers: 60,
            mobile_devices: 20,
            webhook_url: Some(hook_url),
            webhook_format: WebhookFormat::Xml,
            webhook_username: Some(USER.into()),
            webhook_password: Some(PASSWORD.into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .expect("sim");
    let url = db.url().to_string();
    let listen = format!("127.0.0.1:{hook_port}");
    let d = Daemon::start(
        &sim,
        &url,
        &hook_env(
            "300",
            &[
                ("JAMF_SYNC__WEBHOOKS__LISTEN", &listen),
                ("JAMF_SYNC__WEBHOOKS__CHECKIN_REFRESH_SECS", "0"),
            ],
        ),
    );
    d.wait_ready(30).await;
    wait_initial_syncs(&d).await;
    // The main listener does not serve the webhook path when it has its own.
    let r = d
        .http
        .post(format!("{}/webhooks/jamf", d.base))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);

    sim.touch_ids(&[5, 6, 7]);
    sim.check_in(&[8]);
    let added = sim.add_computer(chrono::Duration::days(40));
    let gone = sim.mobile_ids()[0];
    assert!(sim.unenroll_mobile(gone));
    let enrolled = sim.add_mobile(chrono::Duration::days(30));
    let tdb = TestDb::wrap(open(&url).await);
    let started = Instant::now();
    loop {
        let rows = tdb.db.devices("test", Kind::Computers).await.expect("rows");
        let mobiles = tdb
            .db
            .devices("test", Kind::MobileDevices)
            .await
            .expect("mobiles");
        let current = [5, 6, 7, 8].iter().all(|id| {
            let s = sim.computer(*id).expect("sim");
            rows.iter().any(|r| {
                r.jamf_id == *id
                    && r.as_of.map(|t| t.timestamp_millis())
                        == Some(s.report_date.timestamp_millis())
                    && r.last_contact.map(|t| t.timestamp_millis())
                        == Some(s.last_contact.timestamp_millis())
            })
        });
        let has_added = rows.iter().any(|r| r.jamf_id == added);
        let unmanaged = mobiles
            .iter()
            .any(|m| m.jamf_id == gone && m.info.managed == Some(false));
        let has_enrolled = mobiles.iter().any(|m| m.jamf_id == enrolled);
        if current && has_added && unmanaged && has_enrolled {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "webhook updates not stored in 30 s (current {current}, added {has_added}, unmanaged {unmanaged}, enrolled {has_enrolled}; sim {:?})", sim.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = sim.stats();
    assert_eq!(
        stats.webhooks_sent, 7,
        "every emitted event was accepted: {stats:?}"
    );
    assert_eq!(stats.webhooks_failed, 0);
    assert_eq!(
        tdb.db
            .count_devices("test", Kind::Computers)
            .await
            .expect("count"),
        61
    );
    tdb.cleanup().await;
}

both_backends!(deferred_events_do_not_hold_back_newer_ones_and_the_queue_is_capped);
async fn deferred_events_do_not_hold_back_newer_ones_and_the_queue_is_capped(db: &TestDb) {
    use jamf_sync::domain::WebhookAction;
    use jamf_sync::store::NewWebhookEvent;
    let now = chrono::Utc::now();
    let event = |jamf_id| NewWebhookEvent {
        instance: "test",
        kind: Kind::Computers,
        jamf_id,
        event: "ComputerInventoryCompleted",
        action: WebhookAction::Refresh,
        received_at: now,
        event_at: None,
    };
    let failing = db
        .db
        .enqueue_webhook_event(&event(1), 3)
        .await
        .expect("enqueue")
        .expect("room");
    db.db
        .defer_webhook_events("test", &[failing], now + chrono::Duration::hours(1), "boom")
        .await
        .expect("defer");
    db.db
        .enqueue_webhook_event(&event(2), 3)
        .await
        .expect("enqueue")
        .expect("room");
    // Read with a limit of one: the deferred event must not take the newer one's place.
    let due = db
        .db
        .queued_webhook_events("test", chrono::Utc::now(), 1)
        .await
        .expect("read");
    assert_eq!(due.iter().map(|e| e.jamf_id).collect::<Vec<_>>(), vec![2]);
    let later = db
        .db
        .queued_webhook_events("test", now + chrono::Duration::hours(2), 10)
        .await
        .expect("read");
    assert_eq!(later.len(), 2, "due once its time has come");
    // The cap: a third event fits, a fourth does not.
    assert!(db
        .db
        .enqueue_webhook_event(&event(3), 3)
        .await
        .expect("enqueue")
        .is_some());
    assert!(db
        .db
        .enqueue_webhook_event(&event(4), 3)
        .await
        .expect("enqueue")
        .is_none());
    assert_eq!(db.db.webhook_queue_depth("test").await.expect("depth"), 3);
}
