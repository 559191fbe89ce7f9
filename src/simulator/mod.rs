//! A Jamf Pro simulator served over real HTTP, for the demo, tests and benchmarks.
//!
//! It answers the way real Jamf does (see `../shared/jamf-api.md`): both auth flows with
//! expiring tokens, `jamf-pro-version`, computers-inventory v1/v3/v4 with sections, RSQL
//! filters, sort, 0-based pages and the silent clamp at 2000, `…-detail/{id}`, Jamf's error
//! bodies. It injects faults on demand (500/502/503/504, QuotaViolation, 429 + Retry-After,
//! connection resets, slow answers, token revocation) and counts what it saw: requests per
//! endpoint template, peak concurrent requests and peak open connections, so tests can prove
//! the client stays within Jamf's limits.
//!
//! Invariant: the simulator is deterministic for a given seed and fleet size, apart from the
//! injected faults' random draws and the wall clock.

pub mod fleet;
pub mod mobile;
pub mod rsql;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::config::ApiVersion;
use fleet::SimComputer;

/// What the simulated server looks like and how it misbehaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Computers in the fleet (ids 1..=n).
    pub computers: usize,
    /// Mobile devices in the fleet (ids 1..=n).
    pub mobile_devices: usize,
    /// A new advanced search stays invisible this long to requests without the sticky cookie.
    pub replication_lag_ms: u64,
    /// Set the sticky-session cookie (a cluster with session affinity).
    pub sticky_sessions: bool,
    /// Reported by `/api/v1/jamf-pro-version`; below 11.30 the v4 endpoints answer 404.
    pub version: String,
    /// Lifetime of issued tokens in seconds.
    pub token_ttl_secs: u64,
    /// Accepted API client.
    pub client_id: String,
    pub client_secret: String,
    /// Accepted user account.
    pub username: String,
    pub password: String,
    /// Serve `/api/oauth/token` only (servers older than the v1 path).
    pub legacy_oauth_only: bool,
    /// Added to every answer.
    pub latency_ms: u64,
    /// Requests the server handles at full speed; above it each extra concurrent request
    /// adds `overload_factor` × `latency_ms` (0 = unlimited).
    pub capacity: u64,
    pub overload_factor: f64,
    /// Extra latency of list pages per record and requested section, in microseconds.
    pub per_record_section_us: u64,
    /// List pages larger than this answer 504 (a gateway timing out on a heavy page); 0 = off.
    pub page_timeout_above: usize,
    /// Seed of the fleet generator.
    pub seed: u64,
    /// After each served list page, this many random devices submit inventory (churn while a
    /// client pages).
    pub churn_per_page: usize,
    pub faults: Faults,
    /// POST a webhook event here whenever a device is added, submits inventory, checks in or
    /// is unenrolled (unset: no events).
    pub webhook_url: Option<String>,
    pub webhook_format: webhooks::WebhookFormat,
    /// Basic credentials sent with each event.
    pub webhook_username: Option<String>,
    pub webhook_password: Option<String>,
}

/// Fault injection on inventory and version endpoints; each rate is a probability per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub rate_500: f64,
    pub rate_502: f64,
    pub rate_503: f64,
    pub rate_504: f64,
    /// HTTP 500 with a `policies.ratelimit.QuotaViolation` body.
    pub rate_quota: f64,
    /// HTTP 429 with `Retry-After`.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// Connection dropped in the middle of the body.
    pub rate_reset: f64,
    /// Answer delayed by `slow_ms` extra.
    pub rate_slow: f64,
    pub slow_ms: u64,
    /// Every n-th authenticated request finds all tokens revoked (401). 0 = never.
    pub revoke_every: u64,
    /// Answer this many requests (after the auth check) with 503, then recover: an outage.
    pub outage_requests: u64,
    /// Requests served normally before the outage starts.
    pub outage_after: u64,
    /// When set, the outage is the platform gateway throttling instead: 429 with this
    /// `Retry-After` (seconds), which the client must wait out.
    pub outage_retry_after_secs: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            computers: 2000,
            mobile_devices: 500,
            replication_lag_ms: 0,
            sticky_sessions: true,
            version: "11.30.1-t1784555528405".into(),
            token_ttl_secs: 1200,
            client_id: "jamf-sync-sim".into(),
            client_secret: "sim-secret".into(),
            username: "admin".into(),
            password: "sim-password".into(),
            legacy_oauth_only: false,
            latency_ms: 0,
            capacity: 0,
            overload_factor: 1.0,
            per_record_section_us: 0,
            page_timeout_above: 0,
            seed: 42,
            churn_per_page: 0,
            faults: Faults::default(),
            webhook_url: None,
            webhook_format: webhooks::WebhookFormat::Json,
            webhook_username: None,
            webhook_password: None,
        }
    }
}

