//! The commands over the engine: `run`, `sync`, `reconcile`, `groups`, `status`, `config check`,
//! `healthcheck`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{kinds_to_sync, ReconcileArgs, SyncArgs};
use crate::app::App;
use crate::config::{Config, Credentials, JamfSettings};
use crate::daemon::runner::Op;
use crate::domain::{Kind, RunStatus, Trigger};
use crate::store::lease::{self, Coordinator, Role};
use crate::store::lock::{self, LockError, Wait, WriterLock};
use crate::store::{Db, Store, StoreError};
use crate::sync::reconcile::ReconcileOptions;
use crate::sync::{RunSummary, SyncOptions};

/// `jamf-sync sync`: one run of each kind asked for; exit 0 only when every run succeeded.
pub(super) async fn sync(
    cfg: &Config,
    targets: Vec<(Config, JamfSettings)>,
    args: SyncArgs,
) -> anyhow::Result<ExitCode> {
    let opts = SyncOptions {
        full: args.full,
        trigger: Trigger::Cli,
        overwrite: args.overwrite,
    };
    let only = args.only;
    // `--overwrite` has no equivalent in a daemon's run: that waits for the lease instead.
    let handover = (!args.overwrite).then_some((Op::Sync { full: args.full }, only));
    each_instance(
        cfg,
        targets,
        args.no_wait,
        handover,
        move |icfg, app| async move {
            let summaries = sync_kinds(&app, &kinds_to_sync(&icfg, only), opts).await?;
            Ok((
                summaries.iter().map(ToString::to_string).collect(),
                summaries.iter().all(RunSummary::succeeded),
            ))
        },
    )
    .await
}

/// Exit code of a one-shot command that did not wait for the database's writer
/// (`EX_TEMPFAIL`: try again later).
pub(super) const EXIT_HELD: u8 = 75;

/// A command that stopped early with this exit status, after saying why on stderr (another
/// process holds the database or an instance); [`super::run`] turns it into the status.
#[derive(Debug, thiserror::Error)]
#[error("stopped with exit status {0}")]
pub(super) struct Stopped(pub u8);

/// Takes the SQLite writer lock (see [`crate::store::lock`]) for a one-shot command;
/// [`Stopped`] with `held_exit` after saying who holds it, when it may not wait.
pub(super) async fn writer_lock(
    cfg: &Config,
    wait: Wait,
    held_exit: u8,
) -> anyhow::Result<Option<WriterLock>> {
    locked(cfg, wait, held_exit, "cli").await
}

