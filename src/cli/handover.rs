//! Who runs a one-shot command's work: this process, holding the SQLite writer lock or the
//! instances' leases (PostgreSQL), or the daemon that holds them, to which the runs are handed
//! over (`run_requests`) and whose answers are waited for. A command never writes beside a
//! holder: it waits, hands over, or exits 75 (`--no-wait`).

use super::exit::{exit_code, Stopped, EXIT_HELD};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::kinds_to_sync;
use crate::app::App;
use crate::config::{Config, JamfSettings};
use crate::daemon::runner::Op;
use crate::domain::{Kind, RunStatus, Trigger};
use crate::store::lease::{self, Coordinator, Role};
use crate::store::lock::{self, LockError, Wait, WriterLock};
use crate::store::{Db, Store, StoreError};

/// Takes the SQLite writer lock (see [`crate::store::lock`]) for a one-shot command;
/// [`Stopped`] with `held_exit` after saying who holds it, when it may not wait.
pub(super) async fn writer_lock(
    cfg: &Config,
    wait: Wait,
    held_exit: u8,
) -> anyhow::Result<Option<WriterLock>> {
    locked(cfg, wait, held_exit, "cli").await
}

pub(super) async fn locked(
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
            let lost_lease = || {
                anyhow::anyhow!(
                    "lost the lease of instance {name} (another process took it over, or it \
                     could not be renewed within ha.failover_secs): stopped; the run is \
                     redone by the next holder"
                )
            };
            let result = tokio::select! {
                // A fenced write can learn of the loss before the heartbeat does (the kinds
                // write at once): the same loss, said the same way.
                r = fut => r.map_err(|e| {
                    let fenced = e.chain().any(|c| {
                        matches!(c.downcast_ref(), Some(StoreError::NotHolder { .. }))
                    });
                    if fenced { lost_lease() } else { e }
                }),
                () = lost => Err(lost_lease()),
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
