//! The scenarios that run jamf-sync as separate processes: peak memory of one command, several
//! instances in one process, several processes on one PostgreSQL database.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::harness::*;
use super::report::Row;

/// What a memory row measures: a separate `jamf-sync` process over a fresh SQLite database.
#[derive(Debug, Clone, Copy)]
pub(super) enum MemoryJob {
    /// `sync --only computers` (inline pages).
    Computers,
    /// `sync --only mobile-devices` through the advanced search (one XML answer listing
    /// every device, then one Classic record each).
    MobileSearch,
    /// `reconcile --only mobile-devices` on an empty database: every listed device is
    /// "missing here" and fetched.
    MobileReconcile,
    /// `sync --only computers` with APPLICATIONS (40–60 applications a Mac).
    ComputersApps,
}

/// The peak RSS a `jamf-sync` process reported on stderr (`JAMF_SYNC_REPORT_PEAK_RSS`).
pub(super) fn reported_peak_rss_kb(stderr: &str) -> anyhow::Result<f64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no peak RSS reported: {stderr}"))
}

/// Peak RSS of a separate `jamf-sync` process (it reports `VmHWM` when asked).
pub(super) async fn memory_row(devices: usize, job: MemoryJob) -> anyhow::Result<Row> {
    let (computers, mobiles, args, note): (usize, usize, &[&str], &str) = match job {
        MemoryJob::Computers => (
            devices,
            0,
            &["sync", "--only", "computers"],
            "`sync`, computers inline, default sections",
        ),
        MemoryJob::MobileSearch => (
            0,
            devices,
            &["sync", "--only", "mobile-devices"],
            "`sync`, mobile devices via the advanced search",
        ),
        MemoryJob::MobileReconcile => (
            0,
            devices,
            &["reconcile", "--only", "mobile-devices"],
            "`reconcile` of mobile devices into an empty database",
        ),
        MemoryJob::ComputersApps => (
            devices,
            0,
            &["sync", "--only", "computers"],
            "`sync`, computers inline, default sections + APPLICATIONS",
        ),
    };
    let sections = match job {
        MemoryJob::ComputersApps => {
            "GENERAL,HARDWARE,OPERATING_SYSTEM,USER_AND_LOCATION,EXTENSION_ATTRIBUTES,APPLICATIONS"
        }
        _ => "GENERAL,HARDWARE,OPERATING_SYSTEM,USER_AND_LOCATION,EXTENSION_ATTRIBUTES",
    };
    let sim = SimChild::start(computers, mobiles, 0, 0)?;
    let backend = fresh_backend("sqlite", None).await?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .env("JAMF_SYNC__JAMF__URL", &sim.url)
        .env("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim")
        .env("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret")
        .env("JAMF_SYNC__DATABASE__URL", &backend.url)
        .env("JAMF_SYNC_REPORT_PEAK_RSS", "1")
        .env("JAMF_SYNC__SYNC__SECTIONS", sections)
        .env("RUST_LOG", "warn")
        .output()?;
    let wall = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kb = reported_peak_rss_kb(&stderr)?;
    if !out.status.success() {
        return Err(anyhow!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(Row {
        scenario: "memory".into(),
        backend: "sqlite".into(),
        devices,
        latency_ms: 0,
        wall_secs: wall,
        requests: 0,
        bound_secs: None,
        bound_ratio: None,
        records_per_sec: Some(devices as f64 / wall),
        cpu_secs_per_1000: None,
        peak_rss_mb: Some(kb / 1024.0),
        note: format!("separate process: {note}"),
    })
}

/// A row of a whole-fleet scenario run by separate processes.
pub(super) struct FleetRun {
    pub(super) scenario: &'static str,
    pub(super) backend: &'static str,
    pub(super) devices: usize,
    pub(super) latency_ms: u64,
    pub(super) wall_secs: f64,
    pub(super) requests: u64,
    pub(super) peak_rss_kb: f64,
}

impl FleetRun {
    pub(super) fn row(self, note: String) -> Row {
        Row {
            scenario: self.scenario.into(),
            backend: self.backend.into(),
            devices: self.devices,
            latency_ms: self.latency_ms,
            wall_secs: self.wall_secs,
            requests: self.requests,
            bound_secs: None,
            bound_ratio: None,
            records_per_sec: Some(self.devices as f64 / self.wall_secs),
            cpu_secs_per_1000: None,
            peak_rss_mb: Some(self.peak_rss_kb / 1024.0),
            note,
        }
    }
}

/// Several instances in one `jamf-sync sync` process, each against its own simulated Jamf
/// server (a process of its own) at `latency_ms`: wall time, records/s, peak RSS, and the
/// most connections any one server saw (must stay within five).
pub(super) async fn instances_row(
    backend: &Backend,
    instances: usize,
    devices: usize,
    latency_ms: u64,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let sims = SimChild::fleet(instances, devices, latency_ms)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["sync", "--only", "computers"])
        .env("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim")
        .env("JAMF_SYNC__DATABASE__URL", &backend.url)
        .env("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false")
        .env("JAMF_SYNC_REPORT_PEAK_RSS", "1")
        .env("RUST_LOG", "warn");
    for (i, sim) in sims.iter().enumerate() {
        cmd.env(format!("JAMF_SYNC__INSTANCES__I{i:02}__URL"), &sim.url)
            .env(
                format!("JAMF_SYNC__INSTANCES__I{i:02}__CLIENT_SECRET"),
                "sim-secret",
            );
    }
    let t0 = Instant::now();
    let out = cmd.output()?;
    let wall = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let succeeded = stdout.lines().filter(|l| l.contains(" succeeded")).count();
    if !out.status.success() || succeeded != instances {
        return Err(anyhow!(
            "{succeeded} of {instances} instances succeeded: {stdout}{stderr}"
        ));
    }
    let kb = reported_peak_rss_kb(&stderr)?;
    let (requests, peak_connections) = sims_load(&sims, http).await?;
    let run = FleetRun {
        scenario: "instances",
        backend: backend.name,
        devices: instances * devices,
        latency_ms,
        wall_secs: wall,
        requests,
        peak_rss_kb: kb,
    };
    Ok(run.row(format!(
        "{instances} instances × {devices} computers in one `sync` process, in parallel; \
         at most {peak_connections} connections to any one server"
    )))
}

/// Several `jamf-sync run` processes on one PostgreSQL database, each configured with every
/// instance (each against its own simulated Jamf server): from starting the processes until
/// every instance's catch-up sync succeeded; the largest peak RSS of a process; how the
/// instances spread; the most connections any one server saw (must stay within five).
pub(super) async fn replicas_row(
    backend: &Backend,
    processes: usize,
    instances: usize,
    devices: usize,
    latency_ms: u64,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let sims = SimChild::fleet(instances, devices, latency_ms)?;
    let db = crate::store::Db::connect(
        &crate::config::DatabaseUrl::parse(secrecy::SecretString::from(backend.url.clone()))?,
        2,
    )
    .await?;
    let pool = db
        .postgres()
        .ok_or_else(|| anyhow!("the replicas scenario needs PostgreSQL"))?
        .clone();
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .env("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim")
            .env("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret")
            .env("JAMF_SYNC__DATABASE__URL", &backend.url)
            .env("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "false")
            .env("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *")
            .env("JAMF_SYNC__SERVER__LISTEN", "127.0.0.1:0")
            .env("JAMF_SYNC__HA__FAILOVER_SECS", "10")
            .env("JAMF_SYNC_REPORT_PEAK_RSS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (i, sim) in sims.iter().enumerate() {
            cmd.env(format!("JAMF_SYNC__INSTANCES__I{i:02}__URL"), &sim.url);
        }
        children.push(cmd.spawn().context("starting jamf-sync run")?);
    }
    let deadline = t0 + Duration::from_secs(600);
    let wall = loop {
        let (synced,): (i64,) = sqlx::query_as(
            "SELECT COUNT(DISTINCT instance) FROM sync_runs              WHERE kind = 'computers' AND status = 'succeeded'",
        )
        .fetch_one(&pool)
        .await?;
        if synced as usize == instances {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            return Err(anyhow!("{synced} of {instances} instances synced in 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (stored,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM computers WHERE deleted_at IS NULL")
            .fetch_one(&pool)
            .await?;
    let spread: Vec<(i64,)> = sqlx::query_as(
        "SELECT COUNT(*) FROM instance_leases WHERE expires_at > now() GROUP BY holder ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    let mut peak_kb: f64 = 0.0;
    for mut child in children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
        }
        child.wait()?;
        peak_kb = peak_kb.max(reported_peak_rss_kb(&stderr)?);
    }
    db.close().await;
    let total = instances * devices;
    if stored as usize != total {
        return Err(anyhow!("{stored} of {total} computers stored"));
    }
    let (requests, peak_connections) = sims_load(&sims, http).await?;
    let spread: Vec<String> = spread.iter().map(|(n,)| n.to_string()).collect();
    let run = FleetRun {
        scenario: "replicas",
        backend: backend.name,
        devices: total,
        latency_ms,
        wall_secs: wall,
        requests,
        peak_rss_kb: peak_kb,
    };
    Ok(run.row(format!(
        "{processes} `run` processes × {instances} instances of {devices} computers; \
         instances held per process {}; at most {peak_connections} connections to any one \
         server; peak RSS of the largest process",
        spread.join("/")
    )))
}

/// The sections the process scenarios ask for, pinned: a later change of the defaults must
/// not move these figures silently.
const COMPUTER_SECTIONS: &str =
    "GENERAL,HARDWARE,OPERATING_SYSTEM,USER_AND_LOCATION,EXTENSION_ATTRIBUTES";
const MOBILE_SECTIONS: &str = "GENERAL,HARDWARE,USER_AND_LOCATION,EXTENSION_ATTRIBUTES";

/// The environment of a `jamf-sync` process against `sim`, writing `database`.
fn process_env(sim: &SimChild, database: &str) -> Vec<(&'static str, String)> {
    vec![
        ("JAMF_SYNC__JAMF__URL", sim.url.clone()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim".into()),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret".into()),
        ("JAMF_SYNC__DATABASE__URL", database.into()),
        ("JAMF_SYNC__SYNC__SECTIONS", COMPUTER_SECTIONS.into()),
        (
            "JAMF_SYNC__MOBILE_DEVICES__SECTIONS",
            MOBILE_SECTIONS.into(),
        ),
        ("JAMF_SYNC__SYNC__STRATEGY", "inline".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

/// The mixed case through the paths users take: 1,500 computers and 500 mobile devices at
/// 20 ms, `jamf-sync sync` as a separate process on a fresh database (cold: no pacing memory),
/// then `sync --full` again (warm), then a daemon's first run (`run`, its catch-up at start) on
/// another fresh database. Bound: `R × L / 5`.
pub(super) async fn mixed_process_rows(
    backend: &Backend,
    daemon_backend: &Backend,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Row>> {
    let sim = SimChild::start(1500, 500, 20, 0)?;
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let row = |wall: f64, requests: u64, note: &str| {
        mixed_row(backend.name, wall, requests, 2000, format!("; {note}"))
    };
    for (args, note) in [
        (
            &["sync"][..],
            "`jamf-sync sync` process, fresh database (cold)",
        ),
        (
            &["sync", "--full"][..],
            "`jamf-sync sync --full` process, next run (warm start)",
        ),
    ] {
        let before = sim.requests(http).await?;
        let t0 = Instant::now();
        let out = Command::new(&exe)
            .args(args)
            .envs(process_env(&sim, &backend.url))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        let wall = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(anyhow!(
                "{args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let requests = sim.requests(http).await?.saturating_sub(before + 1);
        rows.push(row(wall, requests, note));
    }

    // The daemon: its start-up catch-up runs both kinds, as a new user's first `run` does.
    let db = crate::store::Db::connect(
        &crate::config::DatabaseUrl::parse(secrecy::SecretString::from(
            daemon_backend.url.clone(),
        ))?,
        2,
    )
    .await?;
    let before = sim.requests(http).await?;
    let t0 = Instant::now();
    let mut daemon = Command::new(&exe)
        .arg("run")
        .envs(process_env(&sim, &daemon_backend.url))
        .env("JAMF_SYNC__SERVER__LISTEN", "127.0.0.1:0")
        .env("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *")
        .env("JAMF_SYNC__MOBILE_DEVICES__SCHEDULE", "0 0 0 1 1 *")
        .env("JAMF_SYNC__GROUPS__ENABLED", "false")
        .env("JAMF_SYNC__RECONCILE__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the daemon")?;
    let finished = loop {
        if let Some(status) = daemon.try_wait()? {
            break Err(anyhow!("the daemon exited: {status}"));
        }
        if t0.elapsed() > Duration::from_secs(120) {
            break Err(anyhow!("the daemon's first runs did not finish in 120 s"));
        }
        // Before migrations ran there is no table to read: not an error yet.
        let runs = crate::store::Store::recent_runs(&db, "default", 10)
            .await
            .unwrap_or_default();
        let done = |kind: &str| {
            runs.iter()
                .find(|r| r.kind == kind && r.status == "succeeded")
        };
        if let (Some(c), Some(m)) = (done("computers"), done("mobile_devices")) {
            // The runs' own span, from the first start to the last finish.
            let start = c.started_at.min(m.started_at);
            let end = c.finished_at.max(m.finished_at).unwrap_or(start);
            let span = (end - start).num_milliseconds() as f64 / 1000.0;
            break Ok((span, t0.elapsed().as_secs_f64()));
        }
        if let Some(r) = runs.iter().find(|r| r.status == "failed") {
            break Err(anyhow!("the daemon's {} run failed: {:?}", r.kind, r.error));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    db.close().await;
    let (span, from_start) = finished?;
    let requests = sim.requests(http).await?.saturating_sub(before + 1);
    rows.push(Row {
        backend: daemon_backend.name.into(),
        ..row(
            span,
            requests,
            &format!(
                "`jamf-sync run`, its first runs at start-up (fresh database, cold): the runs' \
                 span; {from_start:.2} s from the process start"
            ),
        )
    });
    Ok(rows)
}