async fn locked(
    cfg: &Config,
    wait: Wait,
    held_exit: u8,
    role: &str,
) -> anyhow::Result<Option<WriterLock>> {
    match lock::acquire(&cfg.database_url()?, wait, role).await {
        Ok(lock) => Ok(lock),
        Err(e @ LockError::Held { .. }) => {
            eprintln!("error: {e}");
            Err(Stopped(held_exit).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The leases a one-shot command holds on a shared PostgreSQL database, renewed in the
/// background until [`HeldLeases::release`].
pub(super) struct HeldLeases {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Each instance's epoch while held (`None` once lost).
    watches: Vec<(String, tokio::sync::watch::Receiver<Option<i64>>)>,
}

impl HeldLeases {
    /// Resolves once this command no longer holds `instance` (another process took it over,
    /// or the lease could not be renewed in time); never for an instance it does not hold.
    fn lost(&self, instance: &str) -> impl std::future::Future<Output = ()> + 'static {
        let watch = self
            .watches
            .iter()
            .find(|(i, _)| i == instance)
            .map(|(_, w)| w.clone());
        async move {
            match watch {
                Some(mut w) => {
                    let _ = w.wait_for(Option::is_none).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    pub(super) async fn release(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// On PostgreSQL, takes the lease of every instance in `names` ([`crate::store::lease`]):
/// waits while another process (a daemon) holds one, or with `no_wait` returns [`Stopped`]
/// after naming the holder. `None` on SQLite (its file lock is the guard).
pub(super) async fn hold_instances(
    cfg: &Config,
    db: &Db,
    names: &[String],
    no_wait: bool,
) -> anyhow::Result<Option<HeldLeases>> {
    let started = Coordinator::start(
        db,
        cfg.database_url()?.expose(),
        cfg.ha.failover(),
        cfg.takeover_quiet(),
        Role::Command,
        names,
    )?;
    let (Some(mut coordinator), Some((pool, fence))) = (started, db.shared()) else {
        return Ok(None);
    };
    let mut said = Vec::new();
    loop {
        coordinator
            .beat()
            .await
            .context("cannot take the instance's lease")?;
        let missing: Vec<&String> = names.iter().filter(|n| fence.epoch(n).is_none()).collect();
        if missing.is_empty() {
            break;
        }
        let leases = lease::leases(pool).await?;
        for name in missing {
            let holder = leases
                .iter()
                .find(|l| l.instance == *name)
                .map_or_else(|| "another process".into(), |l| l.holder.clone());
            if no_wait {
                eprintln!(
                    "error: instance {name} is held by {holder} (a jamf-sync process writing \
                     for it); try again later, or without --no-wait to wait for it"
                );
                coordinator.release_all().await;
                return Err(Stopped(EXIT_HELD).into());
            }
            if !said.contains(name) {
                eprintln!(
                    "waiting for instance {name}: held by {holder} (a running daemon syncs on \
                     request: POST /sync on any replica)"
                );
                said.push(name.clone());
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let watches = names
        .iter()
        .filter_map(|n| coordinator.watch(n).map(|w| (n.clone(), w)))
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(coordinator.run(stopped));
    Ok(Some(HeldLeases {
        stop,
        task,
        watches,
    }))
}

/// What a command hands to the daemon holding an instance instead of waiting for its lease
/// (PostgreSQL): the operation, run for each kind `only` selects. `None` where the daemon's
/// run would not be the same (flags it has no equivalent for).
pub(super) type Handover = Option<(Op, Option<Kind>)>;

/// Runs `work` for every instance at once over one database connection pool; prints each
/// instance's lines (prefixed `[name]` when there are several); exit 0 only when every
/// instance succeeded, and the failed ones are named. An instance a daemon runs (PostgreSQL:
/// it holds the instance's lease; SQLite: it holds the file) gets its runs from that daemon
/// ([`handed_over`]) when `handover` says how.
pub(super) async fn each_instance<F, Fut>(
    cfg: &Config,
    targets: Vec<(Config, JamfSettings)>,
    no_wait: bool,
    handover: Handover,
    work: F,
) -> anyhow::Result<ExitCode>
where
    F: Fn(Arc<Config>, Arc<App>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<String>, bool)>>,
{
    let wait = match (no_wait, handover) {
        (true, _) => Wait::NoWait,
        (false, Some(_)) => Wait::BlockUnlessDaemon,
        (false, None) => Wait::Block,
    };
    // On SQLite, a daemon holding the file runs every instance's runs for us.
    let (_lock, file_daemon) = match writer_lock(cfg, wait, EXIT_HELD).await {
        Ok(lock) => (lock, None),
        Err(e) => match e.downcast_ref::<LockError>() {
            Some(LockError::Daemon { pid }) => (None, Some(*pid)),
            _ => return Err(e),
        },
    };
    let db = Arc::new(crate::app::connect(cfg).await?);
    let holders = match (file_daemon, db.postgres()) {
        (Some(_), _) => Holders::File(cfg.database_url()?),
        (None, Some(pool)) if handover.is_some() && !no_wait => Holders::Leases(pool.clone()),
        _ => Holders::None,
    };
    // Instances a daemon runs (with its name) and those this command runs itself.
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for (icfg, settings) in targets {
        match holders.daemon(&icfg.jamf.instance).await {
            Ok(Some(holder)) => remote.push((icfg, holder)),
            Ok(None) => local.push((icfg, settings)),
            Err(e) => {
                db.close().await;
                return Err(e);
            }
        }
    }
    let names: Vec<String> = local.iter().map(|(_, s)| s.instance.clone()).collect();
    let leases = if names.is_empty() {
        None
    } else {
        match hold_instances(cfg, &db, &names, no_wait).await {
            Ok(leases) => leases,
            Err(e) => {
                db.close().await;
                return Err(e);
            }
        }
    };
    let several = local.len() + remote.len() > 1;
    let mut apps = Vec::with_capacity(local.len());
    for (icfg, settings) in local {
        let app = match App::start(&icfg, settings, db.clone()).await {
            Ok(app) => app,
            Err(e) => {
                if let Some(leases) = leases {
                    leases.release().await;
                }
                db.close().await;
                return Err(e);
            }
        };
        apps.push((Arc::new(icfg), Arc::new(app)));
    }
    let mut runs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>> = Vec::new();
    for (icfg, app) in &apps {
        let name = app.client.instance().to_string();
        let fut = work(icfg.clone(), app.clone());
        // A run stops the moment its lease is lost: another process may be running the
        // instance by then, and Jamf must not see both.
        let lost = match &leases {
            Some(l) => futures_util::future::Either::Left(l.lost(&name)),
            None => futures_util::future::Either::Right(std::future::pending()),
        };
        runs.push(Box::pin(async move {
            let result = tokio::select! {
                r = fut => r,
                () = lost => Err(anyhow::anyhow!(
                    "lost the lease of instance {name} (another process took it over, or it \
                     could not be renewed within ha.failover_secs): stopped; the run is \
                     redone by the next holder"
                )),
            };
            (name, result)
        }));
    }
    if let Some((op, only)) = handover {
        for (icfg, holder) in &remote {
            let name = icfg.jamf.instance.clone();
            let kinds = kinds_to_sync(icfg, only);
            let failover = cfg.ha.failover();
            let (db, holders) = (&db, &holders);
            runs.push(Box::pin(async move {
                let result = handed_over(db, holders, &name, holder, op, &kinds, failover).await;
                (name, result)
            }));
        }
    }
    let results = futures_util::future::join_all(runs).await;
    let mut failed = Vec::new();
    let mut error = None;
    let total = results.len();
    for (name, result) in results {
        match result {
            Ok((lines, ok)) => {
                for line in lines {
                    if several {
                        println!("[{name}] {line}");
                    } else {
                        println!("{line}");
                    }
                }
                if !ok {
                    failed.push(name);
                }
            }
            Err(e) if several && e.downcast_ref::<Stopped>().is_none() => {
                eprintln!("error: instance {name}: {e:#}");
                failed.push(name);
            }
            Err(e) => error = Some(e),
        }
    }
    for (_, app) in &apps {
        app.client.invalidate_token().await;
    }
    if let Some(leases) = leases {
        leases.release().await;
    }
    db.close().await;
    if let Some(e) = error {
        return Err(e);
    }
    if several && !failed.is_empty() {
        eprintln!(
            "error: {} of {} instances failed: {}",
            failed.len(),
            total,
            failed.join(", ")
        );
    }
    Ok(exit_code(failed.is_empty()))
}

/// Hands `op` for each of `kinds` to the daemon running `instance` (through `run_requests`; it
/// takes them within a second) and waits for the runs that answer them: their lines, and
/// whether all succeeded. When no daemon runs the instance for twice `failover` (it stopped,
/// and no other took over), waiting requests are taken back and the command stops with
/// [`EXIT_HELD`]: run it again.
async fn handed_over(
    db: &Db,
    holders: &Holders,
    instance: &str,
    holder: &str,
    op: Op,
    kinds: &[Kind],
    failover: std::time::Duration,
) -> anyhow::Result<(Vec<String>, bool)> {
    let by = lease::holder_name("cli");
    let mut ids = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let (id, _) = db
            .request_run(
                instance,
                kind.as_str(),
                op.request_name(),
                Trigger::Cli.as_str(),
                &by,
            )
            .await?;
        ids.push(id);
    }
    let what: Vec<String> = kinds
        .iter()
        .map(|k| match op {
            Op::Sync { full: true } => format!("full {} sync", k.as_str()),
            Op::Sync { full: false } => format!("{} sync", k.as_str()),
            Op::Reconcile => format!("{} reconcile", k.as_str()),
            Op::Groups => format!("{} group refresh", k.as_str()),
        })
        .collect();
    eprintln!(
        "instance {instance} is held by the daemon {holder}: handing it the {}; waiting for the result",
        what.join(" and ")
    );
    let poll = std::time::Duration::from_millis(500);
    let mut unheld_since: Option<std::time::Instant> = None;
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let (waiting, answers) = db.handed_over(instance, &ids).await?;
        let finished = |id: i64| {
            answers
                .iter()
                .any(|r| r.request_id == Some(id) && r.status != RunStatus::Running.as_str())
        };
        if ids.iter().all(|id| finished(*id)) {
            let ok = answers
                .iter()
                .all(|r| r.status == RunStatus::Succeeded.as_str());
            return Ok((answers.iter().map(handed_line).collect(), ok));
        }
        // Nobody holds the instance: the daemon stopped (or died mid-run) and no other daemon
        // took it over (a takeover would have ended its run as interrupted).
        if holders.daemon(instance).await?.is_none() {
            if unheld_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > failover * 2
            {
                db.withdraw_requests(&waiting).await?;
                eprintln!(
                    "error: no daemon holds instance {instance} any more to run it; run the \
                     command again"
                );
                return Err(Stopped(EXIT_HELD).into());
            }
        } else {
            unheld_since = None;
        }
        // Taken, yet no run answers it: the daemon dropped it (an instance or kind it does not
        // run) or died between taking and starting it.
        let lost = ids
            .iter()
            .any(|id| !waiting.contains(id) && !answers.iter().any(|r| r.request_id == Some(*id)));
        if lost {
            if lost_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > failover
            {
                anyhow::bail!(
                    "the daemon took the request for instance {instance} away without running \
                     it (does its configuration have this instance? see its log)"
                );
            }
        } else {
            lost_since = None;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Who runs an instance for a one-shot command that hands its runs over.
enum Holders {
    /// Nothing is handed over.
    None,
    /// PostgreSQL: the live daemon holding the instance's lease.
    Leases(sqlx::PgPool),
    /// SQLite: the daemon holding the database file's writer lock, for every instance.
    File(crate::config::DatabaseUrl),
}

impl Holders {
    /// The daemon running `instance` now, by name.
    async fn daemon(&self, instance: &str) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Holders::None => None,
            Holders::Leases(pool) => lease::daemon_holder(pool, instance).await?,
            Holders::File(url) => lock::file_daemon(url)
                .map(|pid| pid.map_or_else(|| "pid unknown".into(), |p| format!("pid {p}"))),
        })
    }
}

/// A run's line as the daemon that ran it recorded it.
fn handed_line(r: &crate::store::RunRow) -> String {
    let c = &r.counts;
    let mut line = format!(
        "{} {} {} (run {}, by the daemon): listed {}, fetched {}, upserted {}, unchanged {}, \
         failed {}, missing {}",
        r.kind,
        r.mode,
        r.status,
        r.id,
        c.listed,
        c.fetched,
        c.upserted,
        c.unchanged,
        c.failed,
        c.missing
    );
    if let Some(end) = r.finished_at {
        let secs = (end - r.started_at).num_milliseconds() as f64 / 1000.0;
        line.push_str(&format!(" in {secs:.1}s"));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!("; error: {e}"));
    }
    line
}

/// Runs each kind in turn; a failed run does not stop the next kind, unless the server was
/// never reached (the next kind would only wait for the same unreachable server).
pub(super) async fn sync_kinds(
    app: &App,
    kinds: &[Kind],
    opts: SyncOptions,
) -> anyhow::Result<Vec<RunSummary>> {
    let mut summaries = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let summary = app.engine.sync(*kind, opts).await?;
        let unreachable = !summary.succeeded() && !app.client.has_reached();
        summaries.push(summary);
        if unreachable {
            tracing::error!(
                "Jamf was never reached; not trying the other kinds (check jamf.url, DNS and firewalls)"
            );
            break;
        }
    }
    Ok(summaries)
}

/// `jamf-sync reconcile`.
pub(super) async fn reconcile(
    cfg: &Config,
    targets: Vec<(Config, JamfSettings)>,
    args: ReconcileArgs,
) -> anyhow::Result<ExitCode> {
    let opts = ReconcileOptions {
        dry_run: args.dry_run,
        force: args.force,
        trigger: Trigger::Cli,
    };
    let only = args.only;
    let handover = (!args.dry_run && !args.force).then_some((Op::Reconcile, only));
    each_instance(
        cfg,
        targets,
        args.no_wait,
        handover,
        move |icfg, app| async move {
            let engine = &app.engine;
            per_kind(
                kinds_to_sync(&icfg, only),
                |kind| engine.reconcile(kind, opts),
                |s| s.succeeded(),
            )
            .await
        },
    )
    .await
}

/// `jamf-sync groups`.
pub(super) async fn groups(
    cfg: &Config,
    targets: Vec<(Config, JamfSettings)>,
    only: Option<Kind>,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    each_instance(
        cfg,
        targets,
        no_wait,
        Some((Op::Groups, only)),
        move |icfg, app| async move {
            let engine = &app.engine;
            per_kind(
                kinds_to_sync(&icfg, only),
                |kind| engine.refresh_groups(kind, Trigger::Cli),
                |s| s.succeeded(),
            )
            .await
        },
    )
    .await
}

/// Runs `op` for each kind in turn: each summary's line, and whether every kind succeeded.
/// Stops at the first database error.
async fn per_kind<T: std::fmt::Display, F: std::future::Future<Output = Result<T, StoreError>>>(
    kinds: Vec<Kind>,
    op: impl Fn(Kind) -> F,
    succeeded: impl Fn(&T) -> bool,
) -> anyhow::Result<(Vec<String>, bool)> {
    let mut ok = true;
    let mut lines = Vec::new();
    for kind in kinds {
        let summary = op(kind).await?;
        lines.push(summary.to_string());
        ok &= succeeded(&summary);
    }
    Ok((lines, ok))
}

pub(super) fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(super) async fn run_daemon(cfg: Config) -> anyhow::Result<ExitCode> {
    if super::jamf_settings_or_report(&cfg, None).is_none() {
        return Ok(ExitCode::FAILURE);
    }
    // Held until the daemon has shut down: a second daemon on this SQLite file refuses.
    let _lock = locked(&cfg, Wait::NoWait, 1, lock::DAEMON_ROLE).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down (a second signal exits at once)");
        let _ = tx.send(true);
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    crate::daemon::run(cfg, listener, rx).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(super) async fn healthcheck(cfg: &Config, url: Option<String>) -> anyhow::Result<ExitCode> {
    // A daemon listening on all interfaces is reached on loopback.
    let base = url.unwrap_or_else(|| {
        format!(
            "http://{}",
            cfg.server
                .listen
                .replace("0.0.0.0", "127.0.0.1")
                .replace("[::]", "[::1]")
        )
    });
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?;
    match client
        .get(format!("{}/healthz", base.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            println!("healthy");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            println!("unhealthy: {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("unhealthy: {}", crate::jamf::error_chain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn config_check(cfg: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", cfg.masked_summary());
    if cfg.jamf.url.is_none() {
        println!("\n# jamf.url is unset: `sync` needs it; `demo` and `simulate` do not.");
        return Ok(ExitCode::SUCCESS);
    }
    match cfg.jamf_settings() {
        Ok(s) => {
            let kind = match s.credentials {
                Credentials::ApiClient { .. } => "API client",
                Credentials::User { .. } => "user account",
            };
            println!("\n# configuration is valid ({kind} credentials)");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `jamf-sync purge --instance NAME [--yes]`: everything stored for an instance that is no
/// longer configured; a dry run without `--yes`.
pub(super) async fn purge(cfg: &Config, instance: &str, yes: bool) -> anyhow::Result<ExitCode> {
    if cfg.instances().iter().any(|i| i.name == instance) {
        eprintln!(
            "error: --instance: {instance:?} is still configured (the next run would fill it \
             again); remove it from the configuration first"
        );
        return Ok(ExitCode::FAILURE);
    }
    let _lock = writer_lock(cfg, Wait::Block, EXIT_HELD).await?;
    let db = crate::app::connect(cfg).await?;
    let removed = db.purge_instance(instance, yes).await;
    db.close().await;
    let removed = removed?;
    let total: u64 = removed.iter().map(|(_, n)| n).sum();
    let detail: Vec<String> = removed
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(table, n)| format!("{table} {n}"))
        .collect();
    let verb = if yes { "removed" } else { "would remove" };
    println!(
        "instance {instance}: {verb} {total} rows{}{}",
        if detail.is_empty() { "" } else { ": " },
        detail.join(", ")
    );
    if !yes && total > 0 {
        println!("nothing removed yet: run again with --yes");
    }
    Ok(ExitCode::SUCCESS)
}

/// `jamf-sync views`: recreates both kinds' typed extension attribute views of every instance.
pub(super) async fn views(cfg: &Config) -> anyhow::Result<ExitCode> {
    let _lock = writer_lock(cfg, Wait::Block, EXIT_HELD).await?;
    let db = crate::app::connect(cfg).await?;
    let pairs = cfg
        .instances()
        .into_iter()
        .flat_map(|i| Kind::ALL.iter().map(move |&kind| (i.name.clone(), kind)));
    for (instance, kind) in pairs {
        if let Some((view, columns)) = db.refresh_ea_view(&instance, kind, true).await? {
            let list: Vec<String> = columns
                .iter()
                .map(|c| {
                    format!(
                        "{} ({})",
                        c.name,
                        c.data_type.as_deref().unwrap_or("STRING")
                    )
                })
                .collect();
            println!(
                "{view}: {}",
                if list.is_empty() {
                    "no attributes yet".into()
                } else {
                    list.join(", ")
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jamf-sync history DEVICE`: the device's changes, oldest first, in each chosen instance;
/// exit 1 when none is found.
pub(super) async fn history(
    targets: &[Config],
    device: &str,
    kind: Option<Kind>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(first) = targets.first() else {
        return Ok(ExitCode::FAILURE);
    };
    let db = crate::app::connect(first).await?;
    let mut found = false;
    for icfg in targets {
        let rows = db.device_history(&icfg.jamf.instance, device, kind).await?;
        found |= !rows.is_empty();
        for r in &rows {
            if json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!(
                    "{:<20} {:<13} {:>7}  {:<24} {} → {}  (recorded {}{}{})",
                    r.changed_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.device_type,
                    r.jamf_id,
                    r.field,
                    r.old_value.as_deref().unwrap_or("∅"),
                    r.new_value.as_deref().unwrap_or("∅"),
                    r.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    r.run_id.map(|id| format!(", run {id}")).unwrap_or_default(),
                    if targets.len() > 1 {
                        format!(", instance {}", r.instance)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    db.close().await;
    if !found {
        let names: Vec<&str> = targets.iter().map(|c| c.jamf.instance.as_str()).collect();
        eprintln!(
            "no recorded changes for {device:?} in instance {} (a device's first sync records none)",
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn status(
    cfg: &Config,
    targets: &[Config],
    limit: i64,
) -> anyhow::Result<ExitCode> {
    let db = crate::app::connect(cfg).await?;
    for (i, icfg) in targets.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_status(&db, &icfg.jamf.instance, limit).await?;
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn print_status(db: &crate::store::Db, instance: &str, limit: i64) -> anyhow::Result<()> {
    let cursors = db.cursors(instance).await?;
    let runs = db.recent_runs(instance, limit).await?;
    let stored = db.count_devices(instance, Kind::Computers).await?;
    let mobile = db.count_devices(instance, Kind::MobileDevices).await?;
    println!("instance {instance}: {stored} computers and {mobile} mobile devices stored");
    if let Some(pool) = db.postgres() {
        // Several processes may share the database: who writes for this instance.
        let lease = lease::leases(pool)
            .await?
            .into_iter()
            .find(|l| l.instance == instance);
        match lease {
            Some(l) if l.live => println!(
                "held by {} (epoch {}, lease until {})",
                l.holder,
                l.epoch,
                l.expires_at.to_rfc3339()
            ),
            Some(l) => println!(
                "held by no process (last holder {}, epoch {}, lease ended {})",
                l.holder,
                l.epoch,
                l.expires_at.to_rfc3339()
            ),
            None => println!("held by no process yet"),
        }
    }
    if cursors.is_empty() {
        println!("cursors: none yet (the next run is a full sync)");
    }
    for c in &cursors {
        println!(
            "cursor {}: {} (run {})",
            c.kind,
            c.cursor.to_rfc3339(),
            c.run_id
        );
    }
    println!(
        "{:>6}  {:<10} {:<6} {:<8} {:<11} {:<25} {:>8} {:>8} {:>8} {:>6} {:>6}  error",
        "run",
        "kind",
        "mode",
        "trigger",
        "status",
        "started",
        "listed",
        "upserted",
        "unchanged",
        "stale",
        "failed"
    );
    for r in &runs {
        println!(
            "{:>6}  {:<10} {:<6} {:<8} {:<11} {:<25} {:>8} {:>8} {:>8} {:>6} {:>6}  {}",
            r.id,
            r.kind,
            r.mode,
            r.trigger,
            r.status,
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            r.counts.listed,
            r.counts.upserted,
            r.counts.unchanged,
            r.counts.stale,
            r.counts.failed,
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
