//! `jamf-sync run`: schedules, endpoints and metrics, signals and crashes as a real process;
//! coalescing, a database that comes up late and refused credentials in-process.

use std::process::Command;
use std::time::{Duration, Instant};

use jamf_sync::domain::Kind;
use jamf_sync::simulator::SimConfig;
use jamf_sync::store::Store;
use serde_json::Value;

use crate::support;
use crate::support::daemon::{spawn_app, Daemon};
use crate::support::db::open;

both_backends!(scheduled_runs_metrics_status_and_healthcheck);
async fn scheduled_runs_metrics_status_and_healthcheck(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 200,
        mobile_devices: 50,
        ..SimConfig::default()
    })
    .await;
    let url = db.url().to_string();
    let d = Daemon::start(
        &sim,
        &url,
        &[
            ("JAMF_SYNC__SYNC__SCHEDULE", "*/2 * * * * *"),
            ("JAMF_SYNC__GROUPS__SCHEDULE", "*/3 * * * * *"),
        ],
    );
    d.wait_ready(20).await;
    // Runs happen on the schedule (and once at start-up).
    d.wait_for(20, "three computers runs", || async {
        let Some((200, body)) = d.get("/status").await else {
            return false;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["kinds"][0]["last_run"]["id"].as_i64().unwrap_or(0) >= 3
    })
    .await;
    let (_, body) = d.get("/status").await.expect("status");
    let status: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["kinds"][0]["kind"], "computers");
    assert_eq!(status["kinds"][1]["kind"], "mobile_devices");
    assert!(status["kinds"][0]["next_scheduled"].is_string(), "{status}");
    assert!(status["kinds"][1]["next_groups"].is_string(), "{status}");
    assert!(
        status["kinds"][1]["last_success"]["status"] == "succeeded",
        "{status}"
    );

    // A run is counted just after its row is finished: wait for the third count.
    d.wait_for(20, "three successful runs counted", || async {
        let Some((200, text)) = d.get("/metrics").await else {
            return false;
        };
        let counted: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("jamf_sync_runs_total{") && l.contains("result=\"succeeded\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counted >= 3.0
    })
    .await;
    // Group memberships are refreshed on their own schedule, for both kinds.
    d.wait_for(20, "group refreshes of both kinds", || async {
        let Some((200, text)) = d.get("/metrics").await else {
            return false;
        };
        ["computers", "mobile_devices"].iter().all(|kind| {
            text.lines().any(|l| {
                l.starts_with("jamf_sync_group_refreshes_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("result=\"succeeded\"")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
            })
        })
    })
    .await;
    let (code, text) = d.get("/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape =
        prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition format");
    let value = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref b) => {
                    b.last().map(|x| x.count).unwrap_or(0.0)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
    };
    assert_eq!(
        value("jamf_sync_devices_stored", Some(("kind", "computers"))),
        Some(200.0)
    );
    assert_eq!(
        value("jamf_sync_devices_stored", Some(("kind", "mobile_devices"))),
        Some(50.0)
    );
    assert_eq!(value("jamf_sync_build_info", None), Some(1.0));
    let succeeded: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "jamf_sync_runs_total" && s.labels.get("result") == Some("succeeded")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    // Run ids are shared by both kinds: the computers run with id >= 3 makes three in all.
    assert!(succeeded >= 3.0, "{succeeded} successful runs");
    assert!(
        value(
            "jamf_sync_last_success_timestamp_seconds",
            Some(("kind", "computers"))
        )
        .unwrap_or(0.0)
            > 1.7e9
    );
    let lag = value("jamf_sync_cursor_lag_seconds", Some(("kind", "computers"))).unwrap_or(-1.0);
    assert!((0.0..60.0).contains(&lag), "cursor lag {lag}");
    assert!(value("jamf_sync_http_requests_total", None).unwrap_or(0.0) > 0.0);
    // Series known in advance exist from start-up at zero, so `rate()` and `increase()` see
    // their first event.
    let series = |name: &str, labels: &[(&str, &str)]| -> Vec<f64> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .collect()
    };
    assert_eq!(series("jamf_sync_auth_failures_total", &[]), vec![0.0]);
    assert_eq!(
        series(
            "jamf_sync_runs_total",
            &[("kind", "computers"), ("result", "failed")]
        ),
        vec![0.0]
    );
    let throttled = series(
        "jamf_sync_http_retries_total",
        &[("reason", "throttled_429")],
    );
    assert!(
        throttled.len() >= 10 && throttled.iter().all(|v| *v == 0.0),
        "{throttled:?}"
    );
    assert_eq!(
        series(
            "jamf_sync_backoff_seconds_total",
            &[("reason", "server_503")]
        ),
        vec![0.0]
    );
    // Adaptive pacing moves it (a slow answer on a busy machine halves it); never above five.
    let limit = value(
        "jamf_sync_concurrency_limit",
        Some(("jamf_instance", "default")),
    );
    assert!(limit.is_some_and(|l| (1.0..=5.0).contains(&l)), "{limit:?}");
    for family in [
        "jamf_sync_http_request_duration_seconds",
        "jamf_sync_run_duration_seconds",
        "jamf_sync_records_total",
        "jamf_sync_last_run_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family} missing"
        );
    }

    // The container healthcheck subcommand.
    let port = d.base.rsplit(':').next().unwrap_or_default().to_string();
    let hc = Command::new(env!("CARGO_BIN_EXE_jamf-sync"))
        .arg("healthcheck")
        .env("JAMF_SYNC__SERVER__LISTEN", format!("0.0.0.0:{port}"))
        .output()
        .expect("healthcheck");
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stdout)
    );
    let hc = Command::new(env!("CARGO_BIN_EXE_jamf-sync"))
        .args(["healthcheck", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("healthcheck");
    assert!(!hc.status.success(), "nothing listens on port 9");

    // POST /sync needs the token.
    let r = reqwest::Client::new()
        .post(format!("{}/sync", d.base))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    drop(d);
    sim.stop().await;
}

both_backends!(simultaneous_triggers_make_one_run);
async fn simultaneous_triggers_make_one_run(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 200,
        mobile_devices: 0,
        latency_ms: 5,
        ..SimConfig::default()
    })
    .await;
    // No schedule in the way: yearly, and no catch-up at start.
    let d = spawn_app(
        &sim,
        db.url(),
        &[
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
            ("JAMF_SYNC__SYNC__ON_START", "false"),
            ("JAMF_SYNC__SYNC__STRATEGY", "detail"),
            ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
        ],
    )
    .await;
    d.wait_ready(20).await;
    let (a, b) = tokio::join!(
        d.trigger("?kind=computers&full=true"),
        d.trigger("?kind=computers&full=true")
    );
    let accepted = [&a, &b]
        .iter()
        .filter(|(code, body)| *code == 202 && body["accepted"][0] == "computers")
        .count();
    assert_eq!(accepted, 1, "{a:?} {b:?}");
    assert!([&a, &b]
        .iter()
        .any(|(code, body)| *code == 409 && body["coalesced"][0] == "computers"));
    d.wait_for(30, "the api run to finish", || async {
        let v = d.status().await;
        v["kinds"][0]["last_run"]["status"] == "succeeded" && v["kinds"][0]["running"] == false
    })
    .await;
    let runs = db.db.recent_runs("default", 100).await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, "api");
    assert_eq!(runs[0].counts.upserted, 200);
    d.stop().await.expect("clean shutdown");
    sim.stop().await;
}

