//! `jamf-sync run`: the long-running daemon, for every configured Jamf instance.
//!
//! Each instance has its own engine (client, limiter, pacing), runner and executor, schedules,
//! retries and webhook worker; instances run in parallel and one that fails never stops the
//! others. The HTTP server, the database and the supervision health are shared.
//!
//! Start-up order: the HTTP server first (so `/healthz` and `/readyz` answer while the rest
//! starts), then the database with retry and backoff (`/readyz` says why it is not ready),
//! marking runs a crash left `running` as `interrupted`, the Jamf client (an authentication
//! check in the background), the runner, the schedules, the start-up catch-up run, and (when
//! `webhooks.enabled`) the webhook queue worker, which first drains what a previous process
//! left queued.
//!
//! Shutdown (first SIGTERM/SIGINT): stop scheduling, ask every engine to stop taking new work,
//! wait up to `sync.shutdown_grace_secs` for requests on the wire to finish and completed pages
//! to commit (the run ends `interrupted`, cursor untouched), invalidate the Jamf token, exit 0.
//! If the grace period runs out, the run is abandoned and marked `interrupted` all the same.
//!
//! On PostgreSQL other processes may share the database: every instance is then held by one
//! process at a time through a lease ([`crate::store::lease`]); this process runs an
//! instance's work only while it holds it (see [`ha`]), and serves every instance's HTTP
//! endpoints regardless.
//!
//! Layout: the triggers ([`scheduler`], [`http`]'s `POST /sync`, start-up catch-up) only
//! *request* runs from the instance's [`runner`], the one executor of its syncs, reconciles and
//! group refreshes; the
//! [`webhooks`] receiver only queues events, and its worker refreshes devices beside the runner
//! (the store's newer-wins writes make that safe; see the sync engine's notes).

mod credentials;
pub mod ha;
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
use crate::config::{Config, JamfSettings};
use crate::domain::{Kind, RunKind};
use crate::store::lease::{Coordinator, Role};
use crate::store::{Db, Store};
use crate::sync::Engine;
use crate::telemetry::metric;
use http::{router, AppState, InstanceState};
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

/// One instance's part of the daemon, planned before the database is there.
struct Planned {
    /// The configuration as this instance sees it ([`Config::for_instance`]).
    cfg: Config,
    settings: JamfSettings,
    state: Arc<InstanceState>,
    queued: Arc<tokio::sync::Notify>,
    /// Health names of its tasks (plain with one instance, suffixed with several).
    executor_name: &'static str,
    worker_name: &'static str,
}