/// Counters the simulator keeps, readable by tests and at `/_sim/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    pub requests: u64,
    /// By endpoint template, e.g. `/api/v4/computers-inventory-detail/{id}`.
    pub by_endpoint: BTreeMap<String, u64>,
    pub peak_in_flight: u64,
    pub peak_connections: u64,
    pub connections_opened: u64,
    pub tokens_issued: u64,
    pub faults_injected: u64,
    pub unauthorized: u64,
    /// Requests that carried the sticky-session cookie set with the first token.
    pub with_sticky_cookie: u64,
    /// `User-Agent` of the last request.
    pub last_user_agent: Option<String>,
    pub searches_created: u64,
    pub searches_updated: u64,
    /// Webhook events delivered (2xx) and not delivered.
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    /// `/JSSResource/webhooks` writes.
    pub webhooks_created: u64,
    pub webhooks_updated: u64,
}

pub(crate) struct Inner {
    fleet: BTreeMap<i64, SimComputer>,
    tokens: HashMap<String, Instant>,
    rng: fastrand::Rng,
    stats: SimStats,
    outage_left: u64,
    /// Requests that passed the fault check so far (for `outage_after`).
    fault_checks: u64,
    auth_requests: u64,
    /// Ids whose records are served malformed (an unparseable `reportDate`).
    corrupt: std::collections::HashSet<i64>,
    mobiles: BTreeMap<i64, mobile::SimMobile>,
    /// Mobile device ids whose XML is served truncated.
    corrupt_mobiles: std::collections::HashSet<i64>,
    searches: BTreeMap<i64, mobile::SimSearch>,
    next_search_id: i64,
    /// Devices deleted after the search index saw them: listed by searches, 404 on fetch.
    vanished: BTreeMap<i64, mobile::SimMobile>,
    /// Computers missing from list pages while their detail record still answers (a listing
    /// glitch, e.g. a mis-scoped site).
    unlisted: std::collections::HashSet<i64>,
    /// While set and in the future: latency ×10 and half the requests answer 503.
    brownout_until: Option<Instant>,
    /// Every request: time since start, requests in flight when it arrived, status.
    timeline: Vec<(Duration, u64, u16)>,
    started: Instant,
    /// Webhooks configured through `/JSSResource/webhooks`.
    webhooks: BTreeMap<i64, webhooks::SimWebhook>,
    next_webhook_id: i64,
    /// Events to emit, when `webhook_url` is set.
    events: Option<tokio::sync::mpsc::UnboundedSender<webhooks::SimEvent>>,
}

impl Inner {
    fn emit_computer(&self, name: &'static str, id: i64) {
        if let (Some(tx), Some(c)) = (&self.events, self.fleet.get(&id)) {
            let _ = tx.send(webhooks::SimEvent {
                name,
                jss_id: id,
                udid: c.udid.clone(),
                serial: c.serial.clone(),
                device_name: c.name.clone(),
            });
        }
    }

    fn emit_mobile(&self, name: &'static str, id: i64) {
        if let (Some(tx), Some(m)) = (&self.events, self.mobiles.get(&id)) {
            let _ = tx.send(webhooks::SimEvent {
                name,
                jss_id: id,
                udid: m.udid.clone(),
                serial: m.serial.clone(),
                device_name: m.name.clone(),
            });
        }
    }
}

pub struct SimState {
    cfg: Mutex<SimConfig>,
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    connections: AtomicU64,
    token_seq: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the simulator's data inconsistent in a way
    // that matters for a test double; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running simulator.
pub struct Simulator {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Binds `127.0.0.1:port` (0 = any free port) and serves in the background.
    pub async fn start(cfg: SimConfig, port: u16) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        Self::serve(cfg, listener).await
    }

