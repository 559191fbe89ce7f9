//! What every scenario stands on: the simulator as a child process, fresh databases (SQLite
//! files, or PostgreSQL databases dropped when the scenarios are done), apps over them, and
//! this process's CPU time and peak memory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use secrecy::SecretString;

use crate::app::App;
use crate::config::{
    ApiVersion, Config, Credentials, DatabaseUrl, FetchStrategy, JamfSettings, PacingConfig,
    RetryConfig,
};
use crate::store::Db;

pub(super) struct SimChild {
    pub(super) child: Child,
    pub(super) url: String,
}

impl SimChild {
    /// `per_record_us`: the busy-server cost of list pages per record and section.
    pub(super) fn start(
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
    pub(super) fn fleet(
        n: usize,
        computers: usize,
        latency_ms: u64,
    ) -> anyhow::Result<Vec<SimChild>> {
        (0..n)
            .map(|_| SimChild::start(computers, 0, latency_ms, 0))
            .collect()
    }

    pub(super) async fn requests(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        self.stat(http, "requests").await
    }

    /// Seconds the simulator spent answering, summed over its requests.
    pub(super) async fn service_secs(&self, http: &reqwest::Client) -> anyhow::Result<f64> {
        Ok(self.stat(http, "service_us").await? as f64 / 1e6)
    }

    pub(super) async fn stat(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<u64> {
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

    pub(super) async fn touch(&self, http: &reqwest::Client, count: usize) -> anyhow::Result<()> {
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

pub(super) fn settings(url: &str, max: u32, adaptive: bool) -> anyhow::Result<JamfSettings> {
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
pub(super) fn cpu_secs() -> f64 {
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

pub(super) struct Backend {
    pub(super) name: &'static str,
    pub(super) url: String,
    pub(super) _dir: Option<tempfile_dir::TempDir>,
}

/// A throwaway directory without pulling in a crate: removed on drop.
pub(super) mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The PostgreSQL databases this process created, dropped when the scenarios are done.
pub(super) static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(super) fn lock_created() -> std::sync::MutexGuard<'static, Vec<String>> {
    CREATED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the databases of [`CREATED`]; a failure is reported, not fatal (the rows stand).
pub(super) async fn drop_created(admin: &str) {
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

pub(super) async fn fresh_backend(
    name: &'static str,
    postgres: Option<&str>,
) -> anyhow::Result<Backend> {
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
pub(super) async fn app(
    backend: &Backend,
    settings: JamfSettings,
    strategy: FetchStrategy,
) -> anyhow::Result<App> {
    let mut cfg = Config::default();
    cfg.sync.strategy = strategy;
    app_with(backend, settings, &cfg).await
}

/// An app over a fresh connection to `backend` with this configuration.
pub(super) async fn app_with(
    backend: &Backend,
    settings: JamfSettings,
    cfg: &Config,
) -> anyhow::Result<App> {
    let db = Arc::new(
        Db::connect(
            &DatabaseUrl::parse(SecretString::from(backend.url.clone()))?,
            5,
        )
        .await?,
    );
    App::build(cfg, settings, db)
}

/// The simulator's counters at the start of a measurement.
pub(super) struct Served {
    pub(super) requests: u64,
    pub(super) secs: f64,
}

impl Served {
    pub(super) async fn start(sim: &SimChild, http: &reqwest::Client) -> anyhow::Result<Self> {
        Ok(Served {
            requests: sim.requests(http).await?,
            secs: sim.service_secs(http).await?,
        })
    }

    /// Requests since the start (the two stats calls not counted) and the five-connection
    /// bound: the simulator's service time since, over five.
    pub(super) async fn since(
        &self,
        sim: &SimChild,
        http: &reqwest::Client,
    ) -> anyhow::Result<(u64, f64)> {
        let requests = sim.requests(http).await?.saturating_sub(self.requests + 2);
        let bound = (sim.service_secs(http).await? - self.secs) / 5.0;
        Ok((requests, bound))
    }
}

/// Server-side cost of a list page per record and section in the busy scenario, in µs.
pub(super) const BUSY_US: u64 = 1000;

/// Requests the simulators served in all, and the most connections any one of them saw at
/// once: an error when that is more than Jamf's five.
pub(super) async fn sims_load(
    sims: &[SimChild],
    http: &reqwest::Client,
) -> anyhow::Result<(u64, u64)> {
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

/// A row of the mixed case (1,500 computers + 500 mobile devices at 20 ms): its bound is
/// `R × L / 5` whichever path ran it.
pub(super) fn mixed_row(
    backend: &'static str,
    wall: f64,
    requests: u64,
    records: i64,
    note: String,
) -> super::report::Row {
    let bound = requests as f64 * 0.020 / 5.0;
    super::report::Row {
        scenario: "mixed".into(),
        backend: backend.into(),
        devices: 2000,
        latency_ms: 20,
        wall_secs: wall,
        requests,
        bound_secs: Some(bound),
        bound_ratio: Some(bound / wall),
        records_per_sec: Some(records as f64 / wall),
        cpu_secs_per_1000: None,
        peak_rss_mb: None,
        note: format!("1,500 computers inline + 500 mobile devices (search + Classic){note}"),
    }
}
