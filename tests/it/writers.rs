//! One writing process per SQLite database, with real processes: a second daemon refuses to
//! start naming the first's pid, `sync --no-wait` exits 75, `sync` is handed to the daemon
//! (which runs it and the command reports its run), `sync --overwrite` waits and goes on once
//! the holder is killed with `kill -9` (the kernel releases the lock), read-only commands take
//! no lock.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jamf_sync::simulator::SimConfig;
use jamf_sync::store::Store;

use crate::cli::{exited, jamf_sync_async, spawn_cli, text};
use crate::support;
use crate::support::daemon::daemon_env;
use crate::support::daemon::Daemon;

/// A simulator of 30 computers and a SQLite database URL in a fresh directory.
async fn fleet_and_file() -> (jamf_sync::simulator::Simulator, tempfile::TempDir, String) {
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    (sim, dir, db)
}

/// A daemon on `db` that finished its start-up sync, and a connection to its database.
async fn synced_daemon(
    sim: &jamf_sync::simulator::Simulator,
    db: &str,
    extra: &[(&str, &str)],
) -> (Daemon, jamf_sync::store::Db) {
    let daemon = Daemon::start(sim, db, extra);
    daemon.wait_ready(20).await;
    let store = crate::support::db::open(db).await;
    daemon
        .wait_for(30, "the start-up sync finished", || async {
            last_run(&store)
                .await
                .is_some_and(|r| r.status == "succeeded")
        })
        .await;
    (daemon, store)
}

/// The `default` instance's last run.
async fn last_run(store: &jamf_sync::store::Db) -> Option<jamf_sync::store::RunRow> {
    store
        .recent_runs("default", 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
}

/// Waits until the daemon's last run is one a command handed over.
async fn until_running_handed_over(daemon: &Daemon, store: &jamf_sync::store::Db) {
    daemon
        .wait_for(30, "the daemon runs the handed-over sync", || async {
            last_run(store)
                .await
                .is_some_and(|r| r.request_id.is_some())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_sqlite_file_and_kill_9_frees_it() {
    let (sim, dir, db) = fleet_and_file().await;
    let extra = [("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false")];
    let first = Daemon::start(&sim, &db, &extra);
    first.wait_ready(20).await;
    let pid = first.child.id().to_string();
    let env_owned = daemon_env(&sim, &db, &extra);
    let env: Vec<(&str, &str)> = env_owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // A second daemon on the same file refuses, naming the holder.
    let mut second_env = env.clone();
    second_env.push(("JAMF_SYNC__SERVER__LISTEN", "127.0.0.1:0"));
    let o = jamf_sync_async(&["run"], &second_env, dir.path()).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("pid {pid}")), "{}", text(&o));
    // A one-shot sync that may not wait exits 75 (EX_TEMPFAIL), naming the holder.
    let o = jamf_sync_async(&["sync", "--no-wait"], &env, dir.path()).await;
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(text(&o).contains(&format!("pid {pid}")), "{}", text(&o));
    // Read-only commands take no lock.
    let o = jamf_sync_async(&["status"], &env, dir.path()).await;
    assert!(o.status.success(), "{}", text(&o));

    // A one-shot sync behind the daemon is handed to it: the daemon runs it, the command
    // reports the daemon's run.
    let o = tokio::time::timeout(
        Duration::from_secs(30),
        jamf_sync_async(&["sync", "--full"], &env, dir.path()),
    )
    .await
    .expect("the daemon ran it");
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "is held by the daemon pid {pid}: handing it the full computers sync"
        )) && said.contains("computers full succeeded (run ")
            && said.contains(", by the daemon)"),
        "{said}"
    );
    let store = crate::support::db::open(&db).await;
    let last = store.recent_runs("default", 1).await.expect("runs");
    assert_eq!(last[0].trigger, "cli");
    assert!(last[0].request_id.is_some(), "{:?}", last[0]);
    assert!(said.contains(&format!("(run {},", last[0].id)), "{said}");
    assert!(store
        .waiting_requests(None)
        .await
        .expect("requests")
        .is_empty());
    store.close().await;

    // `--full --overwrite` (no equivalent in a daemon's run) waits: blocked while the daemon lives,
    // done once it is killed with -9.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
    cmd.args(["sync", "--full", "--overwrite"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("JAMF_SYNC") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut waiting = cmd.spawn().expect("spawn sync");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        waiting.try_wait().expect("try_wait").is_none(),
        "sync must wait for the daemon's lock"
    );
    first.signal("-KILL");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = waiting.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync did not go on after the holder died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = waiting.wait_with_output().expect("output");
    assert!(status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("computers"),
        "{}",
        text(&out)
    );
    sim.stop().await;
}

