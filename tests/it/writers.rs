//! One writing process per SQLite database, with real processes: a second daemon refuses to
//! start naming the first's pid, `sync --no-wait` exits 75, `sync` waits and goes on once the
//! holder is killed with `kill -9` (the kernel releases the lock), read-only commands take no
//! lock.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jamf_sync::simulator::SimConfig;

use crate::app::daemon_env;
use crate::cli::{jamf_sync_async, text};
use crate::daemon::Daemon;
use crate::helpers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_sqlite_file_and_kill_9_frees_it() {
    let sim = helpers::sim(SimConfig {
        computers: 30,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
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

    // A sync that waits: blocked while the daemon lives, done once it is killed with -9.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
    cmd.arg("sync")
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
