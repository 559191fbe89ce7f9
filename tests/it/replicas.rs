//! Several processes on one PostgreSQL database: one writer per Jamf instance by lease.
//!
//! In-process: the database refuses the writes of a holder whose lease expired and was taken
//! over while it still believed it held it (a paused VM), and a new holder marks the old
//! holder's running run interrupted. With real processes: two daemons with one configuration
//! share the work (one holds, the other serves), the simulator never sees more than five
//! connections, runs never overlap, webhooks and `POST /sync` sent to either process are
//! applied once by the holder, `sync --no-wait` names the holder; `kill -9` of the holder hands
//! the instance over within `ha.failover_secs`; a holder cut off from the database (a TCP proxy
//! that stops forwarding) gives the instance up and the other process takes it; instances
//! spread over daemons and a stopping daemon hands them over at once; a one-shot `sync` or
//! `groups` is run by the daemon holding its instance (`--overwrite` waits for the lease), and
//! handed-over runs stop with exit 75 when no daemon is left to run them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jamf_sync::domain::{Kind, RunKind, Trigger};
use jamf_sync::simulator::webhooks::{envelope, WebhookFormat};
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::lease::{Coordinator, Fence, Role};
use jamf_sync::store::{NewRun, Store, StoreError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{exited, jamf_sync_async, spawn_cli, text};
use crate::support::daemon::daemon_env;
use crate::support::daemon::Daemon;
use crate::support::db::open;
use crate::support::metrics::scrape;
use crate::support::{self, TestDb};
use crate::webhooks::{computer_event, PASSWORD, USER};

const FAILOVER_SECS: u64 = 3;

fn new_run(instance: &str) -> NewRun<'_> {
    NewRun {
        instance,
        kind: RunKind::Sync(Kind::Computers),
        trigger: Trigger::Cli,
        mode: "delta",
        started_at: chrono::Utc::now(),
        cursor_before: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_cannot_write_and_its_run_is_marked_interrupted() {
    let t = support::postgres().await;
    let ttl = Duration::from_secs(FAILOVER_SECS);
    let names = vec!["x".to_string()];
    let (a, b) = (open(t.url()).await, open(t.url()).await);
    let fence_a = Arc::new(Fence::new("a".into(), ttl));
    let fence_b = Arc::new(Fence::new("b".into(), ttl));
    assert!(a.coordinate(fence_a.clone()) && b.coordinate(fence_b.clone()));
    let none = Duration::ZERO;
    let mut coord_a = Coordinator::new(fence_a.clone(), t.url(), ttl, none, Role::Command, &names)
        .expect("coordinator");
    let mut coord_b = Coordinator::new(fence_b.clone(), t.url(), ttl, none, Role::Command, &names)
        .expect("coordinator");
    let watch_a = coord_a.watch("x").expect("watch");

    coord_a.beat().await.expect("beat");
    assert_eq!(fence_a.epoch("x"), Some(1));
    assert_eq!(*watch_a.borrow(), Some(1));
    let run = a.start_run(&new_run("x")).await.expect("the holder writes");
    // B does not hold x: its writes are refused, and it cannot take a live lease.
    assert!(matches!(
        b.start_run(&new_run("x")).await,
        Err(StoreError::NotHolder { .. })
    ));
    coord_b.beat().await.expect("beat");
    assert_eq!(fence_b.epoch("x"), None);

    // A "pauses" past its lease (it still believes it holds x); B takes x over.
    sqlx::query("UPDATE instance_leases SET expires_at = now() WHERE instance = 'x'")
        .execute(a.postgres().expect("pg"))
        .await
        .expect("expire");
    coord_b.beat().await.expect("beat");
    assert_eq!(fence_b.epoch("x"), Some(2));
    assert_eq!(
        fence_a.epoch("x"),
        Some(1),
        "A has not noticed yet (paused)"
    );
    let err = a.start_run(&new_run("x")).await;
    assert!(
        matches!(err, Err(StoreError::NotHolder { .. })),
        "the database fences A off: {err:?}"
    );
    let runs = b.recent_runs("x", 10).await.expect("runs");
    let old = runs.iter().find(|r| r.id == run).expect("A's run");
    assert_eq!(old.status, "interrupted", "the new holder marked it");
    b.start_run(&new_run("x"))
        .await
        .expect("the new holder writes");

    // A wakes up: its renewal fails and it gives x up.
    coord_a.beat().await.expect("beat");
    assert_eq!(fence_a.epoch("x"), None);
    assert_eq!(*watch_a.borrow(), None);

    // B lets its lease expire too; C, with a quiet period, takes x and holds it in the
    // database, but neither writes nor tells its watchers (its Jamf work) before the period
    // is over. A clean release then hands over at once.
    let c = open(t.url()).await;
    let fence_c = Arc::new(Fence::new("c".into(), ttl));
    assert!(c.coordinate(fence_c.clone()));
    let quiet = Duration::from_secs(2);
    let mut coord_c = Coordinator::new(fence_c.clone(), t.url(), ttl, quiet, Role::Command, &names)
        .expect("coordinator");
    let watch_c = coord_c.watch("x").expect("watch");
    sqlx::query("UPDATE instance_leases SET expires_at = now() WHERE instance = 'x'")
        .execute(a.postgres().expect("pg"))
        .await
        .expect("expire");
    let taken = std::time::Instant::now();
    coord_c.beat().await.expect("beat");
    let holder: (String, i64) =
        sqlx::query_as("SELECT holder, epoch FROM instance_leases WHERE instance = 'x'")
            .fetch_one(c.postgres().expect("pg"))
            .await
            .expect("lease");
    assert_eq!(holder, ("c".to_string(), 3), "C holds x in the database");
    assert_eq!(fence_c.epoch("x"), None, "quiet: no writes yet");
    assert_eq!(*watch_c.borrow(), None, "quiet: no Jamf work yet");
    assert!(matches!(
        c.start_run(&new_run("x")).await,
        Err(StoreError::NotHolder { .. })
    ));
    while fence_c.epoch("x").is_none() {
        assert!(
            taken.elapsed() < Duration::from_secs(5),
            "the quiet period ends"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        coord_c.beat().await.expect("beat");
    }
    assert!(
        taken.elapsed() >= quiet,
        "not before the quiet period: {:?}",
        taken.elapsed()
    );
    assert_eq!(*watch_c.borrow(), Some(3));
    c.start_run(&new_run("x"))
        .await
        .expect("C writes after the quiet period");
    coord_c.release_all().await;
    let mut coord_d = Coordinator::new(fence_b.clone(), t.url(), ttl, quiet, Role::Command, &names)
        .expect("coordinator");
    coord_d.beat().await.expect("beat");
    assert_eq!(
        fence_b.epoch("x"),
        Some(4),
        "a released lease is taken without a wait"
    );
    coord_d.release_all().await;
    a.close().await;
    b.close().await;
    c.close().await;
}

fn stats_ok(sim: &Simulator) {
    let s = sim.stats();
    assert!(
        s.peak_in_flight <= 5 && s.peak_connections <= 5,
        "Jamf saw more than five connections: {s:?}"
    );
}

fn env(sim: &Simulator, db: &str) -> Vec<(String, String)> {
    daemon_env(
        sim,
        db,
        &[
            ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
            ("JAMF_SYNC__HA__FAILOVER_SECS", "3"),
            // A killed holder's successor waits this long before it talks to Jamf.
            ("JAMF_SYNC__HA__TAKEOVER_QUIET_SECS", "1"),
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
            ("JAMF_SYNC__SYNC__PAGE_SIZE", "20"),
            ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
            ("JAMF_SYNC__WEBHOOKS__USERNAME", USER),
            ("JAMF_SYNC__WEBHOOKS__PASSWORD", PASSWORD),
        ],
    )
}

/// The process's view of the (only) instance's lease.
async fn lease(d: &Daemon) -> Value {
    d.status().await["lease"].clone()
}

async fn held_here(d: &Daemon) -> bool {
    lease(d).await["held_here"] == true
}

/// `sync_runs` of computers, oldest first: (status, trigger, started, finished).
async fn runs(
    t: &TestDb,
) -> Vec<(
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
)> {
    sqlx::query_as(
        "SELECT status, \"trigger\", started_at, finished_at FROM sync_runs \
         WHERE kind = 'computers' ORDER BY started_at",
    )
    .fetch_all(t.db.postgres().expect("pg"))
    .await
    .expect("runs")
}

async fn succeeded(t: &TestDb, trigger: &str) -> usize {
    runs(t)
        .await
        .iter()
        .filter(|r| r.0 == "succeeded" && r.1 == trigger)
        .count()
}

/// A simulator of 30 computers, a PostgreSQL database, and a daemon that holds the instance
/// and finished its start-up sync.
async fn one_holding_daemon() -> (Simulator, TestDb, Vec<(String, String)>, Daemon) {
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let t = support::postgres().await;
    let env_owned = env(&sim, t.url());
    let daemon = Daemon::start_with(env_owned.clone());
    daemon
        .wait_for(30, "the daemon holds and synced", || async {
            held_here(&daemon).await && succeeded(&t, "startup").await == 1
        })
        .await;
    (sim, t, env_owned, daemon)
}

/// What a command said, once it exited 0 within 30 s.
async fn succeeds(task: tokio::task::JoinHandle<std::process::Output>) -> String {
    let out = exited(task, 30, "done within 30 s").await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    said
}

async fn last_run_id(t: &TestDb) -> i64 {
    let (id,): (i64,) = sqlx::query_as("SELECT MAX(id) FROM sync_runs")
        .fetch_one(t.db.postgres().expect("pg"))
        .await
        .expect("max");
    id
}

/// A sample's value, 0 when absent.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::support::metrics::sample(scrape, name, labels).unwrap_or(0.0)
}

async fn post_webhook(d: &Daemon, sim: &Simulator, id: i64, seq: i64) -> u16 {
    let (body, ct) = envelope(
        &computer_event(sim, "ComputerInventoryCompleted", id),
        WebhookFormat::Json,
        seq,
    );
    crate::webhooks::post(d, body, ct).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_an_instance_and_kill_9_hands_it_over() {
    let sim = support::sim(SimConfig {
        computers: 150,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    sim.set_latency(5);
    let t = support::postgres().await;
    let first = Daemon::start_with(env(&sim, t.url()));
    let second = Daemon::start_with(env(&sim, t.url()));
    first.wait_ready(30).await;
    second.wait_ready(30).await;
    // One of them takes the instance and runs the start-up catch-up; the other does not.
    first
        .wait_for(30, "one holder, one catch-up sync", || async {
            (held_here(&first).await ^ held_here(&second).await)
                && succeeded(&t, "startup").await == 1
        })
        .await;
    let (holder, other) = if held_here(&first).await {
        (first, second)
    } else {
        (second, first)
    };
    let l = lease(&other).await;
    assert_eq!(l["holder"], lease(&holder).await["holder"], "{l}");
    assert_eq!(l["held_here"], false);
    support::assert_instance_matches_sim(&t, "default", &sim).await;

    // Requests sent to the process that does not hold the instance are run by the holder.
    let (code, body) = other.trigger("?kind=computers").await;
    assert_eq!(code, 202, "{body}");
    other
        .wait_for(30, "the requested sync run by the holder", || async {
            succeeded(&t, "api").await == 1
        })
        .await;
    // Webhooks to either process: queued in the database, applied once by the holder.
    assert!(sim.edit_computer(4, |c| c.username = "via-other".into()));
    assert!(sim.edit_computer(5, |c| c.username = "via-holder".into()));
    assert_eq!(post_webhook(&other, &sim, 4, 1).await, 202);
    assert_eq!(post_webhook(&holder, &sim, 5, 2).await, 202);
    holder
        .wait_for(30, "both webhooks applied", || async {
            let rows = support::stored_instance(&t, "default").await;
            let user = |id: i64| {
                rows.iter()
                    .find(|d| d.jamf_id == id)
                    .and_then(|d| d.info.username.clone())
            };
            user(4).as_deref() == Some("via-other") && user(5).as_deref() == Some("via-holder")
        })
        .await;
    let stored = |scrape: String| {
        sample(
            &scrape,
            "jamf_sync_webhook_devices_total",
            &[("kind", "computers"), ("outcome", "stored")],
        )
    };
    let (h, o) = (scrape(&holder).await, scrape(&other).await);
    assert_eq!(
        stored(h.clone()) + stored(o.clone()),
        2.0,
        "each event once"
    );
    assert_eq!(stored(o.clone()), 0.0, "the other process drains nothing");
    assert_eq!(sample(&h, "jamf_sync_instance_held", &[]), 1.0);
    assert_eq!(sample(&o, "jamf_sync_instance_held", &[]), 0.0);
    // Sync health from the database on both: the same last success.
    let last = |s: &str| {
        sample(
            s,
            "jamf_sync_last_success_timestamp_seconds",
            &[("kind", "computers")],
        )
    };
    assert_eq!(last(&h), last(&o));
    // A one-shot command against the held instance names the holder.
    let env_owned = env(&sim, t.url());
    let cli_env: Vec<(&str, &str)> = env_owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let o = jamf_sync_async(&["sync", "--no-wait"], &cli_env, dir.path()).await;
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    let holder_name = lease(&holder).await["holder"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text(&o).contains(&holder_name), "{}", text(&o));

    // kill -9 of the holder: the other takes over within failover and runs what is asked.
    let epoch = lease(&holder).await["epoch"].as_i64().unwrap_or_default();
    holder.signal("-KILL");
    let killed = Instant::now();
    let (code, body) = other.trigger("?kind=computers&full=true").await;
    assert_eq!(code, 202, "{body}");
    other
        .wait_for(
            FAILOVER_SECS + 30,
            "the survivor ran the requested sync",
            || async { succeeded(&t, "api").await == 2 },
        )
        .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(FAILOVER_SECS + 10),
        "failover plus a 150-computer sync took {took:?}"
    );
    let l = lease(&other).await;
    assert_eq!(l["held_here"], true, "{l}");
    assert_eq!(l["epoch"].as_i64(), Some(epoch + 1), "{l}");
    eprintln!("kill -9 to the requested sync done on the survivor: {took:?}");

    // Runs never overlapped; the copy is exact; Jamf never saw more than five connections.
    let all = runs(&t).await;
    for pair in all.windows(2) {
        let end = pair[0].3.expect("finished");
        assert!(pair[1].2 >= end, "runs overlapped: {all:?}");
    }
    support::assert_instance_matches_sim(&t, "default", &sim).await;
    stats_ok(&sim);
    drop(holder);
    drop(other);
    sim.stop().await;
}

/// A TCP proxy that can stop forwarding (a partition: connections stay open, nothing passes).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

async fn proxy(target: std::net::SocketAddr) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, flag.clone()));
            tokio::spawn(pump(ro, wi, flag.clone()));
        }
    });
    Proxy { port, cut }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Cut: nothing read, nothing written, the connection stays open.
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_the_database_loses_the_instance() {
    let sim = support::sim(SimConfig {
        computers: 400,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let t = support::postgres().await;
    let mut direct = url::Url::parse(t.url()).expect("url");
    let target = tokio::net::lookup_host((
        direct.host_str().unwrap_or("127.0.0.1").to_string(),
        direct.port().unwrap_or(5432),
    ))
    .await
    .expect("resolve")
    .next()
    .expect("address");
    let p = proxy(target).await;
    direct.set_host(Some("127.0.0.1")).expect("host");
    direct.set_port(Some(p.port)).expect("port");
    let via_proxy = direct.to_string();

    let first = Daemon::start_with(env(&sim, &via_proxy));
    first
        .wait_for(30, "the first daemon holds and synced", || async {
            held_here(&first).await && succeeded(&t, "startup").await == 1
        })
        .await;
    let second = Daemon::start_with(env(&sim, t.url()));
    second.wait_ready(30).await;
    assert!(!held_here(&second).await);
    let epoch = lease(&second).await["epoch"].as_i64().unwrap_or_default();

    // A slow full sync on the first daemon; cut its database off in the middle of it.
    sim.set_latency(40);
    let (code, _) = first.trigger("?kind=computers&full=true").await;
    assert_eq!(code, 202);
    first
        .wait_for(30, "the full sync running", || async {
            runs(&t).await.iter().any(|r| r.0 == "running")
        })
        .await;
    sim.reset_stats();
    p.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    second
        .wait_for(
            FAILOVER_SECS + 20,
            "the second daemon takes over",
            || async { held_here(&second).await },
        )
        .await;
    let took = cut.elapsed();
    eprintln!("cut to takeover: {took:?}");
    assert!(
        took <= Duration::from_secs(FAILOVER_SECS * 3 + 2),
        "takeover took {took:?}"
    );
    assert_eq!(lease(&second).await["epoch"].as_i64(), Some(epoch + 1));
    // The cut-off holder's run was marked interrupted by the new holder.
    let all = runs(&t).await;
    assert!(all.iter().any(|r| r.0 == "interrupted"), "{all:?}");
    assert!(!all.iter().any(|r| r.0 == "running"), "{all:?}");

    // The new holder finishes the job; the old one, reconnected, holds nothing.
    sim.set_latency(1);
    let (code, _) = second.trigger("?kind=computers&full=true").await;
    assert_eq!(code, 202);
    second
        .wait_for(60, "the new holder's full sync", || async {
            succeeded(&t, "api").await == 1
        })
        .await;
    support::assert_instance_matches_sim(&t, "default", &sim).await;
    stats_ok(&sim);
    p.cut.store(false, Ordering::SeqCst);
    first
        .wait_for(
            30,
            "the old holder reports it gave the instance up",
            || async {
                let scrape = first
                    .get("/metrics")
                    .await
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                scrape.contains("jamf_sync_instance_held")
                    && sample(&scrape, "jamf_sync_instance_held", &[]) == 0.0
                    && sample(
                        &scrape,
                        "jamf_sync_lease_changes_total",
                        &[("change", "given_up")],
                    ) >= 1.0
            },
        )
        .await;
    assert!(!held_here(&first).await);
    drop(first);
    drop(second);
    sim.stop().await;
}

/// The instances a daemon holds, by name.
async fn held_instances(d: &Daemon) -> Vec<String> {
    let s = d.status().await;
    s["instances"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["lease"]["held_here"] == true)
                .filter_map(|i| i["instance"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_spread_over_daemons_and_a_stopping_one_hands_them_over_at_once() {
    let mut sims = Vec::new();
    for _ in 0..4 {
        sims.push(
            support::sim(SimConfig {
                computers: 20,
                mobile_devices: 0,
                ..SimConfig::default()
            })
            .await,
        );
    }
    let t = support::postgres().await;
    let mut env: Vec<(String, String)> = [
        ("JAMF_SYNC__DATABASE__URL", t.url()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false"),
        ("JAMF_SYNC__HA__FAILOVER_SECS", "3"),
        ("JAMF_SYNC__HA__TAKEOVER_QUIET_SECS", "1"),
        ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let names = ["a", "b", "c", "d"];
    for (name, sim) in names.iter().zip(&sims) {
        env.push((
            format!("JAMF_SYNC__INSTANCES__{}__URL", name.to_uppercase()),
            sim.url(),
        ));
    }
    let first = Daemon::start_with(env.clone());
    let mut second = Daemon::start_with(env);
    first.wait_ready(30).await;
    second.wait_ready(30).await;
    first
        .wait_for(40, "two instances each, all synced", || async {
            let (one, two) = (held_instances(&first).await, held_instances(&second).await);
            let mut synced = 0;
            for name in names {
                let runs = t.db.recent_runs(name, 5).await.unwrap_or_default();
                synced += usize::from(runs.iter().any(|r| r.status == "succeeded"));
            }
            one.len() == 2 && two.len() == 2 && synced == 4
        })
        .await;
    let (one, two) = (held_instances(&first).await, held_instances(&second).await);
    assert!(one.iter().all(|i| !two.contains(i)), "{one:?} {two:?}");
    for (name, sim) in names.iter().zip(&sims) {
        support::assert_instance_matches_sim(&t, name, sim).await;
        stats_ok(sim);
    }

    // SIGTERM: the stopping daemon releases its leases; the other takes them without
    // waiting for them to expire.
    second.signal("-TERM");
    let stopped = Instant::now();
    assert_eq!(second.wait_exit(30), Some(0));
    // Leases are released last, as the process exits: measured from there, a busy machine's
    // slower shutdown does not count.
    let exited = Instant::now();
    first
        .wait_for(20, "the remaining daemon holds all four", || async {
            held_instances(&first).await.len() == 4
        })
        .await;
    let took = stopped.elapsed();
    eprintln!(
        "SIGTERM to all instances held by the other daemon: {took:?} ({:?} after it exited)",
        exited.elapsed()
    );
    assert!(
        exited.elapsed() < Duration::from_secs(FAILOVER_SECS),
        "released leases are taken at the next heartbeat, not after expiry: {:?}",
        exited.elapsed()
    );
    drop(first);
    for sim in sims {
        sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_sync_is_run_by_the_daemon_holding_the_instance() {
    let (sim, t, env_owned, mut daemon) = one_holding_daemon().await;
    let dir = tempfile::tempdir().expect("dir");
    let cli = |args: &'static [&'static str]| spawn_cli(&env_owned, dir.path(), args);

    // Handed over: the daemon runs it, the command reports the daemon's run.
    sim.touch_ids(&[3, 4]);
    let said = succeeds(cli(&["sync", "--full"])).await;
    assert!(
        said.contains("is held by the daemon ")
            && said.contains(":run:")
            && said.contains("handing it the full computers sync"),
        "{said}"
    );
    assert!(
        said.contains("computers full succeeded (run ") && said.contains(", by the daemon)"),
        "{said}"
    );
    let (trigger, request, status): (String, Option<i64>, String) = sqlx::query_as(
        "SELECT \"trigger\", request_id, status FROM sync_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(t.db.postgres().expect("pg"))
    .await
    .expect("run");
    assert_eq!((trigger.as_str(), status.as_str()), ("cli", "succeeded"));
    assert!(request.is_some());
    let (waiting,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_requests")
        .fetch_one(t.db.postgres().expect("pg"))
        .await
        .expect("count");
    assert_eq!(waiting, 0, "taken");
    assert!(
        said.contains(&format!("(run {}", last_run_id(&t).await)),
        "{said}"
    );
    support::assert_instance_matches_sim(&t, "default", &sim).await;
    // A group refresh is handed over the same way.
    let said = succeeds(cli(&["groups"])).await;
    assert!(
        said.contains("handing it the computers group refresh")
            && said.contains("groups computers succeeded (run ")
            && said.contains(", by the daemon)"),
        "{said}"
    );

    // `--overwrite` has no equivalent in a daemon's run: it waits for the lease.
    let waiting = cli(&["sync", "--full", "--overwrite"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "sync --overwrite must wait for the holder"
    );
    assert_eq!(succeeded(&t, "cli").await, 1);
    // The daemon stops and releases its lease; the waiting sync takes it and runs.
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(30), Some(0));
    let out = exited(waiting, 30, "sync went on once the daemon let go").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("waiting for instance default: held by"),
        "{}",
        text(&out)
    );
    assert_eq!(succeeded(&t, "cli").await, 2);
    support::assert_instance_matches_sim(&t, "default", &sim).await;
    sim.stop().await;
}

/// A daemon killed while runs handed to it wait (one running, one queued behind it): with no
/// daemon left to take the instance over, both commands stop with exit 75 and take their
/// waiting request back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_runs_stop_when_no_daemon_is_left() {
    let (sim, t, env_owned, mut daemon) = one_holding_daemon().await;
    // Slow enough that the first handed-over sync is still running when the daemon dies.
    sim.set_latency(3000);
    let dir = tempfile::tempdir().expect("dir");
    let cli = |args: &'static [&'static str]| spawn_cli(&env_owned, dir.path(), args);
    let running = cli(&["sync", "--full"]);
    let pg = t.db.postgres().expect("pg");
    daemon
        .wait_for(30, "the handed-over run started", || async {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM sync_runs WHERE request_id IS NOT NULL AND status = 'running'",
            )
            .fetch_one(pg)
            .await
            .expect("count");
            n == 1
        })
        .await;
    let queued = cli(&["sync"]);
    daemon
        .wait_for(30, "the second request waits", || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_requests")
                .fetch_one(pg)
                .await
                .expect("count");
            n == 1
        })
        .await;
    daemon.signal("-KILL");
    daemon.wait_exit(10);
    for (what, task) in [("running", running), ("queued", queued)] {
        let out = exited(task, 40, "the command gave up waiting").await;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(75), "{what}: {said}");
        assert!(
            said.contains("no daemon holds instance default any more"),
            "{what}: {said}"
        );
    }
    let (waiting,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_requests")
        .fetch_one(pg)
        .await
        .expect("count");
    assert_eq!(waiting, 0, "the waiting request was taken back");
    sim.stop().await;
}

// A holder frozen longer than the failover (SIGSTOP: a paused VM, a long stall) keeps its five
// sockets to Jamf open. The standby takes the expired lease but sends nothing to Jamf for
// `ha.takeover_quiet_secs`; by then the server has closed the frozen holder's idle sockets
// (the simulator's keep-alive timeout), so Jamf never sees more than five connections. The
// frozen holder, running again, sends nothing: its lease is gone (issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_and_its_successor_never_exceed_five_connections() {
    let sim = support::sim(SimConfig {
        computers: 3000,
        mobile_devices: 0,
        idle_timeout_ms: 4000,
        ..SimConfig::default()
    })
    .await;
    sim.set_latency(200);
    let t = support::postgres().await;
    let mut env_owned = env(&sim, t.url());
    env_owned.retain(|(k, _)| k != "JAMF_SYNC__HA__TAKEOVER_QUIET_SECS");
    env_owned.push(("JAMF_SYNC__HA__TAKEOVER_QUIET_SECS".into(), "6".into()));
    let first = Daemon::start_with(env_owned.clone());
    let second = Daemon::start_with(env_owned);
    first.wait_ready(30).await;
    second.wait_ready(30).await;
    first
        .wait_for(30, "one holder paging its start-up sync", || async {
            (held_here(&first).await ^ held_here(&second).await) && sim.stats().requests > 30
        })
        .await;
    let (holder, standby) = if held_here(&first).await {
        (first, second)
    } else {
        (second, first)
    };
    sim.reset_stats();
    holder.signal("-STOP");
    let frozen = Instant::now();
    standby
        .wait_for(
            FAILOVER_SECS + 10,
            "the standby took the expired lease",
            || async { held_here(&standby).await },
        )
        .await;
    // Held in the database, quiet towards Jamf: the frozen holder sends nothing (it is
    // stopped) and neither does the standby.
    let at_takeover = sim.stats().requests;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        sim.stats().requests,
        at_takeover,
        "no Jamf request during the quiet period"
    );
    let freeze = Duration::from_secs(12);
    tokio::time::sleep(freeze.saturating_sub(frozen.elapsed())).await;
    holder.signal("-CONT");
    standby
        .wait_for(60, "the standby's catch-up sync succeeded", || async {
            succeeded(&t, "startup").await == 1
        })
        .await;
    let took = frozen.elapsed();
    eprintln!("freeze to the standby's finished sync: {took:?}");
    assert!(
        took >= Duration::from_secs(FAILOVER_SECS + 6),
        "not before failover + quiet: {took:?}"
    );
    assert_eq!(
        lease(&holder).await["held_here"],
        false,
        "the holder running again knows it lost the instance"
    );
    support::assert_instance_matches_sim(&t, "default", &sim).await;
    stats_ok(&sim);
    drop(holder);
    drop(standby);
    sim.stop().await;
}

// A one-shot command races its runs against losing its lease: once another process has the
// instance, the command sends Jamf nothing more and exits non-zero at once, instead of paging
// on until a write is refused (issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_command_stops_the_moment_it_loses_its_lease() {
    let sim = support::sim(SimConfig {
        computers: 2000,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    sim.set_latency(300);
    let t = support::postgres().await;
    let env_owned = env(&sim, t.url());
    let dir = tempfile::tempdir().expect("dir");
    let started = Instant::now();
    let cli = spawn_cli(
        &env_owned,
        dir.path(),
        &["sync", "--full", "--only", "computers"],
    );
    let pool = t.db.postgres().expect("pg").clone();
    let held = || async {
        sqlx::query_as::<_, (String,)>(
            "SELECT holder FROM instance_leases WHERE instance = 'default' AND expires_at > now()",
        )
        .fetch_optional(&pool)
        .await
        .expect("lease")
    };
    while held().await.is_none() || sim.stats().requests < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the command holds and pages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another process takes the instance over (as after a partition the command did not see).
    sqlx::query(
        "UPDATE instance_leases SET holder = 'thief:1:run:0', epoch = epoch + 1, \
         expires_at = now() + interval '1 hour' WHERE instance = 'default'",
    )
    .execute(&pool)
    .await
    .expect("steal");
    let stolen = Instant::now();
    let out = exited(cli, 30, "the command exits once its lease is gone").await;
    let said = text(&out);
    let took = stolen.elapsed();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("lost the lease of instance default"),
        "{said}"
    );
    assert!(
        took < Duration::from_secs(FAILOVER_SECS + 3),
        "stopped within a heartbeat or two, not at the end of its run: {took:?}"
    );
    let after = sim.stats().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.stats().requests, after, "nothing sent after it exited");
    assert!(
        after < 2 + 2000 / 20,
        "it did not page the whole fleet: {after} requests"
    );
    sim.stop().await;
}

/// `jamf-sync ARGS` on a host whose clock runs two hours ahead (Debian's `faketime`; the
/// monotonic clock untouched, so timers and timeouts run as usual).
async fn sync_two_hours_ahead(
    env: Vec<(String, String)>,
    args: &'static [&'static str],
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("dir");
        let mut cmd = std::process::Command::new("faketime");
        cmd.args(["-f", "+2h", env!("CARGO_BIN_EXE_jamf-sync")])
            .args(args)
            .current_dir(dir.path())
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("NO_COLOR", "1");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.output()
            .expect("faketime (Debian package faketime; scripts/test.sh installs it)")
    })
    .await
    .expect("join")
}

