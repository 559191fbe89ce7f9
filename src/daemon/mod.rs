//! `jamf-sync run`: the long-running daemon.
//!
//! Start-up order: the HTTP server first (so `/healthz` and `/readyz` answer while the rest
//! starts), then the database with retry and backoff (`/readyz` says why it is not ready),
//! marking runs a crash left `running` as `interrupted`, the Jamf client (an authentication
//! check in the background), the runner, the schedules, the start-up catch-up run, and (when
//! `webhooks.enabled`) the webhook queue worker, which first drains what a previous process
//! left queued.
//!
//! Shutdown (first SIGTERM/SIGINT): stop scheduling, ask the engine to stop taking new work,
//! wait up to `sync.shutdown_grace_secs` for requests on the wire to finish and completed pages
//! to commit (the run ends `interrupted`, cursor untouched), invalidate the Jamf token, exit 0.
//! If the grace period runs out, the run is abandoned and marked `interrupted` all the same.
//!
//! Layout: the triggers ([`scheduler`], [`http`]'s `POST /sync`, start-up catch-up) only
//! *request* runs from the [`runner`], the one executor of syncs and reconciles; the
//! [`webhooks`] receiver only queues events, and its worker refreshes devices beside the runner
//! (the store's newer-wins writes make that safe; see the sync engine's notes).

mod credentials;
pub mod http;
pub mod runner;
pub mod scheduler;
pub mod serve;
pub mod supervise;
pub mod webhooks;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::domain::{Kind, RunKind, Trigger};
use crate::store::{Db, Store};
use crate::telemetry::metric;
use http::{router, AppState};
use runner::{Executor, Op, Runner, EXECUTOR};
use supervise::supervise;

/// The webhook worker's name in health reports and restart metrics.
const WEBHOOK_WORKER: &str = "webhook_worker";

/// `first` doubled `n` times, at most `max` (the daemon's retry and restart delays).
pub(crate) fn doubling(first: Duration, n: u32, max: Duration) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(n.min(31)))
        .min(max)
}

