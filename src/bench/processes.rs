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
