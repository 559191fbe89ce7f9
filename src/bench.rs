//! `jamf-sync bench`: throughput, cost and memory figures against the simulator.
//!
//! The simulator runs as a child process (`jamf-sync simulate`), so this process's CPU time and
//! memory are jamf-sync's alone. Scenarios:
//! - **latency**: detail-per-device syncs at a simulated per-request latency L; R requests
//!   cannot finish faster than `R × L / 5` with five connections: the report gives that bound
//!   and `bound / wall` (goal ≥ 0.90).
//! - **sequential**: the same with one connection and no pacing, the straightforward client.
//! - **cpu**: zero latency, default sections inline: records per second end to end and CPU
//!   seconds per 1,000 records.
//! - **memory**: peak RSS of a separate `jamf-sync sync` process at 10,000 and 100,000
//!   computers (goal < 150 MB, flat).
//! - **delta**: requests for a delta after 1% of the fleet changed, next to a full sync.
//! - **busy**: a busy server (list pages cost 1 ms per record and section on the server, 20 ms
//!   latency): the sequential keyset pager, parallel spans on a first run and on the next
//!   process (warm start), and with `--peer-python` jamf-pro-sdk's concurrent paginator; the
//!   bound is the simulator's summed service time over five connections.
//! - **mixed**: 1,500 computers and 500 mobile devices synced at once at 20 ms, first run and
//!   next process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use secrecy::SecretString;
use serde::Serialize;

use crate::app::App;
use crate::config::{
    ApiVersion, Config, Credentials, DatabaseUrl, FetchStrategy, JamfSettings, PacingConfig,
    RetryConfig,
};
use crate::domain::{Kind, Trigger};
use crate::store::{Db, Store};
use crate::sync::SyncOptions;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub backend: String,
    pub devices: usize,
    pub latency_ms: u64,
    pub wall_secs: f64,
    pub requests: u64,
    /// `requests × latency / 5`, the floor with five connections (latency scenarios).
    pub bound_secs: Option<f64>,
    pub bound_ratio: Option<f64>,
    pub records_per_sec: Option<f64>,
    pub cpu_secs_per_1000: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub note: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub postgres: Option<String>,
    /// Also the 20,000-device latency runs and 100,000-computer memory run.
    pub full: bool,
    pub scenarios: Vec<String>,
    /// A Python with jamf-pro-sdk: the busy scenario's peer.
    pub peer_python: Option<String>,
}

struct SimChild {
    child: Child,
    url: String,
}

