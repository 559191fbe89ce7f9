//! The commands as users run them: sync, reconcile, migrate, simulate, webhooks setup; exit
//! status, output and logs.

use std::process::Command;

use jamf_sync::simulator::{SimConfig, Simulator};

use crate::cli::{assert_fails_naming, jamf_sync, jamf_sync_async, text, SECRET};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_setup_creates_then_updates() {
    let sim = support::sim(SimConfig {
        computers: 5,
        mobile_devices: 5,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let url = sim.url();
    let env = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        (
            "JAMF_SYNC__WEBHOOKS__PUBLIC_URL",
            "https://hooks.example.com/webhooks/jamf",
        ),
        ("JAMF_SYNC__WEBHOOKS__USERNAME", "jamf-hooks"),
        ("JAMF_SYNC__WEBHOOKS__PASSWORD", SECRET),
    ];
    // Without a public URL it names the key and changes nothing.
    let o = jamf_sync_async(&["webhooks", "setup"], &env[..3], dir.path()).await;
    assert_fails_naming(&o, "webhooks.public_url");
    assert!(sim.webhooks().is_empty());

    let o = jamf_sync_async(&["webhooks", "setup"], &env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches("created webhook").count(), 6, "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    let o = jamf_sync_async(&["webhooks", "setup"], &env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(
        t.matches("updated webhook").count(),
        6,
        "run again: updated, not duplicated: {t}"
    );
    let hooks = sim.webhooks();
    assert_eq!(hooks.len(), 6);
    let mut events: Vec<&str> = hooks.iter().map(|h| h.event.as_str()).collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "ComputerAdded",
            "ComputerCheckIn",
            "ComputerInventoryCompleted",
            "MobileDeviceEnrolled",
            "MobileDeviceInventoryCompleted",
            "MobileDeviceUnEnrolled"
        ]
    );
    for h in &hooks {
        assert_eq!(h.url, "https://hooks.example.com/webhooks/jamf");
        assert_eq!(h.authentication_type, "BASIC");
        assert_eq!(h.username, "jamf-hooks");
        assert!(h.enabled);
        assert_eq!(h.name, format!("jamf-sync {}", h.event));
    }
    let stats = sim.stats();
    assert_eq!((stats.webhooks_created, stats.webhooks_updated), (6, 6));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_command_exit_status_and_no_secret_in_output() {
    let sim = support::sim(SimConfig {
        computers: 120,
        mobile_devices: 30,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let base = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let mut ok_env = base.to_vec();
    ok_env.push(("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"));
    let o = jamf_sync_async(&["sync"], &ok_env, dir.path()).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("computers full sync succeeded"), "{t}");
    assert!(
        out.contains("mobile_devices full sync succeeded"),
        "both kinds by default: {t}"
    );
    assert!(!t.contains("sim-token-"), "a bearer token was logged: {t}");

    let mut bad_env = base.to_vec();
    bad_env.push(("JAMF_SYNC__JAMF__CLIENT_SECRET", SECRET));
    let o = jamf_sync_async(&["sync"], &bad_env, dir.path()).await;
    let t = text(&o);
    assert!(!o.status.success(), "wrong secret must fail: {t}");
    assert!(t.contains("refused the credentials"), "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");

    let o = jamf_sync_async(
        &["status"],
        &[("JAMF_SYNC__DATABASE__URL", db.as_str())],
        dir.path(),
    )
    .await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The runs were stored under the default instance name.
    assert!(
        t.contains("instance default: 120 computers and 30 mobile devices stored"),
        "{t}"
    );
    assert!(t.contains("failed"), "the failed run is listed: {t}");
    assert_eq!(
        sim.requests_to("/api/v1/auth/invalidate-token"),
        1,
        "the token is invalidated when the successful sync ends"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_are_plain_text() {
    let sim = support::sim(SimConfig {
        computers: 10,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
    cmd.args(["sync", "--only", "computers"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .env("JAMF_SYNC__JAMF__URL", &url)
        .env("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim")
        .env("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret")
        .env("JAMF_SYNC__DATABASE__URL", &db);
    let o = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("computers full sync succeeded"), "{err}");
    // journald, `docker logs` and files get no colour codes, NO_COLOR or not.
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape codes in piped logs: {err:?}"
    );
    sim.stop().await;
}

#[test]
fn overwrite_needs_a_full_sync() {
    let dir = tempfile::tempdir().expect("dir");
    let o = jamf_sync(&["sync", "--overwrite"], &[], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--full"), "{}", text(&o));
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("new.db");
    let url = format!("sqlite://{}", path.display());
    let o = jamf_sync(
        &["migrate"],
        &[("JAMF_SYNC__DATABASE__URL", url.as_str())],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("migrations applied (sqlite)"));
    assert!(path.exists());
    // Idempotent.
    let o = jamf_sync(
        &["migrate"],
        &[("JAMF_SYNC__DATABASE__URL", url.as_str())],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn simulate_serves_a_jamf_pro_until_stopped() {
    use std::io::{BufRead, BufReader};
    // Port 0: the simulator picks a free port and prints it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_jamf-sync"))
        .args(["simulate", "--port", "0", "--computers", "25"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader.read_line(&mut first).expect("read");
    // Keep draining: a closed pipe would kill the simulator at its next line of output.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap_or(0) > 0 {}
    });
    assert!(first.contains("25 computers"), "{first}");
    let port: u16 = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the first line");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /_sim/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("peak_connections"), "{answer}");
    child.kill().expect("kill");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_selects_one_kind() {
    let (sim, dir, db, url) = sim_and_sqlite(15, 12).await;
    let env = sim_env(&url, &db);
    let o = jamf_sync_async(&["sync", "--only", "mobile-devices"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("mobile_devices full sync succeeded"), "{out}");
    assert!(!out.contains("computers full"), "{out}");
    assert_eq!(sim.requests_to("/api/v4/computers-inventory"), 0);
    let o = jamf_sync_async(&["sync", "--only", "computers"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("computers full sync succeeded"), "{out}");
    assert!(!out.contains("mobile_devices"), "{out}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_command_dry_run_and_real() {
    let sim = support::sim(SimConfig {
        computers: 50,
        mobile_devices: 10,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    let env = [
        ("JAMF_SYNC__JAMF__URL", url.as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__DATABASE__URL", db.as_str()),
    ];
    assert!(jamf_sync_async(&["sync"], &env, dir.path())
        .await
        .status
        .success());
    sim.delete_computer(3);
    let o = jamf_sync_async(&["reconcile", "--dry-run"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("computers reconcile (dry run) succeeded"),
        "{out}"
    );
    assert!(out.contains("deleted 1,"), "{out}");
    assert!(
        out.contains("mobile_devices reconcile (dry run) succeeded"),
        "{out}"
    );
    let o = jamf_sync_async(&["reconcile", "--only", "computers"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("computers reconcile succeeded") && out.contains("deleted 1,"),
        "{out}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_prints_a_devices_timeline() {
    let (sim, dir, db, url) = sim_and_sqlite(20, 0).await;
    let mut env = sim_env(&url, &db);
    env.push(("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"));
    let o = jamf_sync_async(&["sync"], &env, dir.path()).await;
    assert!(o.status.success(), "{}", text(&o));
    let serial = sim.computer(4).expect("computer 4").serial;
    // Nothing recorded yet: a first sight writes no history.
    let o = jamf_sync_async(&["history", &serial], &env, dir.path()).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no recorded changes"), "{}", text(&o));

    assert!(sim.edit_computer(4, |c| c.name = "Renamed Mac".into()));
    let o = jamf_sync_async(&["sync"], &env, dir.path()).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = jamf_sync_async(&["history", &serial], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("name") && out.contains("MAC-000004 → Renamed Mac"),
        "{out}"
    );
    let o = jamf_sync_async(
        &["history", "4", "--kind", "computers", "--json"],
        &env,
        dir.path(),
    )
    .await;
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(v["field"], "name");
    assert_eq!(v["new_value"], "Renamed Mac");
    assert_eq!(v["device_type"], "computer");
    sim.stop().await;
}

/// A simulator with this fleet, a temporary directory and a SQLite URL in it, and the
/// simulator's URL.
async fn sim_and_sqlite(
    computers: usize,
    mobile_devices: usize,
) -> (Simulator, tempfile::TempDir, String, String) {
    let sim = support::sim(SimConfig {
        computers,
        mobile_devices,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = sim.url();
    (sim, dir, db, url)
}

/// The environment that points the CLI at the simulator and the database.
fn sim_env<'a>(url: &'a str, db: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("JAMF_SYNC__JAMF__URL", url),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__DATABASE__URL", db),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_refreshes_memberships_and_fails_with_jamf() {
    let (sim, dir, db, url) = sim_and_sqlite(20, 8).await;
    let env = sim_env(&url, &db);
    let o = jamf_sync_async(&["groups"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("computers groups run"), "{out}");
    assert!(out.contains("succeeded: listed 4, changed 4"), "{out}");
    assert!(out.contains("mobile_devices groups run"), "{out}");
    let o = jamf_sync_async(&["groups", "--only", "computers"], &env, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("changed 0, unchanged 4"), "{out}");
    assert!(!out.contains("mobile_devices"), "{out}");
    // Jamf refusing the credentials: the run fails and the exit code says so.
    let bad: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| match *k {
            "JAMF_SYNC__JAMF__CLIENT_SECRET" => (*k, "wrong"),
            _ => (*k, *v),
        })
        .collect();
    let o = jamf_sync_async(&["groups", "--only", "computers"], &bad, dir.path()).await;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        out.contains("computers groups run") && out.contains("failed"),
        "{out}"
    );
    sim.stop().await;
}