/// One instance's running part.
struct Started {
    instance: String,
    runner: Runner,
    engine: Arc<Engine<Db>>,
    client: Arc<crate::jamf::JamfClient>,
    sched: tokio_cron_scheduler::JobScheduler,
    executor: tokio::task::JoinHandle<()>,
    worker: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

/// A task name that lives as long as the process (a few, once, at start-up).
fn task_name(base: &'static str, instance: &str, several: bool) -> &'static str {
    if several {
        Box::leak(format!("{base} {instance}").into_boxed_str())
    } else {
        base
    }
}

fn plan(cfg: &Config, queue_store: &Arc<OnceLock<Arc<Db>>>) -> anyhow::Result<Vec<Planned>> {
    let instances = cfg.instances();
    let several = instances.len() > 1;
    let mut out = Vec::with_capacity(instances.len());
    for i in &instances {
        let icfg = cfg.for_instance(i);
        let settings = icfg.jamf_settings()?;
        let kinds = icfg.enabled_kinds();
        let queued = Arc::new(tokio::sync::Notify::new());
        let mut state = InstanceState::new(i.name.clone(), kinds);
        if icfg.webhooks.enabled {
            state = state.with_webhooks(Arc::new(webhooks::Receiver {
                body_timeout: Duration::from_secs(cfg.server.body_timeout_secs),
                instance: i.name.clone(),
                auth: icfg.webhook_auth()?,
                max_body_bytes: icfg.webhooks.max_body_bytes,
                max_queued: i64::try_from(icfg.webhooks.max_queued).unwrap_or(i64::MAX),
                queued: queued.clone(),
                // One webhook listener for the process: the top-level `webhooks.listen`.
                own_listener: cfg.webhooks.listen.is_some(),
                store: queue_store.clone(),
            }));
        }
        out.push(Planned {
            executor_name: task_name(EXECUTOR, &i.name, several),
            worker_name: task_name(WEBHOOK_WORKER, &i.name, several),
            cfg: icfg,
            settings,
            state: Arc::new(state),
            queued,
        });
    }
    Ok(out)
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let queue_store: Arc<OnceLock<Arc<Db>>> = Arc::new(OnceLock::new());
    let planned = plan(&cfg, &queue_store)?;
    let state = AppState::new(
        planned.iter().map(|p| p.state.clone()).collect(),
        crate::telemetry::install_metrics(),
        cfg.admin_token()?,
    );
    // After the recorder is installed (AppState::new), or the zeros would go nowhere.
    for p in &planned {
        crate::telemetry::init_series(&p.state.instance, &p.state.kinds, p.cfg.webhooks.enabled);
    }
    let state = Arc::new(state);
    let addr = listener.local_addr()?;
    let limits = serve::Limits {
        header_timeout: Duration::from_secs(cfg.server.header_timeout_secs),
        max_connections: cfg.server.max_connections,
    };
    let http = tokio::spawn(serve::serve(
        listener,
        serve::Routers {
            normal: router(state.clone()),
            overflow: http::probe_router(state.clone()),
        },
        limits,
        shutdown.clone(),
    ));
    let names: Vec<&str> = planned.iter().map(|p| p.state.instance.as_str()).collect();
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), instances = ?names, "jamf-sync daemon listening");
    let any_webhooks = planned.iter().any(|p| p.state.webhooks.is_some());
    let webhook_http = match cfg.webhooks.listen.as_deref().filter(|_| any_webhooks) {
        Some(listen) => {
            let l = TcpListener::bind(listen)
                .await
                .with_context(|| format!("config key `webhooks.listen`: cannot bind {listen}"))?;
            tracing::info!(addr = %l.local_addr()?, "webhook endpoint listening");
            Some(tokio::spawn(serve::serve(
                l,
                serve::Routers {
                    normal: http::webhook_router(state.clone()),
                    overflow: http::probe_router(state.clone()),
                },
                limits,
                shutdown.clone(),
            )))
        }
        None => None,
    };

    let Some(db) = connect_with_retry(&cfg, &state, shutdown.clone()).await? else {
        let _ = http.await;
        return Ok(());
    };
    let db = Arc::new(db);
    let _ = state.db.set(db.clone());
    let _ = queue_store.set(db.clone());
    // PostgreSQL: other processes may share the database; every write proves its lease.
    let names: Vec<String> = planned.iter().map(|p| p.state.instance.clone()).collect();
    let mut coordinator = Coordinator::start(
        &db,
        cfg.database_url()?.expose(),
        cfg.ha.failover(),
        cfg.takeover_quiet(),
        Role::Daemon,
        &names,
    )?;
    if let Some(c) = &coordinator {
        tracing::info!(
            holder = c.fence().holder(),
            failover_secs = cfg.ha.failover_secs,
            "PostgreSQL: instances are held by lease"
        );
    }
    let mut started = Vec::with_capacity(planned.len());
    for p in &planned {
        let lease = coordinator
            .as_ref()
            .and_then(|c| c.watch(&p.state.instance));
        let s = start_instance(p, &db, &state, shutdown.clone(), lease).await?;
        if let Some(c) = coordinator.as_mut() {
            let runner = s.runner.clone();
            c.set_idle(&s.instance, move || runner.is_idle());
        }
        started.push(s);
    }
    let (coord_stop, coord_stopped) = watch::channel(false);
    let requests = {
        let runners = started
            .iter()
            .map(|s| (s.instance.clone(), s.runner.clone()))
            .collect::<Vec<_>>();
        let db = db.clone();
        let stop = shutdown.clone();
        tokio::spawn(supervise(
            "run_requests",
            state.health.clone(),
            shutdown.clone(),
            move || ha::take_requests(db.clone(), runners.clone(), stop.clone()),
        ))
    };
    let mut coordination = coordinator.map(|c| tokio::spawn(c.run(coord_stopped)));

