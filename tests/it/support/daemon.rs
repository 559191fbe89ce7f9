//! The daemon under test: in-process (`spawn_app`, the library entry point on port 0) or as a
//! real `jamf-sync run` process ([`Daemon`]: signals, kill -9, a private metrics registry),
//! both reached through an [`Endpoint`].

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jamf_sync::config::{Config, Sources};
use jamf_sync::simulator::Simulator;
use serde_json::Value;
use tokio::sync::watch;

pub const TOKEN: &str = "admin-token-for-tests";

/// HTTP access to a daemon, in-process or not.
#[derive(Clone)]
pub struct Endpoint {
    pub base: String,
    pub http: reqwest::Client,
}

impl Endpoint {
    pub fn new(base: String) -> Endpoint {
        jamf_sync::tls::install_crypto_provider();
        Endpoint {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// `GET /status` as JSON (`Null` when it does not answer).
    pub async fn status(&self) -> Value {
        match self.get("/status").await {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
            _ => Value::Null,
        }
    }

    pub async fn trigger(&self, query: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/sync{query}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("POST /sync");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `check` is true or `secs` pass.
    pub async fn wait_for<F, Fut>(&self, secs: u64, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        super::wait_until(Duration::from_secs(secs), what, check).await
    }

    pub async fn wait_ready(&self, secs: u64) {
        self.wait_for(secs, "/readyz", || async {
            matches!(self.get("/readyz").await, Some((200, _)))
        })
        .await;
    }
}

/// The environment every test daemon gets: the simulator's credentials, fast retries, the
/// database, an admin token; `extra` overrides.
pub fn daemon_env(sim: &Simulator, db_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("JAMF_SYNC__JAMF__URL", sim.url().as_str()),
        ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
        ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
        ("JAMF_SYNC__JAMF__RETRY__INITIAL_BACKOFF_MS", "5"),
        ("JAMF_SYNC__JAMF__RETRY__MAX_BACKOFF_MS", "100"),
        ("JAMF_SYNC__DATABASE__URL", db_url),
        ("JAMF_SYNC__SERVER__ADMIN_TOKEN", TOKEN),
        // On PostgreSQL a daemon restarted after kill -9 takes its predecessor's expired
        // lease: a short quiet period (the default is the 120 s request timeout).
        ("JAMF_SYNC__HA__TAKEOVER_QUIET_SECS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A daemon running in this process.
pub struct TestApp {
    pub endpoint: Endpoint,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for TestApp {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Starts the daemon on 127.0.0.1:0 with this configuration environment.
pub async fn spawn_app(sim: &Simulator, db_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let env: HashMap<String, String> = daemon_env(sim, db_url, extra).into_iter().collect();
    let cfg = Config::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("valid test configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(jamf_sync::daemon::run(cfg, listener, rx));
    TestApp {
        endpoint: Endpoint::new(base),
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    /// Asks for a graceful shutdown and waits for the daemon to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the daemon stops within 30 s")
                .expect("the daemon task does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `jamf-sync run` as a child process.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    endpoint: Endpoint,
}

impl std::ops::Deref for Daemon {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Daemon {
    pub(crate) fn start(sim: &Simulator, db_url: &str, extra: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(daemon_env(sim, db_url, extra))
    }

    /// `jamf-sync run` with exactly this environment (plus a free `server.listen`).
    pub(crate) fn start_with(env: Vec<(String, String)>) -> Daemon {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jamf-sync"));
        cmd.arg("run")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("JAMF_SYNC_TEST_DAEMON_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, _) in std::env::vars() {
            if k.starts_with("JAMF_SYNC__") {
                cmd.env_remove(k);
            }
        }
        let listen = format!("127.0.0.1:{port}");
        cmd.env("JAMF_SYNC__SERVER__LISTEN", &listen);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("spawn jamf-sync run"),
            endpoint: Endpoint::new(format!("http://{listen}")),
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub(crate) fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("daemon did not exit within {secs} s");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