// The delta cursor is kept in Jamf's clock: a replica whose clock runs two hours ahead (here a
// one-shot sync under `faketime`) once stored its own start as the cursor, and the next
// holder, whose clock is right and who has talked to Jamf already, asked for changes since an
// hour in the future and missed a device that reported meanwhile (issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_does_not_move_the_cursor_past_changes() {
    let sim = support::sim(SimConfig {
        computers: 40,
        mobile_devices: 0,
        ..SimConfig::default()
    })
    .await;
    let t = support::postgres().await;
    let env_owned = env(&sim, t.url());
    let out = sync_two_hours_ahead(env_owned, &["sync", "--full"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("computers full sync succeeded"),
        "{}",
        text(&out)
    );
    let cursor =
        t.db.cursor("default", Kind::Computers)
            .await
            .expect("cursor")
            .expect("the run moved the cursor");
    let off = (cursor - chrono::Utc::now()).num_seconds().abs();
    assert!(
        off < 120,
        "the cursor is Jamf's time, not the replica's: {off} s away"
    );

    // A device reports now; the next holder, its clock right and its client warm, reads it.
    assert!(sim.edit_computer(7, |c| c.username = "reported-later".into()));
    let mut settings = support::settings(&sim);
    settings.instance = "default".into();
    let engine = support::engine(
        &t,
        settings,
        support::sync_cfg(100, jamf_sync::config::FetchStrategy::Inline),
    );
    engine.client().server_version().await.expect("a request");
    assert!(engine.client().clock_offset().is_some());
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    assert_eq!(delta.mode, "delta", "{delta}");
    let stored = support::stored_instance(&t, "default").await;
    let seven = stored.iter().find(|d| d.jamf_id == 7).expect("stored");
    assert_eq!(
        seven.info.username.as_deref(),
        Some("reported-later"),
        "{delta}"
    );
    sim.stop().await;
}