    pub async fn serve(cfg: SimConfig, listener: TcpListener) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let now = Utc::now();
        let fleet = (1..=cfg.computers as i64)
            .map(|id| (id, SimComputer::generate(id, &mut rng, now)))
            .collect();
        let mobiles = (1..=cfg.mobile_devices as i64)
            .map(|id| (id, mobile::SimMobile::generate(id, &mut rng, now)))
            .collect();
        let state = Arc::new(SimState {
            inner: Mutex::new(Inner {
                fleet,
                tokens: HashMap::new(),
                rng,
                stats: SimStats::default(),
                outage_left: cfg.faults.outage_requests,
                fault_checks: 0,
                auth_requests: 0,
                corrupt: Default::default(),
                mobiles,
                corrupt_mobiles: Default::default(),
                searches: BTreeMap::new(),
                next_search_id: 100,
                vanished: BTreeMap::new(),
                unlisted: Default::default(),
                brownout_until: None,
                timeline: Vec::new(),
                started: Instant::now(),
                webhooks: BTreeMap::new(),
                next_webhook_id: 0,
                events: None,
            }),
            cfg: Mutex::new(cfg),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            token_seq: AtomicU64::new(1),
        });
        let hook = lock(&state.cfg).webhook_url.clone();
        if let Some(url) = hook {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            lock(&state.inner).events = Some(tx);
            let (format, basic) = {
                let cfg = lock(&state.cfg);
                let basic = cfg
                    .webhook_username
                    .clone()
                    .zip(cfg.webhook_password.clone());
                (cfg.webhook_format, basic)
            };
            webhooks::spawn_emitter(state.clone(), url, format, basic, rx);
        }
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let counting = CountingListener {
            inner: listener,
            state: state.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(counting, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Simulator {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.state.inner).stats.clone()
    }

    pub fn reset_stats(&self) {
        let mut inner = lock(&self.state.inner);
        inner.stats = SimStats::default();
        self.state.in_flight.store(0, Ordering::SeqCst);
    }

    /// Requests served for one endpoint template.
    pub fn requests_to(&self, endpoint: &str) -> u64 {
        lock(&self.state.inner)
            .stats
            .by_endpoint
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    pub fn set_faults(&self, faults: Faults) {
        let outage = faults.outage_requests;
        lock(&self.state.cfg).faults = faults;
        let mut inner = lock(&self.state.inner);
        inner.outage_left = outage;
        inner.fault_checks = 0;
    }

    /// Serve this computer's record malformed from now on.
    pub fn corrupt(&self, id: i64) {
        lock(&self.state.inner).corrupt.insert(id);
    }

    /// A brown-out for `d`: latency ×10 and half the requests answer 503.
    pub fn brownout(&self, d: Duration) {
        lock(&self.state.inner).brownout_until = Some(Instant::now() + d);
    }

    /// Sets the concurrency the server handles at full speed (0 = unlimited).
    pub fn set_capacity(&self, capacity: u64) {
        lock(&self.state.cfg).capacity = capacity;
    }

    /// Every request so far: time since start, requests in flight on arrival, status code.
    pub fn timeline(&self) -> Vec<(Duration, u64, u16)> {
        lock(&self.state.inner).timeline.clone()
    }

    /// Time since the simulator started (the timeline's clock).
    pub fn elapsed(&self) -> Duration {
        lock(&self.state.inner).started.elapsed()
    }

    pub fn set_latency(&self, ms: u64) {
        lock(&self.state.cfg).latency_ms = ms;
    }

    pub fn set_churn_per_page(&self, n: usize) {
        lock(&self.state.cfg).churn_per_page = n;
    }

    pub fn revoke_tokens(&self) {
        lock(&self.state.inner).tokens.clear();
    }

    /// `count` distinct random devices submit inventory now; returns their ids.
    pub fn touch_random(&self, count: usize) -> Vec<i64> {
        let mut inner = lock(&self.state.inner);
        touch(&mut inner, count)
    }

    /// Specific devices submit inventory now.
    pub fn touch_ids(&self, ids: &[i64]) {
        let mut inner = lock(&self.state.inner);
        let now = Utc::now();
        let Inner { fleet, rng, .. } = &mut *inner;
        for id in ids {
            if let Some(c) = fleet.get_mut(id) {
                c.report(now, rng);
            }
        }
        for id in ids {
            inner.emit_computer("ComputerInventoryCompleted", *id);
        }
    }

    /// Computers check in (last contact moves; no new inventory): `ComputerCheckIn` events.
    pub fn check_in(&self, ids: &[i64]) {
        let mut inner = lock(&self.state.inner);
        let now = Utc::now();
        for id in ids {
            if let Some(c) = inner.fleet.get_mut(id) {
                c.last_contact = now;
            }
            inner.emit_computer("ComputerCheckIn", *id);
        }
    }

    /// A mobile device is unenrolled: it stays in Jamf, unmanaged (`MobileDeviceUnEnrolled`).
    pub fn unenroll_mobile(&self, id: i64) -> bool {
        let mut inner = lock(&self.state.inner);
        let Some(m) = inner.mobiles.get_mut(&id) else {
            return false;
        };
        m.managed = false;
        m.report(Utc::now());
        inner.emit_mobile("MobileDeviceUnEnrolled", id);
        true
    }

    /// The webhooks configured in the simulator through the Classic API.
    pub fn webhooks(&self) -> Vec<webhooks::SimWebhook> {
        lock(&self.state.inner).webhooks.values().cloned().collect()
    }

    /// Adds a mobile device whose last inventory is `age` old; returns its id.
    pub fn add_mobile(&self, age: chrono::Duration) -> i64 {
        let mut inner = lock(&self.state.inner);
        let id = inner.mobiles.keys().next_back().copied().unwrap_or(0) + 1;
        let now = Utc::now();
        let mut m = mobile::SimMobile::generate(id, &mut inner.rng, now);
        m.last_inventory = now - age;
        inner.mobiles.insert(id, m);
        inner.emit_mobile("MobileDeviceEnrolled", id);
        id
    }

    /// Adds a device whose inventory report is `age` old (invisible to a delta run).
    pub fn add_computer(&self, age: chrono::Duration) -> i64 {
        let mut inner = lock(&self.state.inner);
        let id = inner.fleet.keys().next_back().copied().unwrap_or(0) + 1;
        let now = Utc::now();
        let mut c = SimComputer::generate(id, &mut inner.rng, now);
        c.report_date = now - age;
        inner.fleet.insert(id, c);
        inner.emit_computer("ComputerAdded", id);
        id
    }

    /// `count` distinct random mobile devices submit inventory now; returns their ids.
    pub fn touch_random_mobiles(&self, count: usize) -> Vec<i64> {
        let mut inner = lock(&self.state.inner);
        let ids: Vec<i64> = inner.mobiles.keys().copied().collect();
        let picked = pick(&mut inner.rng, ids, count);
        let now = Utc::now();
        for id in &picked {
            if let Some(m) = inner.mobiles.get_mut(id) {
                m.report(now);
            }
            inner.emit_mobile("MobileDeviceInventoryCompleted", *id);
        }
        picked
    }

    pub fn mobile(&self, id: i64) -> Option<mobile::SimMobile> {
        lock(&self.state.inner).mobiles.get(&id).cloned()
    }

    pub fn mobile_ids(&self) -> Vec<i64> {
        lock(&self.state.inner).mobiles.keys().copied().collect()
    }

    pub fn delete_mobile(&self, id: i64) -> bool {
        lock(&self.state.inner).mobiles.remove(&id).is_some()
    }

    /// Deletes a mobile device that searches still list (deleted between search and fetch).
    pub fn vanish_mobile(&self, id: i64) -> bool {
        let mut inner = lock(&self.state.inner);
        match inner.mobiles.remove(&id) {
            Some(m) => {
                inner.vanished.insert(id, m);
                true
            }
            None => false,
        }
    }

    /// Serve this mobile device's XML truncated from now on.
    pub fn corrupt_mobile(&self, id: i64) {
        lock(&self.state.inner).corrupt_mobiles.insert(id);
    }

    /// The advanced searches the simulator holds.
    pub fn searches(&self) -> Vec<mobile::SimSearch> {
        lock(&self.state.inner).searches.values().cloned().collect()
    }

    pub fn delete_computer(&self, id: i64) -> bool {
        self.take_computer(id).is_some()
    }

    /// Removes a computer and hands it back (to re-add it later with [`Simulator::put_computer`]).
    pub fn take_computer(&self, id: i64) -> Option<SimComputer> {
        lock(&self.state.inner).fleet.remove(&id)
    }

    /// Leave this computer out of list pages (its detail record still answers).
    pub fn unlist_computer(&self, id: i64) {
        lock(&self.state.inner).unlisted.insert(id);
    }

    pub fn put_computer(&self, c: SimComputer) {
        lock(&self.state.inner).fleet.insert(c.id, c);
    }

    pub fn computer(&self, id: i64) -> Option<SimComputer> {
        lock(&self.state.inner).fleet.get(&id).cloned()
    }

    pub fn computer_ids(&self) -> Vec<i64> {
        lock(&self.state.inner).fleet.keys().copied().collect()
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `count` distinct ids drawn at random, in id order.
fn pick(rng: &mut fastrand::Rng, ids: Vec<i64>, count: usize) -> Vec<i64> {
    let count = count.min(ids.len());
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < count {
        picked.insert(ids[rng.usize(0..ids.len())]);
    }
    picked.into_iter().collect()
}

fn touch(inner: &mut Inner, count: usize) -> Vec<i64> {
    let ids: Vec<i64> = inner.fleet.keys().copied().collect();
    let picked = pick(&mut inner.rng, ids, count);
    let now = Utc::now();
    let Inner { fleet, rng, .. } = &mut *inner;
    for id in &picked {
        if let Some(c) = fleet.get_mut(id) {
            c.report(now, rng);
        }
    }
    for id in &picked {
        inner.emit_computer("ComputerInventoryCompleted", *id);
    }
    picked
}

/// Counts open TCP connections (the number Jamf's guidance limits).
struct CountingListener {
    inner: TcpListener,
    state: Arc<SimState>,
}

struct CountedStream {
    inner: TcpStream,
    state: Arc<SimState>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Without no-delay, keep-alive answers stall ~40 ms (Nagle + delayed ACK).
                    let _ = stream.set_nodelay(true);
                    let open = self.state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    {
                        let mut inner = lock(&self.state.inner);
                        inner.stats.connections_opened += 1;
                        inner.stats.peak_connections = inner.stats.peak_connections.max(open);
                    }
                    return (
                        CountedStream {
                            inner: stream,
                            state: self.state.clone(),
                        },
                        addr,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/api/v1/oauth/token", post(oauth_v1))
        .route("/api/oauth/token", post(oauth_legacy))
        .route("/api/v1/auth/token", post(user_token))
        .route("/api/v1/auth/keep-alive", post(keep_alive))
        .route("/api/v1/auth/invalidate-token", post(invalidate))
        .route("/api/v1/jamf-pro-version", get(version))
        .route("/api/v1/computers-inventory", get(inventory_v1))
        .route("/api/v3/computers-inventory", get(inventory_v3))
        .route("/api/v4/computers-inventory", get(inventory_v4))
        .route("/api/v1/computers-inventory-detail/{id}", get(detail_v1))
        .route("/api/v3/computers-inventory-detail/{id}", get(detail_v3))
        .route("/api/v4/computers-inventory-detail/{id}", get(detail_v4))
        .route(
            "/JSSResource/advancedmobiledevicesearches",
            get(mobile::list_searches),
        )
        .route(
            "/JSSResource/advancedmobiledevicesearches/id/{id}",
            get(mobile::get_search_by_id)
                .post(mobile::create_search)
                .put(mobile::update_search)
                .delete(mobile::delete_search),
        )
        .route(
            "/JSSResource/advancedmobiledevicesearches/name/{name}",
            get(mobile::get_search_by_name),
        )
        .route("/JSSResource/mobiledevices", get(mobile::list_devices))
        .route(
            "/JSSResource/mobiledevices/id/{id}",
            get(mobile::mobile_device),
        )
        .route("/api/v2/mobile-devices/detail", get(mobile::pro_detail))
        .route("/JSSResource/webhooks", get(webhooks::list))
        .route(
            "/JSSResource/webhooks/id/{id}",
            get(webhooks::get_one)
                .post(webhooks::write)
                .put(webhooks::write),
        )
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/touch", post(sim_touch))
        .route("/_sim/revoke", post(sim_revoke))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(s): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let sticky = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains(STICKY_COOKIE));
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let brownout = {
        let mut inner = lock(&s.inner);
        inner.stats.requests += 1;
        inner.stats.with_sticky_cookie += u64::from(sticky);
        inner.stats.last_user_agent = agent;
        *inner.stats.by_endpoint.entry(endpoint).or_default() += 1;
        inner.stats.peak_in_flight = inner.stats.peak_in_flight.max(now);
        inner.brownout_until.is_some_and(|t| Instant::now() < t)
    };
    let (base, capacity, overload) = {
        let cfg = lock(&s.cfg);
        (cfg.latency_ms, cfg.capacity, cfg.overload_factor)
    };
    // The load model: slower above capacity, ten times slower in a brown-out.
    let mut latency = base as f64;
    if capacity > 0 && now > capacity {
        latency *= 1.0 + overload * (now - capacity) as f64;
    }
    if brownout {
        latency *= 10.0;
    }
    if latency > 0.0 {
        tokio::time::sleep(Duration::from_micros((latency * 1000.0) as u64)).await;
    }
    let mut resp = if brownout && fastrand::bool() {
        lock(&s.inner).stats.faults_injected += 1;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>503 Service Unavailable</body></html>",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    {
        let mut inner = lock(&s.inner);
        let at = inner.started.elapsed();
        inner.timeline.push((at, now, resp.status().as_u16()));
    }
    if !sticky && lock(&s.cfg).sticky_sessions {
        // Jamf Cloud pins a client to one cluster node with this cookie.
        if let Ok(v) = header::HeaderValue::from_str(&format!("{STICKY_COOKIE}=node-1; Path=/")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

pub(crate) const STICKY_COOKIE: &str = "jpro-ingress";

pub(crate) fn api_error(
    status: StatusCode,
    code: &str,
    description: &str,
    field: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({
            "httpStatus": status.as_u16(),
            "errors": [{"code": code, "description": description, "id": "0", "field": field}]
        })),
    )
        .into_response()
}

pub(crate) fn unauthorized() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_TOKEN",
        "Unauthorized",
        None,
    )
}

async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found", None)
}

impl SimState {
    fn issue_token(&self) -> (String, u64) {
        let ttl = lock(&self.cfg).token_ttl_secs;
        let n = self.token_seq.fetch_add(1, Ordering::SeqCst);
        let token = format!("sim-token-{n}-{:016x}", fastrand::u64(..));
        let mut inner = lock(&self.inner);
        inner
            .tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        inner.stats.tokens_issued += 1;
        (token, ttl)
    }

    /// The caller's valid bearer token, if any; applies periodic revocation.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Option<String> {
        let revoke_every = lock(&self.cfg).faults.revoke_every;
        let mut inner = lock(&self.inner);
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let valid = token
            .as_ref()
            .is_some_and(|t| inner.tokens.get(t).is_some_and(|exp| *exp > Instant::now()));
        inner.auth_requests += 1;
        // A revocation (an admin action, a password change) takes effect for the requests
        // after this one.
        if revoke_every > 0 && inner.auth_requests.is_multiple_of(revoke_every) {
            inner.tokens.clear();
        }
        if valid {
            token
        } else {
            inner.stats.unauthorized += 1;
            None
        }
    }

    /// Draws an injected fault for this request, if any.
    pub(crate) async fn fault(&self) -> Option<Response> {
        let f = lock(&self.cfg).faults.clone();
        {
            let mut inner = lock(&self.inner);
            inner.fault_checks += 1;
            if inner.outage_left > 0 && inner.fault_checks > f.outage_after {
                inner.outage_left -= 1;
                inner.stats.faults_injected += 1;
                if f.outage_retry_after_secs > 0 {
                    return Some(
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(header::RETRY_AFTER, f.outage_retry_after_secs.to_string())],
                            "Too Many Requests",
                        )
                            .into_response(),
                    );
                }
                return Some(
                    (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
                );
            }
        }
        let r = fastrand::f64();
        let mut edge = 0.0;
        let mut hit = |rate: f64| {
            edge += rate;
            r < edge
        };
        let resp = if hit(f.rate_500) {
            Some(api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal Server Error",
                None,
            ))
        } else if hit(f.rate_502) {
            Some(
                (
                    StatusCode::BAD_GATEWAY,
                    "<html><body>502 Bad Gateway</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_503) {
            Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<html><body>503 Service Unavailable</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_504) {
            Some(
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "<html><body>504 Gateway Time-out</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_quota) {
            Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"fault\":{\"faultstring\":\"Rate limit quota violation. Quota limit exceeded\",\"detail\":{\"errorcode\":\"policies.ratelimit.QuotaViolation\"}}}",
                )
                    .into_response(),
            )
        } else if hit(f.rate_429) {
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, f.retry_after_secs.to_string())],
                    "Too Many Requests",
                )
                    .into_response(),
            )
        } else if hit(f.rate_reset) {
            // Headers go out, then the connection dies mid-body.
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                Ok(bytes::Bytes::from_static(b"{\"totalCount\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ];
            Some(
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            )
        } else {
            None
        };
        if resp.is_some() {
            lock(&self.inner).stats.faults_injected += 1;
        } else if hit(f.rate_slow) {
            tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
        }
        resp
    }

    fn supports(&self, version: ApiVersion) -> bool {
        if version != ApiVersion::V4 {
            return true;
        }
        let v = lock(&self.cfg).version.clone();
        crate::jamf::version_for(Some(&v)) == ApiVersion::V4
    }
}