    // The coordinator is not restarted: if it ends, every lease is given up (its watchers see
    // the instances lost) and the process exits non-zero for its supervisor to restart it.
    let died = match coordination.as_mut() {
        Some(coord) => tokio::select! {
            _ = until_shutdown(shutdown.clone()) => None,
            r = coord => Some(match r {
                Ok(()) => "the lease coordinator stopped".to_string(),
                Err(e) => format!("the lease coordinator died: {}", supervise::panic_message(e)),
            }),
        },
        None => {
            until_shutdown(shutdown.clone()).await;
            None
        }
    };
    if let Some(why) = died {
        // Its watchers already saw every instance lost: runs were abandoned, workers paused.
        tracing::error!(error = %why, "exiting");
        return Err(anyhow::anyhow!(why));
    }
    tracing::info!("shutting down: no new runs; letting requests in flight finish");
    // Every instance stops taking work at once; then each gets its grace period.
    for s in &mut started {
        if let Err(e) = s.sched.shutdown().await {
            tracing::warn!(instance = %s.instance, error = %e, "scheduler shutdown");
        }
        s.engine.stop();
    }
    for s in started {
        let work = async {
            let _ = s.executor.await;
            if let Some(worker) = s.worker {
                let _ = worker.await;
            }
        };
        if tokio::time::timeout(s.grace, work).await.is_err() {
            tracing::warn!(instance = %s.instance, grace = ?s.grace, "grace period over; abandoning the run in progress");
            let n = db.interrupt_stale_runs(&s.instance).await.unwrap_or(0);
            tracing::warn!(instance = %s.instance, marked = n, "runs marked interrupted");
        }
        s.client.invalidate_token().await;
    }
    // Leases go last: runs finished (or were marked interrupted) under them.
    let _ = coord_stop.send(true);
    if let Some(coord) = coordination {
        let _ = coord.await;
    }
    let _ = requests.await;
    db.close().await;
    let _ = http.await;
    if let Some(h) = webhook_http {
        let _ = h.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts one instance over the connected database: its engine, runner and executor, its
/// webhook worker, its schedules and its start-up catch-up.
async fn start_instance(
    p: &Planned,
    db: &Arc<Db>,
    state: &AppState,
    shutdown: watch::Receiver<bool>,
    lease: Option<watch::Receiver<Option<i64>>>,
) -> anyhow::Result<Started> {
    let cfg = &p.cfg;
    let instance = p.state.instance.clone();
    let kinds = p.state.kinds.clone();
    let app = App::start(cfg, p.settings.clone(), db.clone()).await?;
    let (client, engine) = (app.client.clone(), app.engine.clone());
    last_runs_from_db(db, &instance, &kinds, Some(Utc::now().timestamp() as f64)).await;
    // The runner before the engine: once `/status` shows the engine, `POST /sync` must find
    // someone to take the request.
    let (runner, rx) = Runner::new();
    let _ = p.state.runner.set(runner.clone());
    let _ = p.state.engine.set(engine.clone());
    if let Some(lease) = &lease {
        let _ = p.state.lease.set(lease.clone());
    } else {
        // Authenticate once up front so /readyz and /status can report a bad credential.
        // With a lease the holder does it when it takes the instance: a process that does
        // not hold it keeps no connection to Jamf.
        check_jamf(client.clone());
    }

    let health = state.health.clone();
    let mut executor = Executor::new(
        engine.clone(),
        runner.clone(),
        rx,
        health.clone(),
        &cfg.sync,
        p.state.next_runs.clone(),
    );
    executor.name = p.executor_name;
    executor.lease = lease.clone();
    let executor = Arc::new(executor);
    let _ = p.state.next_retries.set(executor.next_retries.clone());
    let executor = tokio::spawn(supervise(
        p.executor_name,
        health.clone(),
        shutdown.clone(),
        {
            let executor = executor.clone();
            move || executor.clone().run()
        },
    ));
    let worker = cfg.webhooks.enabled.then(|| {
        let (engine, hooks, queued, stop, lease) = (
            engine.clone(),
            cfg.webhooks.clone(),
            p.queued.clone(),
            shutdown.clone(),
            lease.clone(),
        );
        tokio::spawn(supervise(
            p.worker_name,
            health.clone(),
            shutdown.clone(),
            move || {
                held_worker(
                    engine.clone(),
                    hooks.clone(),
                    queued.clone(),
                    stop.clone(),
                    lease.clone(),
                )
            },
        ))
    });

    let mut schedules = Vec::new();
    for kind in &kinds {
        schedules.push((*kind, Op::Sync { full: false }, cfg.sync_schedule(*kind)?));
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
    let sched = scheduler::start(schedules.clone(), runner.clone(), p.state.next_runs.clone())
        .await
        .context("starting the scheduler")?;
    for kind in &kinds {
        engine.refresh_gauges(*kind).await;
    }
    let catch_up = ha::CatchUp {
        instance: instance.clone(),
        runner: runner.clone(),
        syncs: schedules
            .iter()
            .filter(|s| matches!(s.1, Op::Sync { .. }))
            .map(|(kind, _, schedule)| (*kind, schedule.clone()))
            .collect(),
        on_start: cfg.sync.on_start,
    };
    match lease {
        // At start-up; with a lease, every time this process takes the instance.
        None => catch_up.run(db).await,
        Some(lease) => {
            tokio::spawn(ha::follow(db.clone(), client.clone(), lease, catch_up));
        }
    }
    Ok(Started {
        instance,
        runner,
        engine,
        client,
        sched,
        executor,
        worker,
        grace: Duration::from_secs(cfg.sync.shutdown_grace_secs),
    })
}

/// Checks the credentials in the background (`/status` reports the outcome).
pub(crate) fn check_jamf(client: Arc<crate::jamf::JamfClient>) {
    tokio::spawn(async move {
        if let Err(e) = client.server_version().await {
            tracing::error!(instance = %client.instance(), error = %e, "Jamf check failed; the next run retries");
        }
    });
}

/// The webhook worker, draining the queue only while this process holds the instance (when
/// the database is shared: `lease`), stopping at shutdown.
async fn held_worker(
    engine: Arc<Engine<Db>>,
    hooks: crate::config::WebhooksConfig,
    queued: Arc<tokio::sync::Notify>,
    shutdown: watch::Receiver<bool>,
    lease: Option<watch::Receiver<Option<i64>>>,
) {
    let Some(mut lease) = lease else {
        return webhooks::worker::run(engine, hooks, queued, shutdown).await;
    };
    loop {
        tokio::select! {
            _ = until_shutdown(shutdown.clone()) => return,
            r = lease.wait_for(|held| held.is_some()) => if r.is_err() { return },
        }
        let (stop, stopped) = watch::channel(false);
        let worker = webhooks::worker::run(engine.clone(), hooks.clone(), queued.clone(), stopped);
        tokio::pin!(worker);
        let shutting_down = tokio::select! {
            _ = &mut worker => return,
            s = ha::lost_or_shutdown(&mut lease, shutdown.clone()) => s,
        };
        let _ = stop.send(true);
        worker.await;
        if shutting_down {
            return;
        }
        tracing::info!(instance = %engine.client().instance(), "webhook worker paused: another process holds the instance");
    }
}

/// Sets the last-success and last-run gauges from the database, so an alert on a stale copy
/// can fire after a restart too (and on a process that does not hold the instance). A kind
/// that never succeeded counts from `never` when given: the alert fires once it has gone as
/// long without a success.
pub(crate) async fn last_runs_from_db(db: &Db, instance: &str, kinds: &[Kind], never: Option<f64>) {
    for kind in kinds {
        let run_kind = RunKind::Sync(*kind);
        let success = db.last_finished(instance, run_kind, true).await;
        let last = db.last_finished(instance, run_kind, false).await;
        let label = kind.as_str();
        match success {
            Ok(at) => {
                if let Some(t) = at.map(|t| t.timestamp() as f64).or(never) {
                    metrics::gauge!(metric::LAST_SUCCESS, "jamf_instance" => instance.to_string(), "kind" => label)
                        .set(t);
                }
            }
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