/// Waits until the shutdown flag turns true (or its sender is gone).
async fn until_shutdown(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = cfg.jamf_settings()?;
    let instance = settings.instance.clone();
    let mut kinds = vec![Kind::Computers];
    if cfg.mobile_devices.enabled {
        kinds.push(Kind::MobileDevices);
    }
    let mut state = AppState::new(
        instance.clone(),
        kinds.clone(),
        crate::telemetry::install_metrics(),
        cfg.admin_token()?,
    );
    let queued = Arc::new(tokio::sync::Notify::new());
    let queue_store: Arc<OnceLock<Arc<Db>>> = Arc::new(OnceLock::new());
    if cfg.webhooks.enabled {
        state = state.with_webhooks(Arc::new(webhooks::Receiver {
            instance: instance.clone(),
            auth: cfg.webhook_auth()?,
            max_body_bytes: cfg.webhooks.max_body_bytes,
            max_queued: i64::try_from(cfg.webhooks.max_queued).unwrap_or(i64::MAX),
            queued: queued.clone(),
            own_listener: cfg.webhooks.listen.is_some(),
            store: queue_store.clone(),
        }));
    }
    // After the recorder is installed (AppState::new), or the zeros would go nowhere.
    crate::telemetry::init_series(&instance, &kinds, cfg.webhooks.enabled);
    let state = Arc::new(state);
    let addr = listener.local_addr()?;
    let limits = serve::Limits {
        header_timeout: Duration::from_secs(cfg.server.header_timeout_secs),
        max_connections: cfg.server.max_connections,
    };
    let http = tokio::spawn(serve::serve(
        listener,
        router(state.clone()),
        limits,
        shutdown.clone(),
    ));
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "jamf-sync daemon listening");
    let webhook_http = match (cfg.webhooks.listen.as_deref(), &state.webhooks) {
        (Some(listen), Some(receiver)) => {
            let l = TcpListener::bind(listen)
                .await
                .with_context(|| format!("config key `webhooks.listen`: cannot bind {listen}"))?;
            tracing::info!(addr = %l.local_addr()?, "webhook endpoint listening");
            Some(tokio::spawn(serve::serve(
                l,
                http::webhook_router(receiver.clone(), state.clone()),
                limits,
                shutdown.clone(),
            )))
        }
        _ => None,
    };

    let Some(db) = connect_with_retry(&cfg, &state, shutdown.clone()).await? else {
        let _ = http.await;
        return Ok(());
    };
    let db = Arc::new(db);
    let app = App::start(&cfg, settings, db.clone()).await?;
    let (client, engine) = (app.client.clone(), app.engine.clone());
    init_run_gauges(&db, &instance, &kinds).await;
    // The runner before the engine: once `/readyz` can say ready (it needs the engine),
    // `POST /sync` must find someone to take the request.
    let (runner, rx) = Runner::new();
    let _ = state.runner.set(runner.clone());
    let _ = queue_store.set(db.clone());
    let _ = state.engine.set(engine.clone());
    {
        // Authenticate once up front so /readyz can report a bad credential at once.
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.server_version().await {
                tracing::error!(error = %e, "Jamf check failed; the next run retries");
            }
        });
    }

    let health = state.health.clone();
    let executor = Arc::new(Executor::new(
        engine.clone(),
        runner.clone(),
        rx,
        health.clone(),
        &cfg.sync,
        state.next_runs.clone(),
    ));
    let _ = state.next_retries.set(executor.next_retries.clone());
    let executor = tokio::spawn(supervise(EXECUTOR, health.clone(), shutdown.clone(), {
        let executor = executor.clone();
        move || executor.clone().run()
    }));
    let webhook_worker = cfg.webhooks.enabled.then(|| {
        let (engine, hooks, queued, stop) = (
            engine.clone(),
            cfg.webhooks.clone(),
            queued.clone(),
            shutdown.clone(),
        );
        tokio::spawn(supervise(
            WEBHOOK_WORKER,
            health.clone(),
            shutdown.clone(),
            move || {
                webhooks::worker::run(engine.clone(), hooks.clone(), queued.clone(), stop.clone())
            },
        ))
    });

    let mut schedules = vec![(
        Kind::Computers,
        Op::Sync { full: false },
        cfg.sync.schedule()?,
    )];
    if cfg.mobile_devices.enabled {
        schedules.push((
            Kind::MobileDevices,
            Op::Sync { full: false },
            cfg.mobile_devices.schedule(&cfg.sync)?,
        ));
    }
    if cfg.reconcile.enabled {
        for kind in &kinds {
            schedules.push((*kind, Op::Reconcile, cfg.reconcile.schedule(&cfg.sync)?));
        }
    }
    if cfg.groups.enabled {
        for kind in &kinds {
            schedules.push((*kind, Op::Groups, cfg.groups.schedule(&cfg.sync)?));
        }
    }
    let mut sched = scheduler::start(schedules.clone(), runner.clone(), state.next_runs.clone())
        .await
        .context("starting the scheduler")?;
    for kind in &kinds {
        engine.refresh_gauges(*kind).await;
    }
    if cfg.sync.on_start {
        let now = Utc::now();
        let syncs = schedules.iter().filter(|s| matches!(s.1, Op::Sync { .. }));
        for (kind, _, schedule) in syncs {
            let cursor = db.cursor(&instance, *kind).await?;
            let interval = schedule.interval(now).unwrap_or(chrono::Duration::days(1));
            if cursor.is_none_or(|c| now - c > interval) {
                tracing::info!(kind = kind.as_str(), last_success = ?cursor, "catching up at start-up");
                runner.request(*kind, false, Trigger::Startup);
            }
        }
    }

    until_shutdown(shutdown).await;
    tracing::info!("shutting down: no new runs; letting requests in flight finish");
    if let Err(e) = sched.shutdown().await {
        tracing::warn!(error = %e, "scheduler shutdown");
    }
    engine.stop();
    let grace = Duration::from_secs(cfg.sync.shutdown_grace_secs);
    let work = async {
        let _ = executor.await;
        if let Some(worker) = webhook_worker {
            let _ = worker.await;
        }
    };
    match tokio::time::timeout(grace, work).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(?grace, "grace period over; abandoning the run in progress");
            let n = db.interrupt_stale_runs(&instance).await.unwrap_or(0);
            tracing::warn!(marked = n, "runs marked interrupted");
        }
    }
    client.invalidate_token().await;
    db.close().await;
    let _ = http.await;
    if let Some(h) = webhook_http {
        let _ = h.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sets the last-success and last-run gauges from the database, so an alert on a stale copy
/// can fire after a restart too. A kind that never succeeded counts from this start: the
/// alert fires once it has gone as long without a success.
async fn init_run_gauges(db: &Db, instance: &str, kinds: &[Kind]) {
    let started = Utc::now().timestamp() as f64;
    for kind in kinds {
        let run_kind = RunKind::Sync(*kind);
        let success = db.last_finished(instance, run_kind, true).await;
        let last = db.last_finished(instance, run_kind, false).await;
        let label = kind.as_str();
        match success {
            Ok(at) => metrics::gauge!(metric::LAST_SUCCESS, "jamf_instance" => instance.to_string(), "kind" => label)
                .set(at.map_or(started, |t| t.timestamp() as f64)),
            Err(e) => tracing::warn!(kind = label, error = %e, "cannot read the last success"),
        }
        if let Ok(Some(at)) = last {
            metrics::gauge!(metric::LAST_RUN, "jamf_instance" => instance.to_string(), "kind" => label)
                .set(at.timestamp() as f64);
        }
    }
}

/// Connects and migrates, retrying with backoff until it works or shutdown is asked for.
async fn connect_with_retry(
    cfg: &Config,
    state: &AppState,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Db>> {
    let url = cfg.database_url()?;
    let mut delay = Duration::from_millis(500);
    state.set_database(Err(format!("connecting to {}", url.masked())));
    loop {
        match Db::connect(&url, cfg.database.max_connections).await {
            Ok(db) => {
                state.set_database(Ok(()));
                tracing::info!(database = %url.masked(), "database ready");
                return Ok(Some(db));
            }
            Err(e) => {
                let why = format!("cannot connect to {}: {e}", url.masked());
                tracing::warn!(retry_in = ?delay, "{why}");
                state.set_database(Err(why));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = until_shutdown(shutdown.clone()) => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