#[derive(Deserialize)]
struct OAuthForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn oauth_v1(State(s): State<Arc<SimState>>, form: Form<OAuthForm>) -> Response {
    if lock(&s.cfg).legacy_oauth_only {
        return not_found().await;
    }
    oauth(&s, form.0)
}

async fn oauth_legacy(State(s): State<Arc<SimState>>, form: Form<OAuthForm>) -> Response {
    oauth(&s, form.0)
}

fn oauth(s: &SimState, form: OAuthForm) -> Response {
    let ok = {
        let cfg = lock(&s.cfg);
        form.grant_type.as_deref() == Some("client_credentials")
            && form.client_id.as_deref() == Some(cfg.client_id.as_str())
            && form.client_secret.as_deref() == Some(cfg.client_secret.as_str())
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "Client authentication failed"})),
        )
            .into_response();
    }
    let (token, ttl) = s.issue_token();
    Json(json!({
        "access_token": token,
        "scope": "api-role:2",
        "token_type": "Bearer",
        "expires_in": ttl
    }))
    .into_response()
}

fn user_token_body(token: String, ttl: u64) -> Response {
    let expires = Utc::now() + chrono::Duration::seconds(ttl as i64);
    Json(json!({
        "token": token,
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }))
    .into_response()
}

async fn user_token(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = {
        let cfg = lock(&s.cfg);
        creds.as_deref() == Some(format!("{}:{}", cfg.username, cfg.password).as_str())
    };
    if !ok {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "Unauthorized",
            None,
        );
    }
    let (token, ttl) = s.issue_token();
    user_token_body(token, ttl)
}