// Copies are ordered in Jamf's clock: a replica whose clock runs two hours ahead once stamped
// the copy it fetched with a `fetched_at` two hours late, so at an equal inventory time (an
// unenrolment submits no inventory) the next holder's newer copy lost to it as `stale`
// (issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_cannot_make_its_older_copy_win() {
    let sim = support::sim(SimConfig {
        computers: 0,
        mobile_devices: 12,
        ..SimConfig::default()
    })
    .await;
    let t = support::postgres().await;
    let mut env_owned = env(&sim, t.url());
    env_owned.retain(|(k, _)| k != "JAMF_SYNC__MOBILE_DEVICES__ENABLED");
    let out =
        sync_two_hours_ahead(env_owned, &["sync", "--full", "--only", "mobile-devices"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let (fetched,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT fetched_at FROM mobile_devices WHERE jamf_id = 5")
            .fetch_one(t.db.postgres().expect("pg"))
            .await
            .expect("fetched_at");
    let ahead = (fetched - chrono::Utc::now()).num_seconds();
    assert!(
        ahead < 60,
        "the copy's fetched_at is Jamf's time: {ahead} s ahead\n{}",
        text(&out)
    );
    // Unenrolled in Jamf after that copy: its last inventory time stays the same. The next
    // holder reads it a moment later (Jamf's clock is read to about a second from its Date
    // headers: copies of the same inventory time are ordered to that precision).
    assert!(sim.unenroll_mobile(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut settings = support::settings(&sim);
    settings.instance = "default".into();
    let engine = support::engine(
        &t,
        settings,
        support::sync_cfg(100, jamf_sync::config::FetchStrategy::Inline),
    );
    let run = support::run_mobile(&engine, true).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!(
        run.counts.stale, 0,
        "the later request's copy is not older: {run}"
    );
    let rows =
        t.db.devices("default", Kind::MobileDevices)
            .await
            .expect("rows");
    let five = rows.iter().find(|d| d.jamf_id == 5).expect("stored");
    assert_eq!(five.info.managed, Some(false), "the newer copy won");
    sim.stop().await;
}
