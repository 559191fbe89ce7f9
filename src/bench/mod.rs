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
//!   next process; then the same through the paths users take: a `jamf-sync sync` process on
//!   a fresh database (cold), `sync --full` again (warm), and a daemon's first runs.

mod harness;
mod processes;
mod report;
mod scenarios;

use crate::domain::Kind;

pub use harness::peak_rss_kb;
use harness::*;
use processes::*;
pub use report::{table, BenchOptions, Row};
use scenarios::*;

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
            let (b, d) = (fresh().await?, fresh().await?);
            match mixed_process_rows(&b, &d, &http).await {
                Ok(mixed) => {
                    for row in mixed {
                        push(Ok(row), &format!("mixed processes {name}"));
                    }
                }
                Err(e) => push(Err(e), &format!("mixed processes {name}")),
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