async fn keep_alive(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let Some(old) = s.authorize(&headers) else {
        return unauthorized();
    };
    lock(&s.inner).tokens.remove(&old);
    let (token, ttl) = s.issue_token();
    user_token_body(token, ttl)
}

async fn invalidate(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    match s.authorize(&headers) {
        Some(t) => {
            lock(&s.inner).tokens.remove(&t);
            StatusCode::NO_CONTENT.into_response()
        }
        None => unauthorized(),
    }
}

async fn version(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if s.authorize(&headers).is_none() {
        return unauthorized();
    }
    if let Some(r) = s.fault().await {
        return r;
    }
    let v = lock(&s.cfg).version.clone();
    Json(json!({ "version": v })).into_response()
}

async fn inventory_v1(s: State<Arc<SimState>>, h: HeaderMap, q: RawQuery) -> Response {
    inventory(s, h, q, ApiVersion::V1).await
}
async fn inventory_v3(s: State<Arc<SimState>>, h: HeaderMap, q: RawQuery) -> Response {
    inventory(s, h, q, ApiVersion::V3).await
}
async fn inventory_v4(s: State<Arc<SimState>>, h: HeaderMap, q: RawQuery) -> Response {
    inventory(s, h, q, ApiVersion::V4).await
}

async fn inventory(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    version: ApiVersion,
) -> Response {
    if !s.supports(version) {
        return not_found().await;
    }
    if s.authorize(&headers).is_none() {
        return unauthorized();
    }
    if let Some(r) = s.fault().await {
        return r;
    }
    let mut sections: Vec<String> = Vec::new();
    let mut page: usize = 0;
    let mut page_size: usize = 100;
    let mut sort = "general.name:asc".to_string();
    let mut filter: Option<String> = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "section" => sections.extend(v.split(',').map(|p| p.trim().to_string())),
            "page" => match v.parse() {
                Ok(p) => page = p,
                Err(_) => return bad_param("page", &v),
            },
            "page-size" => match v.parse::<usize>() {
                // Real Jamf clamps silently.
                Ok(n) => page_size = n.clamp(1, 2000),
                Err(_) => return bad_param("page-size", &v),
            },
            "sort" => sort = v.into_owned(),
            "filter" if !v.is_empty() => filter = Some(v.into_owned()),
            _ => {}
        }
    }
    if sections.is_empty() {
        sections.push("GENERAL".into());
    }
    let (page_timeout_above, per_record_us) = {
        let cfg = lock(&s.cfg);
        (cfg.page_timeout_above, cfg.per_record_section_us)
    };
    if page_timeout_above > 0 && page_size > page_timeout_above {
        return (
            StatusCode::GATEWAY_TIMEOUT,
            "<html><body>504 Gateway Time-out</body></html>",
        )
            .into_response();
    }
    for sec in &sections {
        if !fleet::section_in(version, sec) {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAMETER_VALUE",
                &format!("Invalid section value: {sec}"),
                Some("section"),
            );
        }
    }
    let expr = match filter.as_deref().map(rsql::parse) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_RSQL_FILTER",
                &e,
                Some("filter"),
            )
        }
    };
    let mut keys: Vec<(String, bool)> = Vec::new();
    for part in sort.split(',') {
        let (field, dir) = part.split_once(':').unwrap_or((part, "asc"));
        if fleet::sort_key(&SimComputer::placeholder(), field).is_none() {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("Invalid sort field: {field}"),
                Some("sort"),
            );
        }
        keys.push((field.to_string(), dir.eq_ignore_ascii_case("desc")));
    }
    let section_refs: Vec<&str> = sections.iter().map(String::as_str).collect();
    let (total, results) = {
        let inner = lock(&s.inner);
        let mut matched: Vec<&SimComputer> = Vec::new();
        for c in inner
            .fleet
            .values()
            .filter(|c| !inner.unlisted.contains(&c.id))
        {
            match expr.as_ref().map(|e| c.matches(e, version)) {
                None | Some(Ok(true)) => matched.push(c),
                Some(Ok(false)) => {}
                Some(Err(field)) => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!("Invalid filter: {field}"),
                        Some("filter"),
                    )
                }
            }
        }
        matched.sort_by(|a, b| {
            for (field, desc) in &keys {
                let (Some(x), Some(y)) = (fleet::sort_key(a, field), fleet::sort_key(b, field))
                else {
                    continue;
                };
                let o = fleet::cmp_values(&x, &y);
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let results: Vec<serde_json::Value> = matched
            .iter()
            .skip(page.saturating_mul(page_size))
            .take(page_size)
            .map(|c| corrupted(&inner, c.id, c.render(version, &section_refs)))
            .collect();
        (matched.len(), results)
    };
    if per_record_us > 0 {
        let us = per_record_us * (results.len() * section_refs.len()) as u64;
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let churn = lock(&s.cfg).churn_per_page;
    if churn > 0 {
        touch(&mut lock(&s.inner), churn);
    }
    Json(json!({ "totalCount": total, "results": results })).into_response()
}

fn corrupted(inner: &Inner, id: i64, mut v: serde_json::Value) -> serde_json::Value {
    if inner.corrupt.contains(&id) {
        if let Some(g) = v.get_mut("general").and_then(|g| g.as_object_mut()) {
            g.insert("reportDate".into(), json!("last Tuesday"));
        } else if let Some(o) = v.as_object_mut() {
            o.insert("general".into(), json!({"reportDate": "last Tuesday"}));
        }
    }
    v
}

impl SimComputer {
    fn placeholder() -> SimComputer {
        SimComputer::generate(0, &mut fastrand::Rng::with_seed(0), Utc::now())
    }
}

fn bad_param(name: &str, value: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST_PARAMETER_VALUE",
        &format!("Invalid value {value:?}"),
        Some(name),
    )
}

async fn detail_v1(s: State<Arc<SimState>>, h: HeaderMap, id: Path<String>) -> Response {
    detail(s, h, id, ApiVersion::V1).await
}
async fn detail_v3(s: State<Arc<SimState>>, h: HeaderMap, id: Path<String>) -> Response {
    detail(s, h, id, ApiVersion::V3).await
}
async fn detail_v4(s: State<Arc<SimState>>, h: HeaderMap, id: Path<String>) -> Response {
    detail(s, h, id, ApiVersion::V4).await
}

async fn detail(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    version: ApiVersion,
) -> Response {
    if !s.supports(version) {
        return not_found().await;
    }
    if s.authorize(&headers).is_none() {
        return unauthorized();
    }
    if let Some(r) = s.fault().await {
        return r;
    }
    let all: Vec<&str> = fleet::SECTIONS.iter().map(|(n, _, _)| *n).collect();
    let found = id.parse::<i64>().ok().and_then(|id| {
        let inner = lock(&s.inner);
        inner
            .fleet
            .get(&id)
            .map(|c| corrupted(&inner, id, c.render(version, &all)))
    });
    match found {
        Some(v) => Json(v).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Computer not found",
            Some("id"),
        ),
    }
}

async fn sim_stats(State(s): State<Arc<SimState>>) -> Response {
    Json(lock(&s.inner).stats.clone()).into_response()
}

#[derive(Deserialize)]
struct TouchQuery {
    count: Option<usize>,
}

async fn sim_touch(
    State(s): State<Arc<SimState>>,
    q: axum::extract::Query<TouchQuery>,
) -> Response {
    let ids = touch(&mut lock(&s.inner), q.count.unwrap_or(1));
    Json(json!({ "touched": ids })).into_response()
}

async fn sim_revoke(State(s): State<Arc<SimState>>) -> Response {
    lock(&s.inner).tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}