/// Handed-over runs the SQLite daemon cannot run do not keep the command waiting: an
/// instance the daemon's configuration lacks is dropped by it (the command exits 1 saying
/// so); the daemon killed while it runs a handed-over sync is noticed (exit 75 after twice
/// `ha.failover_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_sync_ends_when_the_sqlite_daemon_cannot_run_it() {
    let (sim, dir, db) = fleet_and_file().await;
    let extra = [
        ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
        ("JAMF_SYNC__HA__FAILOVER_SECS", "3"),
    ];
    let (mut daemon, store) = synced_daemon(&sim, &db, &extra).await;
    // A command configured with an instance the daemon does not have.
    let lab = support::sim(SimConfig {
        computers: 5,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let mut lab_env: Vec<(String, String)> = daemon_env(&sim, &db, &extra)
        .into_iter()
        .filter(|(k, _)| k != "JAMF_SYNC__JAMF__URL")
        .collect();
    lab_env.push((
        "JAMF_SYNC__INSTANCES__LAB__URL".into(),
        lab.url().to_string(),
    ));
    let env: Vec<(&str, &str)> = lab_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let o = tokio::time::timeout(
        Duration::from_secs(30),
        jamf_sync_async(&["sync"], &env, dir.path()),
    )
    .await
    .expect("the command stopped waiting");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("does its configuration have this instance?"),
        "{}",
        text(&o)
    );
    assert_eq!(
        lab.stats().requests,
        0,
        "the command itself never asked Jamf"
    );
    assert!(store
        .waiting_requests(None)
        .await
        .expect("requests")
        .is_empty());
    lab.stop().await;

    sim.set_latency(3000);
    let handed = spawn_cli(
        &daemon_env(&sim, &db, &extra),
        dir.path(),
        &["sync", "--full"],
    );
    until_running_handed_over(&daemon, &store).await;
    daemon.signal("-KILL");
    daemon.wait_exit(10);
    let o = exited(handed, 30, "the command gave up").await;
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(
        text(&o).contains("no daemon holds instance default any more"),
        "{}",
        text(&o)
    );
    store.close().await;
    sim.stop().await;
}

/// The SQLite daemon restarted while handed-over runs wait: the run it was running is
/// reported interrupted (its grace period ran out), and the request queued behind it is run by
/// the new daemon process, which the waiting command follows by the lock file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sqlite_daemon_runs_what_waited_for_its_predecessor() {
    let (sim, dir, db) = fleet_and_file().await;
    let extra = [
        ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
        ("JAMF_SYNC__HA__FAILOVER_SECS", "3"),
        ("JAMF_SYNC__SYNC__SHUTDOWN_GRACE_SECS", "1"),
    ];
    let (mut daemon, store) = synced_daemon(&sim, &db, &extra).await;
    sim.set_latency(3000);
    let env = daemon_env(&sim, &db, &extra);
    let running = spawn_cli(&env, dir.path(), &["sync", "--full"]);
    until_running_handed_over(&daemon, &store).await;
    let queued = spawn_cli(&env, dir.path(), &["sync"]);
    daemon
        .wait_for(30, "the second request waits", || async {
            store
                .waiting_requests(None)
                .await
                .is_ok_and(|w| w.len() == 1)
        })
        .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(30), Some(0));
    // Still slow: the new daemon's runs outlast twice the failover time, so a command that
    // watched only the old pid would have given up.
    let mut restarted = Daemon::start(&sim, &db, &extra);
    restarted.wait_ready(20).await;

    let o = exited(running, 30, "the first command ended").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("computers full interrupted (run "),
        "{}",
        text(&o)
    );
    let o = exited(queued, 90, "the second command ended").await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("computers delta succeeded (run ") && text(&o).contains("by the daemon"),
        "{}",
        text(&o)
    );
    sim.set_latency(0);
    support::assert_instance_matches_sim(
        &support::TestDb::wrap(crate::support::db::open(&db).await),
        "default",
        &sim,
    )
    .await;
    restarted.signal("-TERM");
    assert_eq!(restarted.wait_exit(30), Some(0));
    store.close().await;
    sim.stop().await;
}
