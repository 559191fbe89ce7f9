//! The command line: `run`, `sync`, `reconcile`, `migrate`, `config check`, `status`,
//! `webhooks setup`, `simulate`, `demo`, `bench`, `healthcheck`.
//!
//! This file holds the clap types and the dispatch; [`commands`] the commands over the
//! engine, [`demo`] the simulator-backed ones. Each command loads the configuration, sets up
//! telemetry and calls the library; results go to stdout, logs to stderr. Exit status: 0 on
//! success, 1 when a run failed or the configuration is invalid.

mod commands;
mod demo;
mod exit;
mod handover;
pub mod webhooks_setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, JamfSettings, Sources};
use crate::domain::Kind;
use crate::store::lock::Wait;

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
    /// Refresh group memberships now from the groups' member lists (smart groups recalculate
    /// and static groups change without new inventory); exit 0 when every kind succeeded.
    Groups {
        /// Only this kind.
        #[arg(long, value_enum)]
        only: Option<Kind>,
        /// Only this Jamf instance (default: every instance, in parallel).
        #[arg(long)]
        instance: Option<String>,
        /// Exit 75 at once when another process is writing to the SQLite database.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove everything stored for an instance that is no longer configured (devices, child
    /// rows, history, runs, cursors, queued webhooks, its views). Without --yes it only counts.
    Purge {
        /// The instance to remove.
        #[arg(long)]
        instance: String,
        /// Really remove (otherwise a dry run that prints what would go).
        #[arg(long)]
        yes: bool,
    },
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
        /// Only this Jamf instance (default: every instance).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Print a device's change history (inventory_changes), oldest first.
    History {
        /// The device: serial number, UDID or Jamf id.
        device: String,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this Jamf instance (default: every instance).
        #[arg(long)]
        instance: Option<String>,
    },
    /// (Re)create the typed extension attribute views (computer_ea_<instance>,
    /// mobile_device_ea_<instance>): one column per attribute, typed by its data type.
    Views,
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
    /// With --full: write what Jamf says even where the stored copy is newer (after Jamf was
    /// restored from a backup).
    #[arg(long, requires = "full")]
    pub overwrite: bool,
    /// Sync only this kind.
    #[arg(long, value_enum)]
    pub only: Option<Kind>,
    /// Only this Jamf instance (default: every instance, in parallel).
    #[arg(long)]
    pub instance: Option<String>,
    /// Exit 75 at once when another process is writing to the SQLite database, instead of
    /// waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Compute and print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reconcile only this kind.
    #[arg(long, value_enum)]
    pub only: Option<Kind>,
    /// Apply deletions even beyond reconcile.max_delete_fraction.
    #[arg(long)]
    pub force: bool,
    /// Only this Jamf instance (default: every instance, in parallel).
    #[arg(long)]
    pub instance: Option<String>,
    /// Exit 75 at once when another process is writing to the SQLite database, instead of
    /// waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

/// `--only computers|mobile-devices`: clap's values are [`Kind::ALL`]'s command-line names.
impl ValueEnum for Kind {
    fn value_variants<'a>() -> &'a [Self] {
        Kind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.cli_name()).alias(self.as_str()))
    }
}