both_backends!(sigterm_mid_run_interrupts_cleanly_and_kill_9_loses_nothing);
async fn sigterm_mid_run_interrupts_cleanly_and_kill_9_loses_nothing(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 1500,
        mobile_devices: 0,
        latency_ms: 15,
        ..SimConfig::default()
    })
    .await;
    let url = db.url().to_string();
    let slow = [
        ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
        ("JAMF_SYNC__SYNC__STRATEGY", "detail"),
        ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
        ("JAMF_SYNC__SYNC__SHUTDOWN_GRACE_SECS", "10"),
    ];
    let db = open(&url).await;
    let wait_progress = |min: i64| {
        let db = db.clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(runs) = db.recent_runs("default", 1).await {
                    if runs
                        .first()
                        .is_some_and(|r| r.status == "running" && r.counts.upserted >= min)
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no progress");
        }
    };

    // SIGTERM mid-run: exit 0 within the grace period, run interrupted, pages kept.
    let mut d = Daemon::start(&sim, &url, &slow);
    wait_progress(200).await;
    let t = Instant::now();
    d.signal("-TERM");
    assert_eq!(d.wait_exit(15), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10));
    let run = db.recent_runs("default", 1).await.expect("runs").remove(0);
    assert_eq!(run.status, "interrupted", "{run:?}");
    assert!(run.cursor_after.is_none());
    let stored = db
        .count_devices("default", Kind::Computers)
        .await
        .expect("count");
    assert_eq!(
        stored, run.counts.upserted,
        "every committed page is intact"
    );
    assert!(stored > 0 && stored < 1500);
    assert!(db
        .cursor("default", Kind::Computers)
        .await
        .expect("cursor")
        .is_none());

    // kill -9 mid-run: on restart the crashed run is marked interrupted and the catch-up run
    // completes the window without duplicates.
    let mut d = Daemon::start(&sim, &url, &slow);
    wait_progress(stored + 100).await;
    d.signal("-KILL");
    let _ = d.wait_exit(5);
    let crashed = db.recent_runs("default", 1).await.expect("runs").remove(0);
    assert_eq!(
        crashed.status, "running",
        "a killed process leaves its run running"
    );
    // Its row counts every write it committed (PostgreSQL commits two at once, in any order).
    let after_kill = db
        .count_devices("default", Kind::Computers)
        .await
        .expect("count");
    assert_eq!(after_kill, stored + crashed.counts.upserted, "{crashed:?}");
    let d = Daemon::start(&sim, &url, &slow);
    d.wait_for(60, "the catch-up run to succeed", || async {
        db.recent_runs("default", 1)
            .await
            .ok()
            .and_then(|r| r.first().map(|r| r.status == "succeeded"))
            .unwrap_or(false)
    })
    .await;
    let runs = db.recent_runs("default", 10).await.expect("runs");
    let after_crash = runs
        .iter()
        .find(|r| r.id == crashed.id)
        .expect("crashed run");
    assert_eq!(after_crash.status, "interrupted");
    drop(d);
    let test_db = support::TestDb::wrap(db);
    let rows = support::stored_instance(&test_db, "default").await;
    assert_eq!(rows.len(), 1500, "no lost devices");
    let mut ids: Vec<i64> = rows.iter().map(|r| r.jamf_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1500, "no duplicates");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_start_then_up() {
    let sim = support::sim(SimConfig {
        computers: 40,
        mobile_devices: 10,
        ..SimConfig::default()
    })
    .await;
    // A fresh PostgreSQL database behind a port where nothing listens yet.
    let pg = support::postgres().await;
    let real: url::Url = pg.url().parse().expect("url");
    let real_port = real.port().unwrap_or(5432);
    // Bound but not listening: the port is ours (no other test can take it) and refuses
    // connections, like a database that is down.
    let socket = (0..20)
        .find_map(|_| {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.set_reuseaddr(true).ok()?;
            socket.bind("127.0.0.1:0".parse().ok()?).ok()?;
            Some(socket)
        })
        .expect("a bindable port");
    let port = socket.local_addr().expect("addr").port();
    let mut proxied = real.clone();
    proxied.set_port(Some(port)).expect("port");
    let d = spawn_app(
        &sim,
        proxied.as_str(),
        &[("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *")],
    )
    .await;
    d.wait_for(20, "/readyz to answer", || async {
        d.get("/readyz").await.is_some()
    })
    .await;
    let (code, body) = d.get("/readyz").await.expect("readyz");
    assert_eq!(code, 503);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["database"], "unreachable", "{body}");
    assert_eq!(v["ready"], false);
    // Unauthenticated: it says what is not ready, never where (host, port, user, database).
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&port.to_string()),
        "{body}"
    );
    assert_eq!(d.get("/healthz").await.map(|r| r.0), Some(200));
    // The database comes up.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", real_port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    d.wait_ready(40).await;
    d.wait_for(30, "the catch-up runs", || async {
        pg.db
            .count_devices("default", Kind::Computers)
            .await
            .unwrap_or(0)
            == 40
            && pg
                .db
                .count_devices("default", Kind::MobileDevices)
                .await
                .unwrap_or(0)
                == 10
    })
    .await;
    d.stop().await.expect("clean shutdown");
    proxy.abort();
    sim.stop().await;
}

