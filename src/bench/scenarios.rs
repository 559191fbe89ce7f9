//! The scenarios that run syncs in this process: latency, sequential, cpu, apps, busy (with a
//! peer), mixed and delta. Each returns report rows; none asserts (the figures are read).

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};

use crate::app::App;
use crate::config::{Config, FetchStrategy};
use crate::domain::{Kind, Trigger};
use crate::store::Store;
use crate::sync::SyncOptions;

use super::harness::*;
use super::report::Row;

pub(super) async fn latency_row(
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
pub(super) async fn cpu_sync(
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

pub(super) async fn cpu_row(
    backend: &Backend,
    devices: usize,
    http: &reqwest::Client,
) -> anyhow::Result<Row> {
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
pub(super) async fn apps_rows(
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
pub(super) enum Start {
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
pub(super) async fn busy_row(
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

/// The busy scenario's peer: jamf-pro-sdk's concurrent paginator (fetch only or with its
/// models) against the same kind of simulator, run by `python`.
pub(super) async fn peer_row(
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
pub(super) async fn mixed_rows(
    backend: &Backend,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Row>> {
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
        rows.push(mixed_row(
            backend.name,
            wall,
            requests,
            c.counts.fetched + m.counts.fetched,
            format!(
                " at once; simulator's own service time over five {:.2} s (ratio {:.3}); {}",
                served_bound,
                served_bound / wall,
                if warm {
                    "next process (warm start)"
                } else {
                    "first run (cold pacing)"
                }
            ),
        ));
    }
    Ok(rows)
}

pub(super) async fn delta_row(
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
