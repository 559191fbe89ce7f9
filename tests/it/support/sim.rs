//! The simulator on a free port, settings with fast retries, engines over a test database, and
//! checks that the store holds what the simulator serves.

use std::sync::Arc;
use std::time::Duration;

use jamf_sync::config::{
    ApiVersion, Credentials, FetchStrategy, JamfSettings, RetryConfig, SyncConfig,
};
use jamf_sync::domain::{Kind, Trigger};
use jamf_sync::jamf::JamfClient;
use jamf_sync::simulator::{SimConfig, Simulator};
use jamf_sync::store::{Db, RunRow, Store, StoredDevice};
use jamf_sync::sync::{Engine, RunSummary, SyncOptions};
use secrecy::SecretString;

use super::db::TestDb;

pub async fn sim(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg, 0).await.expect("simulator")
}

pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff_ms: 5,
        max_backoff_ms: 100,
        budget_secs: 20,
        quota_violation_multiplier: 4,
    }
}

pub fn settings(sim: &Simulator) -> JamfSettings {
    settings_with_url(&sim.url())
}

pub fn settings_with_url(url: &str) -> JamfSettings {
    JamfSettings {
        instance: "test".into(),
        url: url::Url::parse(url).expect("url"),
        credentials: Credentials::ApiClient {
            client_id: "jamf-sync-sim".into(),
            client_secret: SecretString::from("sim-secret".to_string()),
        },
        api_version: ApiVersion::Auto,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        max_concurrency: 5,
        token_refresh_margin: Duration::from_secs(60),
        retry: fast_retry(),
        pacing: Default::default(),
        ca_file: None,
        max_response_bytes: 256 << 20,
        fail_fast: false,
        secret_file: None,
        version_ttl: jamf_sync::config::VERSION_TTL,
    }
}

pub fn sync_cfg(page_size: u32, strategy: FetchStrategy) -> SyncConfig {
    SyncConfig {
        page_size,
        strategy,
        ..SyncConfig::default()
    }
}

pub fn engine(db: &TestDb, settings: JamfSettings, cfg: SyncConfig) -> Engine<Db> {
    let client = Arc::new(JamfClient::new(settings).expect("client"));
    Engine::new(db.db.clone(), client, cfg)
}

/// A simulator with `computers` computers (no mobile devices) and an inline engine (pages of
/// 100) over `db`, nothing synced yet.
pub async fn computers_fleet(db: &TestDb, computers: usize) -> (Simulator, Engine<Db>) {
    fleet(db, computers, 0).await
}

/// A simulator with this fleet and an engine with the default configuration (computers
/// inline in pages of 100, mobile devices through the advanced search) over `db`.
pub async fn fleet(
    db: &TestDb,
    computers: usize,
    mobile_devices: usize,
) -> (Simulator, Engine<Db>) {
    let sim = sim(SimConfig {
        computers,
        mobile_devices,
        ..SimConfig::default()
    })
    .await;
    let e = engine(db, settings(&sim), sync_cfg(100, FetchStrategy::Inline));
    (sim, e)
}

pub async fn run(engine: &Engine<Db>, full: bool) -> RunSummary {
    engine
        .sync_computers(SyncOptions::new(full, Trigger::Cli))
        .await
        .expect("store must not fail")
}

/// One reconcile of `kind` from the CLI.
pub async fn reconcile(
    e: &Engine<Db>,
    kind: Kind,
    dry_run: bool,
    force: bool,
) -> jamf_sync::sync::reconcile::ReconcileSummary {
    e.reconcile(
        kind,
        jamf_sync::sync::reconcile::ReconcileOptions {
            dry_run,
            force,
            trigger: Trigger::Cli,
        },
    )
    .await
    .expect("store must not fail")
}

pub async fn run_mobile(engine: &Engine<Db>, full: bool) -> RunSummary {
    engine
        .sync_mobile_devices(SyncOptions::new(full, Trigger::Cli))
        .await
        .expect("store must not fail")
}