// Ready is about this process serving (issue 17): a Jamf that refuses the credentials is
// reported, in /readyz's body and in /status, but does not take the process out of service.
both_backends!(readyz_reports_jamf_refusing_the_credentials_without_going_unready);
async fn readyz_reports_jamf_refusing_the_credentials_without_going_unready(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 5,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let url = db.url().to_string();
    let d = spawn_app(
        &sim,
        &url,
        &[
            ("JAMF_SYNC__JAMF__CLIENT_SECRET", "not-the-secret"),
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
        ],
    )
    .await;
    d.wait_for(20, "the database part of /readyz", || async {
        d.get("/readyz")
            .await
            .is_some_and(|(_, b)| b.contains("\"database\":\"ok\""))
    })
    .await;
    // The start-up check fails (on PostgreSQL once the process holds the instance).
    d.wait_for(20, "the refused credentials in /readyz", || async {
        d.get("/readyz")
            .await
            .is_some_and(|(_, b)| b.contains("authentication has not succeeded"))
    })
    .await;
    let (code, body) = d.get("/readyz").await.expect("readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("authentication has not succeeded"), "{body}");
    assert_eq!(d.get("/healthz").await.map(|r| r.0), Some(200));
    let (_, status) = d.get("/status").await.expect("status");
    assert!(
        status.contains("authentication has not succeeded"),
        "{status}"
    );
    sim.stop().await;
}
