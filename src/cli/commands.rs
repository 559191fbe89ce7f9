//! The commands over the engine: `run`, `sync`, `reconcile`, `groups`, `status`, `config check`,
//! `healthcheck`.

use std::process::ExitCode;

use anyhow::Context;

use super::exit::EXIT_HELD;
use super::handover::{each_instance, locked, writer_lock};
use super::{kinds_to_sync, ReconcileArgs, SyncArgs};
use crate::app::App;
use crate::config::{Config, Credentials, JamfSettings};
use crate::daemon::runner::Op;
use crate::domain::{Kind, Trigger};
use crate::store::lease::{self};
use crate::store::lock::{self, Wait};
use crate::store::{Store, StoreError};
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

/// Runs the kinds at once, through the instance's one limiter: the five connections serve
/// whichever kind has work, and a kind between phases (an advanced search being evaluated)
/// does not hold the other. Summaries come back in `kinds`' order; a failed run does not stop
/// the other kind.
pub(super) async fn sync_kinds(
    app: &App,
    kinds: &[Kind],
    opts: SyncOptions,
) -> anyhow::Result<Vec<RunSummary>> {
    // Each kind finishes (and records) its own run even when the other's fails.
    let runs = kinds.iter().map(|kind| app.engine.sync(*kind, opts));
    let summaries = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    if summaries.iter().any(|s| !s.succeeded()) && !app.client.has_reached() {
        tracing::error!("Jamf was never reached (check jamf.url, DNS and firewalls)");
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

/// `3000 computers and 1000 mobile devices`: what is stored of every kind.
pub(super) async fn stored_counts(db: &crate::store::Db, instance: &str) -> anyhow::Result<String> {
    let mut parts = Vec::with_capacity(Kind::COUNT);
    for &kind in Kind::ALL {
        let n = db.count_devices(instance, kind).await?;
        parts.push(format!("{n} {}", kind.label()));
    }
    Ok(parts.join(" and "))
}

async fn print_status(db: &crate::store::Db, instance: &str, limit: i64) -> anyhow::Result<()> {
    let cursors = db.cursors(instance).await?;
    let runs = db.recent_runs(instance, limit).await?;
    println!(
        "instance {instance}: {} stored",
        stored_counts(db, instance).await?
    );
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
