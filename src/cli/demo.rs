//! The simulator-backed commands: `simulate` serves the built-in Jamf Pro simulator, `demo`
//! syncs it into the configured database.

use std::process::ExitCode;

use anyhow::Context;
use secrecy::SecretString;

use super::commands::sync_kinds;
use super::exit::exit_code;
use super::{DemoArgs, SimulateArgs};
use crate::app::App;
use crate::config::{Config, Credentials};
use crate::domain::{Kind, Trigger};
use crate::simulator::{SimConfig, Simulator};
use crate::store::lock::Wait;
use crate::sync::{RunSummary, SyncOptions};

pub(super) async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut sim_cfg = SimConfig {
        computers: args.computers,
        mobile_devices: args.mobile_devices,
        latency_ms: args.latency_ms,
        per_record_section_us: args.per_record_section_us,
        ..SimConfig::default()
    };
    if let Some(v) = args.version {
        sim_cfg.version = v;
    }
    if let Some(t) = args.token_ttl_secs {
        sim_cfg.token_ttl_secs = t;
    }
    sim_cfg.webhook_format = match args.webhook_format.as_str() {
        "json" => crate::simulator::webhooks::WebhookFormat::Json,
        "xml" => crate::simulator::webhooks::WebhookFormat::Xml,
        other => anyhow::bail!("--webhook-format {other:?}: use json or xml"),
    };
    if let Some(basic) = &args.webhook_basic {
        let (u, p) = basic
            .split_once(':')
            .context("--webhook-basic takes user:password")?;
        sim_cfg.webhook_username = Some(u.to_string());
        sim_cfg.webhook_password = Some(p.to_string());
    }
    sim_cfg.webhook_url = args.webhook_url.clone();
    let (id, secret) = (sim_cfg.client_id.clone(), sim_cfg.client_secret.clone());
    let sim = Simulator::start(sim_cfg, args.port)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    // The simulator's credentials are fixed, public test values, not secrets.
    println!(
        "Jamf Pro simulator on {} ({} computers)",
        sim.url(),
        args.computers
    );
    println!("  JAMF_SYNC__JAMF__URL={}", sim.url());
    println!("  JAMF_SYNC__JAMF__CLIENT_ID={id}");
    println!("  JAMF_SYNC__JAMF__CLIENT_SECRET={secret}");
    println!(
        "  stats: GET {}/_sim/stats, churn: POST {}/_sim/touch?count=N",
        sim.url(),
        sim.url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    sim.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Computer sections the query guide's questions read (docs/queries.md), besides the default
/// ones: the demo stores them unless `sync.sections` was configured.
const GUIDE_SECTIONS: &[&str] = &[
    "APPLICATIONS",
    "GROUP_MEMBERSHIPS",
    "CONFIGURATION_PROFILES",
    "LOCAL_USER_ACCOUNTS",
    "CERTIFICATES",
];

pub(super) async fn demo(cfg: &Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = cfg.clone();
    if cfg.sync.sections == crate::config::SyncConfig::default().sections {
        cfg.sync
            .sections
            .extend(GUIDE_SECTIONS.iter().map(|s| s.to_string()));
    }
    let cfg = &cfg;
    let sim_cfg = SimConfig {
        computers: args.computers,
        mobile_devices: args.mobile_devices,
        latency_ms: args.latency_ms,
        ..SimConfig::default()
    };
    let sim = Simulator::start(sim_cfg.clone(), 0).await?;
    let settings = cfg.jamf.settings_for(
        url::Url::parse(&sim.url())?,
        Credentials::ApiClient {
            client_id: sim_cfg.client_id.clone(),
            client_secret: SecretString::from(sim_cfg.client_secret.clone()),
        },
    );
    let db_url = cfg.database_url()?;
    println!(
        "demo: simulated Jamf Pro with {} computers at {}, database {}",
        args.computers,
        sim.url(),
        db_url.masked()
    );
    let kinds = Kind::ALL;
    let _lock = super::handover::writer_lock(cfg, Wait::Block, super::exit::EXIT_HELD).await?;
    let app = App::open(cfg, settings).await?;
    let opts = SyncOptions::new(false, Trigger::Demo);
    let first = sync_kinds(&app, kinds, opts).await?;
    for s in &first {
        println!("{s}");
    }
    let changed = (args.computers / 20).max(1);
    let changed_mobile = (args.mobile_devices / 20).max(1);
    sim.touch_random(changed);
    sim.touch_random_mobiles(changed_mobile);
    println!(
        "demo: {changed} computers and {changed_mobile} mobile devices submitted inventory; \
         running a delta sync"
    );
    let second = sync_kinds(&app, kinds, opts).await?;
    for s in &second {
        println!("{s}");
    }
    let mut groups_ok = true;
    if cfg.groups.enabled {
        for &kind in kinds {
            let g = app.engine.refresh_groups(kind, Trigger::Demo).await?;
            println!("{g}");
            groups_ok &= g.status == crate::domain::RunStatus::Succeeded;
        }
    }
    let stored = super::commands::stored_counts(&app.db, &cfg.jamf.instance).await?;
    app.close().await;
    let stats = sim.stats();
    println!(
        "demo: {stored} stored; the simulator served {} requests, peak concurrent requests {}, \
         peak open connections {}",
        stats.requests, stats.peak_in_flight, stats.peak_connections
    );
    println!(
        "demo: look inside with `jamf-sync status` or \
         `sqlite3 jamf-sync.db 'select name, serial_number, os_version from computers limit 5'`"
    );
    sim.stop().await;
    Ok(exit_code(
        groups_ok && first.iter().chain(&second).all(RunSummary::succeeded),
    ))
}