/// The kinds a `sync` runs: every kind the configuration copies, or the one asked.
fn kinds_to_sync(cfg: &Config, only: Option<Kind>) -> Vec<Kind> {
    match only {
        Some(kind) => vec![kind],
        None => cfg.enabled_kinds(),
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create or update, in Jamf, one webhook per inventory event jamf-sync acts on, posting to
    /// webhooks.public_url with webhooks.username/password (Basic).
    Setup {
        /// Only this Jamf instance (default: every instance).
        #[arg(long)]
        instance: Option<String>,
    },
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
    /// Extra time a list page takes per record and requested section, in microseconds (a
    /// busy server: 1000 makes a page of 100 computers with five sections take 0.5 s).
    #[arg(long, default_value_t = 0)]
    pub per_record_section_us: u64,
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
    /// Scenarios to run (latency, sequential, cpu, apps, delta, memory, busy, mixed,
    /// instances, replicas: the last needs --postgres); all when absent.
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
    /// A Python with jamf-pro-sdk installed: the busy scenario also runs the SDK's concurrent
    /// paginator (benches/peer_jamf_pro_sdk.py) against the same simulator.
    #[arg(long)]
    pub peer_python: Option<String>,
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
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => commands::config_check(&cfg),
        Command::Purge { instance, yes } => commands::purge(&cfg, &instance, yes).await,
        Command::Migrate => {
            let _lock = handover::writer_lock(&cfg, Wait::Block, exit::EXIT_HELD).await?;
            let db = crate::app::connect(&cfg).await?;
            println!("migrations applied ({})", db.backend());
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { limit, instance } => match instance_configs(&cfg, instance.as_deref()) {
            Some(targets) => commands::status(&cfg, &targets, limit).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Views => commands::views(&cfg).await,
        Command::History {
            device,
            kind,
            json,
            instance,
        } => match instance_configs(&cfg, instance.as_deref()) {
            Some(targets) => commands::history(&targets, &device, kind, json).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Sync(args) => match jamf_settings_or_report(&cfg, args.instance.as_deref()) {
            Some(targets) => commands::sync(&cfg, targets, args).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Run => commands::run_daemon(cfg).await,
        Command::Reconcile(args) => match jamf_settings_or_report(&cfg, args.instance.as_deref()) {
            Some(targets) => commands::reconcile(&cfg, targets, args).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Groups {
            only,
            instance,
            no_wait,
        } => match jamf_settings_or_report(&cfg, instance.as_deref()) {
            Some(targets) => commands::groups(&cfg, targets, only, no_wait).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Webhooks {
            command: WebhooksCommand::Setup { instance },
        } => match jamf_settings_or_report(&cfg, instance.as_deref()) {
            Some(targets) => {
                let several = cfg.instances().len() > 1;
                let mut ok = true;
                for (mut icfg, settings) in targets {
                    if several {
                        icfg.webhooks.public_url = icfg
                            .webhooks
                            .public_url
                            .as_deref()
                            .map(|u| webhooks_setup::instance_url(u, &icfg.jamf.instance));
                    }
                    ok &= webhooks_setup::command(&icfg, settings).await? == ExitCode::SUCCESS;
                }
                Ok(exit::exit_code(ok))
            }
            None => Ok(ExitCode::FAILURE),
        },
        Command::Simulate(args) => demo::simulate(args).await,
        Command::Demo(args) => demo::demo(&cfg, args).await,
        Command::Healthcheck { url } => commands::healthcheck(&cfg, url).await,
        Command::Bench(args) => {
            let rows = crate::bench::run(&crate::bench::BenchOptions {
                postgres: args.postgres,
                full: args.full,
                scenarios: args.scenarios,
                peer_python: args.peer_python,
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", crate::bench::table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    // A command that stopped early (another process holds the database or an instance) has
    // said why; its exit status is all that is left to give.
    match result {
        Err(e) => match e.downcast_ref::<exit::Stopped>() {
            Some(stopped) => Ok(ExitCode::from(stopped.0)),
            None => Err(e),
        },
        ok => ok,
    }
}

/// The configuration of each instance a command works on (`--instance NAME`, default every
/// instance), or `None` after printing why not (an unknown name lists the known ones).
pub(super) fn instance_configs(cfg: &Config, only: Option<&str>) -> Option<Vec<Config>> {
    let all = cfg.instances();
    let chosen: Vec<Config> = all
        .iter()
        .filter(|i| only.is_none_or(|name| i.name == name))
        .map(|i| cfg.for_instance(i))
        .collect();
    if chosen.is_empty() {
        let known: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        eprintln!(
            "error: --instance: no instance named {:?} (configured: {})",
            only.unwrap_or_default(),
            known.join(", ")
        );
        return None;
    }
    Some(chosen)
}

/// Each chosen instance's configuration and Jamf settings for a one-shot command (failing fast
/// against a server it never reached), or `None` after printing the error (naming its key).
fn jamf_settings_or_report(
    cfg: &Config,
    only: Option<&str>,
) -> Option<Vec<(Config, JamfSettings)>> {
    let mut out = Vec::new();
    for icfg in instance_configs(cfg, only)? {
        match icfg.jamf_settings() {
            Ok(settings) => out.push((
                icfg,
                JamfSettings {
                    fail_fast: true,
                    ..settings
                },
            )),
            Err(e) => {
                eprintln!("error: {e}");
                return None;
            }
        }
    }
    Some(out)
}
