//! One Jamf instance's engine over its store and client, built from configuration: the one
//! entry point the daemon, the CLI, `bench` and tests build on, so they all run the same
//! engine with the same sources.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, JamfSettings};
use crate::jamf::JamfClient;
use crate::store::{Db, Store};
use crate::sync::Engine;

/// A database, a Jamf client and the engine over them.
pub struct App {
    pub db: Arc<Db>,
    pub client: Arc<JamfClient>,
    pub engine: Arc<Engine<Db>>,
}

impl App {
    /// Builds the engine over an open database.
    pub fn build(cfg: &Config, settings: JamfSettings, db: Arc<Db>) -> anyhow::Result<App> {
        let client = Arc::new(JamfClient::new(settings)?);
        let engine = Engine::new(db.clone(), client.clone(), cfg.sync.clone())
            .with_mobile(cfg.mobile_devices.clone())
            .with_reconcile(cfg.reconcile.clone())
            .with_history(cfg.history.clone());
        Ok(App {
            db,
            client,
            engine: Arc::new(engine),
        })
    }

    /// Opens the configured database and [starts](App::start) over it.
    pub async fn open(cfg: &Config, settings: JamfSettings) -> anyhow::Result<App> {
        Self::start(cfg, settings, Arc::new(connect(cfg).await?)).await
    }

    /// Marks runs a stopped process left `running` as interrupted (their windows are redone),
    /// and builds the engine over `db`. A coordinated database ([`crate::store::lease`])
    /// leaves that to whoever takes the instance's lease: a running run there may be another
    /// live process's.
    pub async fn start(cfg: &Config, settings: JamfSettings, db: Arc<Db>) -> anyhow::Result<App> {
        let mut cfg = cfg.clone();
        if cfg.mobile_devices.search_id.is_none() {
            cfg.mobile_devices.search_name = own_search_name(
                &cfg.mobile_devices.search_name,
                &settings.instance,
                &db.installation_id().await?,
            );
        }
        let cfg = &cfg;
        let stale = match db.fence() {
            Some(_) => 0,
            None => db.interrupt_stale_runs(&settings.instance).await?,
        };
        if stale > 0 {
            tracing::warn!(
                stale,
                "runs left 'running' by a stopped process were marked interrupted; their windows will be redone"
            );
        }
        Self::build(cfg, settings, db)
    }

    /// Invalidates the Jamf token and closes the database.
    pub async fn close(&self) {
        self.client.invalidate_token().await;
        self.db.close().await;
    }
}

/// The advanced search this installation owns for this instance: the configured name plus the
/// instance and the database's id, so two installations (or two instances sharing a Jamf
/// server) never edit one search.
pub fn own_search_name(configured: &str, instance: &str, installation: &str) -> String {
    let short: String = installation.chars().take(8).collect();
    format!("{configured} [{instance} {short}]")
}

/// Opens (and migrates) the configured database.
pub async fn connect(cfg: &Config) -> anyhow::Result<Db> {
    let url = cfg.database_url()?;
    Db::connect(&url, cfg.database.max_connections)
        .await
        .with_context(|| format!("cannot open database {}", url.masked()))
}
