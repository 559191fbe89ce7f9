//! The command line: `run`, `sync`, `reconcile`, `migrate`, `config check`, `status`,
//! `webhooks setup`, `simulate`, `demo`, `bench`, `healthcheck`.
//!
//! Each command loads the configuration, sets up telemetry and calls the library; results go
//! to stdout, logs to stderr. Exit status: 0 on success, 1 when a sync run failed or the
//! configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::config::{Config, Credentials, JamfSettings, Sources};
use crate::jamf::JamfClient;
use crate::simulator::{SimConfig, Simulator};
use crate::store::{Db, Kind, Store};
use crate::sync::reconcile::ReconcileOptions;
use crate::sync::{Engine, RunSummary, SyncOptions, Trigger};

#[derive(Debug, Parser)]
#[command(
    name = "jamf-sync",
    version,
    about = "Keeps a copy of a Jamf Pro fleet's inventory in PostgreSQL or SQLite"
)]
pub struct Cli {
    /// TOML configuration file (environment variables JAMF_SYNC__SECTION__KEY override it).
    #[arg(long, short = 'c', env = "JAMF_SYNC_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: scheduled syncs, HTTP endpoints (/metrics, /healthz, /readyz, /status,
    /// POST /sync), graceful shutdown on SIGTERM/SIGINT.
    Run,
    /// Run one sync now and exit (0 when it succeeded).
    Sync(SyncArgs),
    /// Find devices deleted in Jamf and mark (or delete) them; fetch devices deltas missed.
    Reconcile(ReconcileArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the last runs and cursors stored in the database.
    Status {
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        limit: i64,
    },
    /// Serve the built-in Jamf Pro simulator (for trying jamf-sync without a Jamf server).
    Simulate(SimulateArgs),
    /// Start the simulator in-process and sync it into the configured database (SQLite default).
    Demo(DemoArgs),
    /// Measure throughput, cost per record and memory against the simulator.
    Bench(BenchArgs),
    /// Webhook commands.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Exit 0 when the daemon at server.listen answers /healthz (for container HEALTHCHECKs).
    Healthcheck {
        /// Base URL of the daemon; default http://<server.listen>.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Ignore the cursor and read every device.
    #[arg(long)]
    pub full: bool,
    /// Sync only this kind.
    #[arg(long, value_enum)]
    pub only: Option<OnlyKind>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Compute and print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reconcile only this kind.
    #[arg(long, value_enum)]
    pub only: Option<OnlyKind>,
    /// Apply deletions even beyond reconcile.max_delete_fraction.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnlyKind {
    Computers,
    MobileDevices,
}

/// The kinds a `sync` runs: both by default (mobile devices unless disabled), or the one asked.
fn kinds_to_sync(cfg: &Config, only: Option<OnlyKind>) -> Vec<Kind> {
    match only {
        Some(OnlyKind::Computers) => vec![Kind::Computers],
        Some(OnlyKind::MobileDevices) => vec![Kind::MobileDevices],
        None if cfg.mobile_devices.enabled => vec![Kind::Computers, Kind::MobileDevices],
        None => vec![Kind::Computers],
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create or update, in Jamf, one webhook per inventory event jamf-sync acts on, posting to
    /// webhooks.public_url with webhooks.username/password (Basic).
    Setup,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets masked.
    Check,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 9090)]
    pub port: u16,
    /// Computers in the fleet.
    #[arg(long, default_value_t = 2000)]
    pub computers: usize,
    /// Mobile devices in the fleet.
    #[arg(long, default_value_t = 500)]
    pub mobile_devices: usize,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Jamf Pro version to report (below 11.30 there is no v4 inventory).
    #[arg(long)]
    pub version: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long)]
    pub token_ttl_secs: Option<u64>,
    /// POST Jamf-shaped webhook events here when devices change (e.g. after /_sim/touch).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Envelope format of those events: json or xml.
    #[arg(long, default_value = "json")]
    pub webhook_format: String,
    /// Basic credentials sent with each event, as user:password.
    #[arg(long)]
    pub webhook_basic: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run (latency, sequential, cpu, delta, memory); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Also run on PostgreSQL at this admin URL (a database is created per scenario).
    #[arg(long)]
    pub postgres: Option<String>,
    /// Include the 20,000-device latency runs and the 100,000-computer memory run.
    #[arg(long)]
    pub full: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Computers in the simulated fleet.
    #[arg(long, default_value_t = 3000)]
    pub computers: usize,
    /// Mobile devices in the simulated fleet.
    #[arg(long, default_value_t = 1000)]
    pub mobile_devices: usize,
    /// Simulated latency per request in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub latency_ms: u64,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        file: cli.config.clone(),
        env: None,
    };
    let cfg = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::telemetry::init_logging(&cfg.log);
    crate::telemetry::install_metrics();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&cfg),
        Command::Migrate => {
            let db = connect(&cfg).await?;
            println!("migrations applied ({})", db.backend());
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { limit } => status(&cfg, limit).await,
        Command::Sync(args) => {
            let Some(settings) = jamf_settings_or_report(&cfg) else {
                return Ok(ExitCode::FAILURE);
            };
            let kinds = kinds_to_sync(&cfg, args.only);
            let summaries = sync_once(&cfg, settings, &kinds, args.full, Trigger::Cli).await?;
            for summary in &summaries {
                println!("{summary}");
            }
            Ok(if summaries.iter().all(RunSummary::succeeded) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run => run_daemon(cfg).await,
        Command::Reconcile(args) => {
            let Some(settings) = jamf_settings_or_report(&cfg) else {
                return Ok(ExitCode::FAILURE);
            };
            let kinds = kinds_to_sync(&cfg, args.only);
            let session = Session::open(&cfg, settings).await?;
            let mut ok = true;
            for kind in kinds {
                let summary = session
                    .engine
                    .reconcile(
                        kind,
                        ReconcileOptions {
                            dry_run: args.dry_run,
                            force: args.force,
                            trigger: Trigger::Cli,
                        },
                    )
                    .await;
                match summary {
                    Ok(s) => {
                        println!("{s}");
                        ok &= s.succeeded();
                    }
                    Err(e) => {
                        session.close().await;
                        return Err(e.into());
                    }
                }
            }
            session.close().await;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Webhooks {
            command: WebhooksCommand::Setup,
        } => {
            let Some(settings) = jamf_settings_or_report(&cfg) else {
                return Ok(ExitCode::FAILURE);
            };
            let target = match crate::webhooks::setup::target(&cfg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let client = JamfClient::new(settings)?;
            let kinds = kinds_to_sync(&cfg, None);
            let result = crate::webhooks::setup::setup(&client, &target, &kinds).await;
            client.invalidate_token().await;
            for r in result? {
                println!(
                    "{} webhook {:?} (id {}) for {}",
                    if r.created { "created" } else { "updated" },
                    crate::webhooks::setup::webhook_name(r.event),
                    r.id,
                    r.event
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => simulate(args).await,
        Command::Demo(args) => demo(&cfg, args).await,
        Command::Healthcheck { url } => healthcheck(&cfg, url).await,
        Command::Bench(args) => {
            let rows = crate::bench::run(&crate::bench::BenchOptions {
                postgres: args.postgres,
                full: args.full,
                scenarios: args.scenarios,
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", crate::bench::table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Jamf settings, or `None` after printing the configuration error (naming its key).
fn jamf_settings_or_report(cfg: &Config) -> Option<JamfSettings> {
    cfg.jamf_settings()
        .map_err(|e| eprintln!("error: {e}"))
        .ok()
}

async fn run_daemon(cfg: Config) -> anyhow::Result<ExitCode> {
    if jamf_settings_or_report(&cfg).is_none() {
        return Ok(ExitCode::FAILURE);
    }
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

async fn healthcheck(cfg: &Config, url: Option<String>) -> anyhow::Result<ExitCode> {
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
    crate::jamf::install_crypto_provider();
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

async fn connect(cfg: &Config) -> anyhow::Result<Db> {
    let url = cfg.database_url()?;
    Db::connect(&url, cfg.database.max_connections)
        .await
        .with_context(|| format!("cannot open database {}", url.masked()))
}

/// The database, the Jamf client and the engine over them, for one or more runs.
struct Session {
    db: Arc<Db>,
    client: Arc<JamfClient>,
    engine: Engine<Db>,
}

impl Session {
    async fn open(cfg: &Config, settings: JamfSettings) -> anyhow::Result<Session> {
        let db = Arc::new(connect(cfg).await?);
        let stale = db.interrupt_stale_runs(&settings.instance).await?;
        if stale > 0 {
            tracing::warn!(
                stale,
                "marked runs left 'running' by an earlier process as interrupted"
            );
        }
        let client = Arc::new(JamfClient::new(settings)?);
        let engine = Engine::new(db.clone(), client.clone(), cfg.sync.clone())
            .with_mobile(cfg.mobile_devices.clone())
            .with_reconcile(cfg.reconcile.clone());
        Ok(Session { db, client, engine })
    }

    /// Runs each kind in turn; a failed run does not stop the next kind.
    async fn sync(
        &self,
        kinds: &[Kind],
        full: bool,
        trigger: Trigger,
    ) -> anyhow::Result<Vec<RunSummary>> {
        let mut summaries = Vec::with_capacity(kinds.len());
        for kind in kinds {
            summaries.push(
                self.engine
                    .sync(*kind, SyncOptions { full, trigger })
                    .await?,
            );
        }
        Ok(summaries)
    }

    /// Invalidates the Jamf token and closes the database.
    async fn close(self) {
        self.client.invalidate_token().await;
        self.db.close().await;
    }
}

/// One sync of each kind against the given server; invalidates the token afterwards.
pub async fn sync_once(
    cfg: &Config,
    settings: JamfSettings,
    kinds: &[Kind],
    full: bool,
    trigger: Trigger,
) -> anyhow::Result<Vec<RunSummary>> {
    let session = Session::open(cfg, settings).await?;
    let summaries = session.sync(kinds, full, trigger).await;
    session.close().await;
    summaries
}

fn config_check(cfg: &Config) -> anyhow::Result<ExitCode> {
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

async fn status(cfg: &Config, limit: i64) -> anyhow::Result<ExitCode> {
    let db = connect(cfg).await?;
    let instance = &cfg.jamf.instance;
    let cursors = db.cursors(instance).await?;
    let runs = db.recent_runs(instance, limit).await?;
    let stored = db.count_devices(instance, Kind::Computers).await?;
    let mobile = db.count_devices(instance, Kind::MobileDevices).await?;
    println!("instance {instance}: {stored} computers and {mobile} mobile devices stored");
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
        "{:>6}  {:<10} {:<6} {:<8} {:<11} {:<25} {:>8} {:>8} {:>8} {:>6}  error",
        "run",
        "kind",
        "mode",
        "trigger",
        "status",
        "started",
        "listed",
        "upserted",
        "unchanged",
        "failed"
    );
    for r in &runs {
        println!(
            "{:>6}  {:<10} {:<6} {:<8} {:<11} {:<25} {:>8} {:>8} {:>8} {:>6}  {}",
            r.id,
            r.kind,
            r.mode,
            r.trigger,
            r.status,
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            r.listed,
            r.upserted,
            r.unchanged,
            r.failed,
            r.error.as_deref().unwrap_or("")
        );
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut sim_cfg = SimConfig {
        computers: args.computers,
        mobile_devices: args.mobile_devices,
        latency_ms: args.latency_ms,
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

async fn demo(cfg: &Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
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
    let kinds = [Kind::Computers, Kind::MobileDevices];
    let session = Session::open(cfg, settings).await?;
    let first = session.sync(&kinds, false, Trigger::Demo).await?;
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
    let second = session.sync(&kinds, false, Trigger::Demo).await?;
    for s in &second {
        println!("{s}");
    }
    let computers = session
        .db
        .count_devices(&cfg.jamf.instance, Kind::Computers)
        .await?;
    let mobiles = session
        .db
        .count_devices(&cfg.jamf.instance, Kind::MobileDevices)
        .await?;
    session.close().await;
    let stats = sim.stats();
    println!(
        "demo: {computers} computers and {mobiles} mobile devices stored; the simulator served \
         {} requests, peak concurrent requests {}, peak open connections {}",
        stats.requests, stats.peak_in_flight, stats.peak_connections
    );
    println!(
        "demo: look inside with `jamf-sync status` or \
         `sqlite3 jamf-sync.db 'select name, serial_number, os_version from computers limit 5'`"
    );
    sim.stop().await;
    Ok(if first.iter().chain(&second).all(RunSummary::succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