/// Every simulated mobile device is stored with the simulator's current values.
pub async fn assert_mobiles_match_sim(db: &TestDb, sim: &Simulator) {
    let rows = db
        .db
        .devices("test", Kind::MobileDevices)
        .await
        .expect("mobile devices");
    assert_eq!(
        rows.iter().map(|r| r.jamf_id).collect::<Vec<_>>(),
        sim.mobile_ids(),
        "stored mobile ids differ from the simulator's ({})",
        db.backend()
    );
    for row in &rows {
        let m = sim.mobile(row.jamf_id).expect("sim mobile");
        assert_eq!(
            row.info.name.as_deref(),
            Some(m.name.as_str()),
            "name of {} ({})",
            m.id,
            db.backend()
        );
        assert_eq!(row.info.serial_number.as_deref(), Some(m.serial.as_str()));
        assert_eq!(row.info.udid.as_deref(), Some(m.udid.as_str()));
        assert_eq!(row.info.os_version.as_deref(), Some(m.os_version.as_str()));
        assert_eq!(row.os_type.as_deref(), Some(m.os_type()));
        assert_eq!(row.info.username.as_deref(), Some(m.username.as_str()));
        assert_eq!(row.info.email, Some(m.email()));
        assert_eq!(row.info.managed, Some(m.managed));
        assert_eq!(row.info.supervised, Some(m.supervised));
        assert_eq!(
            row.as_of.map(|d| d.timestamp_millis()),
            Some(m.last_inventory.timestamp_millis()),
            "last inventory of {} ({})",
            m.id,
            db.backend()
        );
        assert!(row.deleted_at.is_none());
    }
}

/// The stored copy of one device of instance `test`.
pub async fn stored_device(db: &TestDb, kind: Kind, id: i64) -> StoredDevice {
    db.db
        .devices("test", kind)
        .await
        .expect("rows")
        .into_iter()
        .find(|d| d.jamf_id == id)
        .unwrap_or_else(|| panic!("{kind:?} {id} is stored ({})", db.backend()))
}

pub async fn stored(db: &TestDb) -> Vec<StoredDevice> {
    stored_instance(db, "test").await
}

pub async fn stored_instance(db: &TestDb, instance: &str) -> Vec<StoredDevice> {
    db.db
        .devices(instance, Kind::Computers)
        .await
        .expect("computers")
}

pub async fn last_run(db: &TestDb) -> RunRow {
    db.db
        .recent_runs("test", 1)
        .await
        .expect("runs")
        .into_iter()
        .next()
        .expect("a run")
}

pub async fn cursor(db: &TestDb) -> Option<chrono::DateTime<chrono::Utc>> {
    db.db.cursor("test", Kind::Computers).await.expect("cursor")
}

/// Every simulated computer is stored with the simulator's current values, and nothing else is.
pub async fn assert_matches_sim(db: &TestDb, sim: &Simulator) {
    assert_instance_matches_sim(db, "test", sim).await
}

/// [`assert_matches_sim`] for one instance.
pub async fn assert_instance_matches_sim(db: &TestDb, instance: &str, sim: &Simulator) {
    let rows = stored_instance(db, instance).await;
    let ids = sim.computer_ids();
    assert_eq!(
        rows.iter().map(|r| r.jamf_id).collect::<Vec<_>>(),
        ids,
        "stored ids differ from the simulator's fleet ({})",
        db.backend()
    );
    for row in &rows {
        let c = sim.computer(row.jamf_id).expect("sim computer");
        assert_eq!(
            row.info.name.as_deref(),
            Some(c.name.as_str()),
            "name of {}",
            c.id
        );
        assert_eq!(row.info.serial_number.as_deref(), Some(c.serial.as_str()));
        assert_eq!(row.info.udid.as_deref(), Some(c.udid.as_str()));
        assert_eq!(row.info.username.as_deref(), Some(c.username.as_str()));
        assert_eq!(row.info.email, Some(format!("{}@example.com", c.username)));
        assert_eq!(row.info.managed, Some(c.managed));
        // Jamf sends milliseconds; compare at that precision.
        assert_eq!(
            row.as_of.map(|d| d.timestamp_millis()),
            Some(c.report_date.timestamp_millis()),
            "report date of {} ({})",
            c.id,
            db.backend()
        );
        assert_eq!(
            row.last_contact.map(|d| d.timestamp_millis()),
            Some(c.last_contact.timestamp_millis())
        );
        assert!(row.deleted_at.is_none());
    }
}