impl SimChild {
    /// `per_record_us`: the busy-server cost of list pages per record and section.
    fn start(
        computers: usize,
        mobiles: usize,
        latency_ms: u64,
        per_record_us: u64,
    ) -> anyhow::Result<SimChild> {
        let exe = std::env::current_exe().context("locating jamf-sync")?;
        let mut child = Command::new(exe)
            .args([
                "simulate",
                "--port",
                "0",
                "--computers",
                &computers.to_string(),
                "--mobile-devices",
                &mobiles.to_string(),
                "--latency-ms",
                &latency_ms.to_string(),
                "--per-record-section-us",
                &per_record_us.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the simulator")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no simulator stdout"))?;
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        // Keep the pipe drained so the simulator never blocks on its output.
        std::thread::spawn(move || {
            let mut rest = String::new();
            while reader.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| anyhow!("simulator did not print its address: {first:?}"))?
            .to_string();
        Ok(SimChild { child, url })
    }

    /// `n` simulated servers of `computers` each (one instance's Jamf each).
    fn fleet(n: usize, computers: usize, latency_ms: u64) -> anyhow::Result<Vec<SimChild>> {
        (0..n)
            .map(|_| SimChild::start(computers, 0, latency_ms, 0))
            .collect()
    }

    async fn requests(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        self.stat(http, "requests").await
    }

    /// Seconds the simulator spent answering, summed over its requests.
    async fn service_secs(&self, http: &reqwest::Client) -> anyhow::Result<f64> {
        Ok(self.stat(http, "service_us").await? as f64 / 1e6)
    }

    async fn stat(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<u64> {
        let v: serde_json::Value = http
            .get(format!("{}/_sim/stats", self.url))
            .send()
            .await?
            .json()
            .await?;
        v[name]
            .as_u64()
            .ok_or_else(|| anyhow!("no {name} in the stats"))
    }

    async fn touch(&self, http: &reqwest::Client, count: usize) -> anyhow::Result<()> {
        http.post(format!("{}/_sim/touch?count={count}", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(url: &str, max: u32, adaptive: bool) -> anyhow::Result<JamfSettings> {
    Ok(JamfSettings {
        instance: "bench".into(),
        url: url::Url::parse(url)?,
        credentials: Credentials::ApiClient {
            client_id: "jamf-sync-sim".into(),
            client_secret: SecretString::from("sim-secret".to_string()),
        },
        api_version: ApiVersion::Auto,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(120),
        max_concurrency: max,
        token_refresh_margin: Duration::from_secs(60),
        retry: RetryConfig::default(),
        pacing: PacingConfig {
            adaptive,
            ..PacingConfig::default()
        },
        ca_file: None,
        max_response_bytes: 256 << 20,
        fail_fast: false,
        secret_file: None,
        version_ttl: crate::config::VERSION_TTL,
    })
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start after ')'.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Peak resident set size of this process in kB (`VmHWM`).
pub fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Backend {
    name: &'static str,
    url: String,
    _dir: Option<tempfile_dir::TempDir>,
}

/// A throwaway directory without pulling in a crate: removed on drop.
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The PostgreSQL databases this process created, dropped when the scenarios are done.
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn lock_created() -> std::sync::MutexGuard<'static, Vec<String>> {
    CREATED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the databases of [`CREATED`]; a failure is reported, not fatal (the rows stand).
async fn drop_created(admin: &str) {
    use sqlx::Connection;
    let names = std::mem::take(&mut *lock_created());
    if names.is_empty() {
        return;
    }
    let mut conn = match sqlx::PgConnection::connect(admin).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: could not drop the bench databases: {e}");
            return;
        }
    };
    for name in names {
        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
        {
            eprintln!("bench: could not drop database {name}: {e}");
        }
    }
}

async fn fresh_backend(name: &'static str, postgres: Option<&str>) -> anyhow::Result<Backend> {
    if name == "sqlite" {
        let dir = std::env::temp_dir().join(format!("jamf-sync-bench-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        return Ok(Backend {
            name,
            url,
            _dir: Some(tempfile_dir::TempDir(dir)),
        });
    }
    let admin = postgres.ok_or_else(|| anyhow!("no PostgreSQL URL"))?;
    use sqlx::Connection;
    let name_db = format!("jamf_sync_bench_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name_db}\""
    )))
    .execute(&mut conn)
    .await?;
    lock_created().push(name_db.clone());
    let mut url = url::Url::parse(admin)?;
    url.set_path(&format!("/{name_db}"));
    Ok(Backend {
        name,
        url: url.to_string(),
        _dir: None,
    })
}

/// The engine every command uses, over a fresh database of `backend`.
async fn app(
    backend: &Backend,
    settings: JamfSettings,
    strategy: FetchStrategy,
) -> anyhow::Result<App> {
    let mut cfg = Config::default();
    cfg.sync.strategy = strategy;
    app_with(backend, settings, &cfg).await
}

/// An app over a fresh connection to `backend` with this configuration.
async fn app_with(backend: &Backend, settings: JamfSettings, cfg: &Config) -> anyhow::Result<App> {
    let db = Arc::new(
        Db::connect(
            &DatabaseUrl::parse(SecretString::from(backend.url.clone()))?,
            5,
        )
        .await?,
    );
    App::build(cfg, settings, db)
}

async fn latency_row(
    backend: &Backend,
    kind: Kind,
    devices: usize,
    latency_ms: u64,
    sequential: bool,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let (computers, mobiles) = match kind {
        Kind::Computers => (devices, 0),
        Kind::MobileDevices => (0, devices),
    };
    let sim = SimChild::start(computers, mobiles, latency_ms, 0)?;
    let max = if sequential { 1 } else { 5 };
    let app = app(
        backend,
        settings(&sim.url, max, !sequential)?,
        FetchStrategy::Detail,
    )
    .await?;
    let before = sim.requests(http).await?;
    let t0 = Instant::now();
    let s = app
        .engine
        .sync(kind, SyncOptions::new(true, Trigger::Cli))
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    // The stats call counts itself.
    let requests = sim.requests(http).await? - before - 1;
    app.db.close().await;
    if !s.succeeded() {
        return Err(anyhow!("{s}"));
    }
    let bound = requests as f64 * latency_ms as f64 / 1000.0 / 5.0;
    Ok(Row {
        scenario: if sequential {
            "sequential".into()
        } else {
            "latency".into()
        },
        backend: backend.name.into(),
        devices,
        latency_ms,
        wall_secs: wall,
        requests,
        bound_secs: Some(bound),
        bound_ratio: Some(bound / wall),
        records_per_sec: Some(s.counts.fetched as f64 / wall),
        cpu_secs_per_1000: None,
        peak_rss_mb: None,
        note: format!("{} detail", kind.as_str()),
    })
}

/// One computers sync, timed: its summary (it succeeded) and a CPU-bound row of it; the
/// caller names the row.
async fn cpu_sync(
    app: &App,
    sim: &SimChild,
    backend: &Backend,
    devices: usize,
    full: bool,
    http: &reqwest::Client,
) -> anyhow::Result<(crate::sync::RunSummary, Row)> {
    let before = sim.requests(http).await?;
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let s = app
        .engine
        .sync(Kind::Computers, SyncOptions::new(full, Trigger::Cli))
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let requests = sim.requests(http).await? - before - 1;
    if !s.succeeded() {
        return Err(anyhow!("{s}"));
    }
    let row = Row {
        scenario: "cpu".into(),
        backend: backend.name.into(),
        devices,
        latency_ms: 0,
        wall_secs: wall,
        requests,
        bound_secs: None,
        bound_ratio: None,
        records_per_sec: Some(s.counts.fetched as f64 / wall),
        cpu_secs_per_1000: Some(cpu * 1000.0 / s.counts.fetched.max(1) as f64),
        peak_rss_mb: None,
        note: String::new(),
    };
    Ok((s, row))
}

async fn cpu_row(backend: &Backend, devices: usize, http: &reqwest::Client) -> anyhow::Result<Row> {
    let sim = SimChild::start(devices, 0, 0, 0)?;
    let app = app(backend, settings(&sim.url, 5, true)?, FetchStrategy::Inline).await?;
    let measured = cpu_sync(&app, &sim, backend, devices, true, http).await;
    app.db.close().await;
    let (_, row) = measured?;
    Ok(Row {
        note: "computers inline, default sections; simulator in a separate process".into(),
        ..row
    })
}

/// CPU-bound with the APPLICATIONS section (40–60 applications a Mac): a full sync (records/s,
/// child rows, database size), the same full sync again with nothing changed (no child row
/// may be written), and a delta after 1% reported (each report updates one application).
async fn apps_rows(
    backend: &Backend,
    devices: usize,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Row>> {
    let sim = SimChild::start(devices, 0, 0, 0)?;
    let mut cfg = Config::default();
    cfg.sync.strategy = FetchStrategy::Inline;
    cfg.sync.sections.push("APPLICATIONS".into());
    let app = app_with(backend, settings(&sim.url, 5, true)?, &cfg).await?;
    let mut rows = Vec::new();
    for step in ["full", "full, nothing changed", "delta, 1% reported"] {
        if step.starts_with("delta") {
            sim.touch(http, devices / 100).await?;
        }
        let (s, row) =
            cpu_sync(&app, &sim, backend, devices, step.starts_with("full"), http).await?;
        let bytes = app.db.database_bytes().await?;
        rows.push(Row {
            scenario: "apps".into(),
            note: format!(
                "{step}: default sections + APPLICATIONS; upserted {}, child rows written {}, \
                 database {:.0} MB",
                s.counts.upserted,
                s.counts.child_rows,
                bytes as f64 / 1e6
            ),
            ..row
        });
    }
    app.db.close().await;
    Ok(rows)
}

/// How a busy-server run starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    /// One connection: the keyset pager as it was, one page after another.
    Sequential,
    /// A first process against an unknown server: pacing ramps up from its initial limit.
    Cold,
    /// The next process: pacing starts where the first left off (pacing memory).
    Warm,
}

/// Busy server: `devices` computers inline (default sections, pages of 100) at 20 ms, list
/// pages costing `BUSY_US` per record and section on the server. The bound is the
/// simulator's own service time divided by five connections.
async fn busy_row(
    backend: &Backend,
    devices: usize,
    start: Start,
    cost_us: u64,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let sim = SimChild::start(devices, 0, 20, cost_us)?;
    let max = if start == Start::Sequential { 1 } else { 5 };
    let sync = |app: App| async move {
        let s = app
            .engine
            .sync(Kind::Computers, SyncOptions::new(true, Trigger::Cli))
            .await?;
        app.db.close().await;
        if !s.succeeded() {
            return Err(anyhow!("{s}"));
        }
        Ok::<_, anyhow::Error>(s)
    };
    if start == Start::Warm {
        sync(
            app(
                backend,
                settings(&sim.url, max, true)?,
                FetchStrategy::Inline,
            )
            .await?,
        )
        .await?;
    }
    let app = app(
        backend,
        settings(&sim.url, max, true)?,
        FetchStrategy::Inline,
    )
    .await?;
    let served = Served::start(&sim, http).await?;
    let t0 = Instant::now();
    let s = sync(app).await?;
    let wall = t0.elapsed().as_secs_f64();
    let (requests, bound) = served.since(&sim, http).await?;
    Ok(Row {
        scenario: "busy".into(),
        backend: backend.name.into(),
        devices,
        latency_ms: 20,
        wall_secs: wall,
        requests,
        bound_secs: Some(bound),
        bound_ratio: Some(bound / wall),
        records_per_sec: Some(s.counts.fetched as f64 / wall),
        cpu_secs_per_1000: None,
        peak_rss_mb: None,
        note: format!(
            "computers inline, {} µs/record/section on list pages; {}",
            cost_us,
            match start {
                Start::Sequential => "sequential keyset pager (1 connection)",
                Start::Cold => "parallel spans, first run (cold pacing)",
                Start::Warm => "parallel spans, next process (warm start)",
            }
        ),
    })
}

/// The simulator's counters at the start of a measurement.
struct Served {
    requests: u64,
    secs: f64,
}

impl Served {
    async fn start(sim: &SimChild, http: &reqwest::Client) -> anyhow::Result<Self> {
        Ok(Served {
            requests: sim.requests(http).await?,
            secs: sim.service_secs(http).await?,
        })
    }

    /// Requests since the start (the two stats calls not counted) and the five-connection
    /// bound: the simulator's service time since, over five.
    async fn since(&self, sim: &SimChild, http: &reqwest::Client) -> anyhow::Result<(u64, f64)> {
        let requests = sim.requests(http).await?.saturating_sub(self.requests + 2);
        let bound = (sim.service_secs(http).await? - self.secs) / 5.0;
        Ok((requests, bound))
    }
}

/// Server-side cost of a list page per record and section in the busy scenario, in µs.
const BUSY_US: u64 = 1000;

/// The busy scenario's peer: jamf-pro-sdk's concurrent paginator (fetch only or with its
/// models) against the same kind of simulator, run by `python`.
async fn peer_row(
    python: &str,
    devices: usize,
    models: bool,
    cost_us: u64,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let sim = SimChild::start(devices, 0, 20, cost_us)?;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer_jamf_pro_sdk.py");
    let served = Served::start(&sim, http).await?;
    let mut cmd = Command::new(python);
    cmd.arg(&script).args(["--url", &sim.url]);
    if models {
        cmd.arg("--models");
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running the jamf-pro-sdk peer")?;
    if !out.status.success() {
        return Err(anyhow!(
            "jamf-pro-sdk peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(2000)
                .collect::<String>()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let wall = v["wall_secs"]
        .as_f64()
        .ok_or_else(|| anyhow!("no wall time"))?;
    let read = v["records"].as_u64().unwrap_or(0);
    if read != devices as u64 {
        return Err(anyhow!("the peer read {read} of {devices} computers"));
    }
    let (requests, bound) = served.since(&sim, http).await?;
    Ok(Row {
        scenario: "busy".into(),
        backend: "-".into(),
        devices,
        latency_ms: 20,
        wall_secs: wall,
        requests,
        bound_secs: Some(bound),
        bound_ratio: Some(bound / wall),
        records_per_sec: Some(read as f64 / wall),
        cpu_secs_per_1000: None,
        peak_rss_mb: None,
        note: format!(
            "jamf-pro-sdk 0.9a1 concurrent offset paginator, 5 threads, {} µs/record/section; {}",
            cost_us,
            if models {
                "pydantic models"
            } else {
                "fetch only (raw JSON)"
            }
        ),
    })
}

/// Mixed sync at 20 ms: 1,500 computers inline and 500 mobile devices (advanced search and
/// Classic records) in one process at once, as a daemon's schedule runs them; a first
/// process (cold pacing), then the next one over the same database (warm start).
async fn mixed_rows(backend: &Backend, http: &reqwest::Client) -> anyhow::Result<Vec<Row>> {
    let sim = SimChild::start(1500, 500, 20, 0)?;
    let mut rows = Vec::new();
    for warm in [false, true] {
        let app = app(backend, settings(&sim.url, 5, true)?, FetchStrategy::Inline).await?;
        let before = sim.requests(http).await?;
        let served = Served::start(&sim, http).await?;
        let t0 = Instant::now();
        let (c, m) = tokio::join!(
            app.engine
                .sync(Kind::Computers, SyncOptions::new(true, Trigger::Cli)),
            app.engine
                .sync(Kind::MobileDevices, SyncOptions::new(true, Trigger::Cli)),
        );
        let wall = t0.elapsed().as_secs_f64();
        let (c, m) = (c?, m?);
        app.db.close().await;
        if !c.succeeded() || !m.succeeded() {
            return Err(anyhow!("{c}; {m}"));
        }
        // The stats calls of `served` and this one are not the sync's.
        let requests = sim.requests(http).await?.saturating_sub(before + 3);
        let (_, served_bound) = served.since(&sim, http).await?;
        let bound = requests as f64 * 0.020 / 5.0;
        rows.push(Row {
            scenario: "mixed".into(),
            backend: backend.name.into(),
            devices: 2000,
            latency_ms: 20,
            wall_secs: wall,
            requests,
            bound_secs: Some(bound),
            bound_ratio: Some(bound / wall),
            records_per_sec: Some((c.counts.fetched + m.counts.fetched) as f64 / wall),
            cpu_secs_per_1000: None,
            peak_rss_mb: None,
            note: format!(
                "1,500 computers inline + 500 mobile devices (search + Classic) at once; \
                 simulator's own service time over five {:.2} s (ratio {:.3}); {}",
                served_bound,
                served_bound / wall,
                if warm {
                    "next process (warm start)"
                } else {
                    "first run (cold pacing)"
                }
            ),
        });
    }
    Ok(rows)
}

async fn delta_row(
    backend: &Backend,
    devices: usize,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
    let sim = SimChild::start(devices, 0, 0, 0)?;
    let app = app(backend, settings(&sim.url, 5, true)?, FetchStrategy::Inline).await?;
    let r0 = sim.requests(http).await?;
    let full = app
        .engine
        .sync(Kind::Computers, SyncOptions::new(true, Trigger::Cli))
        .await?;
    let r1 = sim.requests(http).await?;
    sim.touch(http, devices / 100).await?;
    let r2 = sim.requests(http).await?;
    let t0 = Instant::now();
    let delta = app
        .engine
        .sync(Kind::Computers, SyncOptions::new(false, Trigger::Cli))
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    let r3 = sim.requests(http).await?;
    app.db.close().await;
    if !full.succeeded() || !delta.succeeded() {
        return Err(anyhow!("{full} / {delta}"));
    }
    Ok(Row {
        scenario: "delta".into(),
        backend: backend.name.into(),
        devices,
        latency_ms: 0,
        wall_secs: wall,
        requests: r3 - r2 - 1,
        bound_secs: None,
        bound_ratio: None,
        records_per_sec: None,
        cpu_secs_per_1000: None,
        peak_rss_mb: None,
        note: format!(
            "1% changed: delta listed {} in {} requests; the full sync took {} requests",
            delta.counts.listed,
            r3 - r2 - 1,
            r1 - r0 - 1
        ),
    })
}

/// What a memory row measures: a separate `jamf-sync` process over a fresh SQLite database.
#[derive(Debug, Clone, Copy)]
enum MemoryJob {
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
fn reported_peak_rss_kb(stderr: &str) -> anyhow::Result<f64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no peak RSS reported: {stderr}"))
}

/// Peak RSS of a separate `jamf-sync` process (it reports `VmHWM` when asked).
async fn memory_row(devices: usize, job: MemoryJob) -> anyhow::Result<Row> {
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

/// Requests the simulators served in all, and the most connections any one of them saw at
/// once: an error when that is more than Jamf's five.
async fn sims_load(sims: &[SimChild], http: &reqwest::Client) -> anyhow::Result<(u64, u64)> {
    let mut requests = 0;
    let mut peak_connections = 0;
    for sim in sims {
        requests += sim.requests(http).await?;
        peak_connections = peak_connections.max(sim.stat(http, "peak_connections").await?);
    }
    if peak_connections > 5 {
        return Err(anyhow!(
            "a Jamf server saw {peak_connections} connections at once"
        ));
    }
    Ok((requests, peak_connections))
}

/// A row of a whole-fleet scenario run by separate processes.
struct FleetRun {
    scenario: &'static str,
    backend: &'static str,
    devices: usize,
    latency_ms: u64,
    wall_secs: f64,
    requests: u64,
    peak_rss_kb: f64,
}

impl FleetRun {
    fn row(self, note: String) -> Row {
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
async fn instances_row(
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
async fn replicas_row(
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

/// Runs the chosen scenarios; rows come back in run order. The PostgreSQL databases they
/// created are dropped afterwards, whether they succeeded or not.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let rows = run_scenarios(opts).await;
    if let Some(admin) = &opts.postgres {
        drop_created(admin).await;
    }
    rows
}

async fn run_scenarios(opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let wants = |s: &str| opts.scenarios.is_empty() || opts.scenarios.iter().any(|x| x == s);
    let mut backends = vec!["sqlite"];
    if opts.postgres.is_some() {
        backends.push("postgres");
    }
    let mut rows = Vec::new();
    let mut push = |r: anyhow::Result<Row>, what: &str| match r {
        Ok(row) => {
            eprintln!("bench: {what} done");
            rows.push(row)
        }
        Err(e) => eprintln!("bench: {what} failed: {e:#}"),
    };
    for name in &backends {
        let fresh = || fresh_backend(name, opts.postgres.as_deref());
        if wants("latency") {
            let mut plan = vec![
                (Kind::Computers, 2000, 20),
                (Kind::Computers, 2000, 100),
                (Kind::MobileDevices, 2000, 20),
            ];
            if opts.full {
                plan.push((Kind::Computers, 20000, 20));
                plan.push((Kind::MobileDevices, 20000, 20));
                plan.push((Kind::Computers, 20000, 100));
            }
            for (kind, n, l) in plan {
                let b = fresh().await?;
                push(
                    latency_row(&b, kind, n, l, false, &http).await,
                    &format!("latency {name} {} {n}@{l}ms", kind.as_str()),
                );
            }
        }
        if wants("sequential") {
            let b = fresh().await?;
            push(
                latency_row(&b, Kind::Computers, 2000, 20, true, &http).await,
                &format!("sequential {name}"),
            );
        }
        if wants("cpu") {
            let b = fresh().await?;
            push(cpu_row(&b, 20000, &http).await, &format!("cpu {name}"));
        }
        if wants("apps") {
            let b = fresh().await?;
            match apps_rows(&b, 20_000, &http).await {
                Ok(rows) => {
                    for row in rows {
                        push(Ok(row), &format!("apps {name}"));
                    }
                }
                Err(e) => push(Err(e), &format!("apps {name}")),
            }
        }
        if wants("delta") {
            let b = fresh().await?;
            push(delta_row(&b, 20000, &http).await, &format!("delta {name}"));
        }
        if wants("busy") {
            let mut sizes = vec![2000];
            if opts.full {
                sizes.push(100_000);
            }
            for n in sizes {
                let runs = if n > 2000 {
                    // One page at a time through 100,000 busy records is ~9 minutes: its
                    // figure is the simulator's summed service time (one connection). The
                    // warm row runs a cold one first; PostgreSQL only, when given.
                    if opts.postgres.is_some() && *name == "sqlite" {
                        continue;
                    }
                    vec![(Start::Warm, BUSY_US)]
                } else {
                    // The last: the same fleet with no server-side cost (the simulator's
                    // own speed is the limit), against the SDK's run of the same.
                    vec![
                        (Start::Sequential, BUSY_US),
                        (Start::Cold, BUSY_US),
                        (Start::Warm, BUSY_US),
                        (Start::Warm, 0),
                    ]
                };
                for (start, cost) in runs {
                    let b = fresh().await?;
                    push(
                        busy_row(&b, n, start, cost, &http).await,
                        &format!("busy {name} {n} {start:?} {cost}µs"),
                    );
                }
            }
        }
        if wants("mixed") {
            let b = fresh().await?;
            match mixed_rows(&b, &http).await {
                Ok(mixed) => {
                    for row in mixed {
                        push(Ok(row), &format!("mixed {name}"));
                    }
                }
                Err(e) => push(Err(e), &format!("mixed {name}")),
            }
        }
    }
    if wants("busy") {
        if let Some(python) = &opts.peer_python {
            let mut sizes = vec![2000];
            if opts.full {
                sizes.push(100_000);
            }
            for n in sizes {
                let mut runs = vec![(false, BUSY_US)];
                if n <= 2000 {
                    runs.extend([(true, BUSY_US), (false, 0)]);
                }
                for (models, cost) in runs {
                    push(
                        peer_row(python, n, models, cost, &http).await,
                        &format!("busy jamf-pro-sdk {n} models={models} {cost}µs"),
                    );
                }
            }
        }
    }
    if wants("instances") {
        for name in &backends {
            let backend = fresh_backend(name, opts.postgres.as_deref()).await?;
            push(
                instances_row(&backend, 20, 2000, 20, &http).await,
                &format!("instances 20x2000 {name}"),
            );
        }
    }
    if wants("replicas") {
        match opts.postgres.as_deref() {
            Some(pg) => {
                let backend = fresh_backend("postgres", Some(pg)).await?;
                push(
                    replicas_row(&backend, 3, 20, 2000, 20, &http).await,
                    "replicas 3 processes 20x2000 postgres",
                );
            }
            None => eprintln!("bench: replicas skipped: it needs --postgres"),
        }
    }
    if wants("memory") {
        let mut sizes = vec![10_000];
        if opts.full {
            sizes.push(100_000);
        }
        for job in [
            MemoryJob::Computers,
            MemoryJob::MobileSearch,
            MemoryJob::MobileReconcile,
            MemoryJob::ComputersApps,
        ] {
            for n in &sizes {
                push(memory_row(*n, job).await, &format!("memory {job:?} {n}"));
            }
        }
    }
    Ok(rows)
}

/// A plain-text table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:<9} {:>7} {:>5} {:>9} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8}  note\n",
        "scenario",
        "backend",
        "devices",
        "L ms",
        "wall s",
        "requests",
        "bound s",
        "ratio",
        "records/s",
        "cpu s/1k",
        "rss MB"
    );
    let opt =
        |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:<9} {:>7} {:>5} {:>9.2} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8}  {}\n",
            r.scenario,
            r.backend,
            r.devices,
            r.latency_ms,
            r.wall_secs,
            r.requests,
            opt(r.bound_secs, 2),
            opt(r.bound_ratio, 3),
            opt(r.records_per_sec, 0),
            opt(r.cpu_secs_per_1000, 3),
            opt(r.peak_rss_mb, 1),
            r.note
        ));
    }
    out
}
