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
//! Invariants: the simulator is deterministic for a given seed and fleet size, apart from the
//! injected faults' random draws and the wall clock; it is an independent implementation of
//! Jamf (its own version table, section lists, XML reader and writer, RSQL and date parsing)
//! and imports nothing from the rest of the crate, so tests compare two implementations
//! instead of one grading itself.

mod api;
mod catalogue;
mod classic;
mod config;
mod conn;
mod events;
pub mod fleet;
mod groups;
pub mod mobile;
mod mobile_api;
pub mod odd;
pub mod rsql;
mod state;
mod values;
pub mod webhooks;
mod xml;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::net::TcpListener;

pub use config::{Faults, SimConfig, SimStats};
use fleet::SimComputer;
use state::{lock, Inner, SimState};

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
                broken: Default::default(),
                broken_mobiles: Default::default(),
                mobiles,
                corrupt_mobiles: Default::default(),
                odd: Default::default(),
                odd_mobiles: Default::default(),
                searches: BTreeMap::new(),
                next_search_id: 100,
                vanished: BTreeMap::new(),
                unlisted: Default::default(),
                unlisted_mobiles: Default::default(),
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
        let app = api::router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let counting = conn::CountingListener {
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

    /// Starts the counters afresh. Requests and connections open now stay counted (they are
    /// live, not history): the peaks start from them.
    pub fn reset_stats(&self) {
        let mut inner = lock(&self.state.inner);
        inner.stats = SimStats::default();
        inner.stats.peak_in_flight = self.state.in_flight.load(Ordering::SeqCst);
        inner.stats.peak_connections = self.state.connections.load(Ordering::SeqCst);
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
    /// Breaks a computer's data the way Jamf fails on it: a 500 for any list page or detail
    /// record that holds more than its GENERAL section. `false` mends it.
    pub fn set_broken(&self, id: i64, broken: bool) {
        let mut inner = lock(&self.state.inner);
        if broken {
            inner.broken.insert(id);
        } else {
            inner.broken.remove(&id);
        }
    }

    /// Breaks a mobile device's data (see `broken_mobiles`); `false` mends it.
    pub fn set_broken_mobile(&self, id: i64, broken: bool) {
        let mut inner = lock(&self.state.inner);
        if broken {
            inner.broken_mobiles.insert(id);
        } else {
            inner.broken_mobiles.remove(&id);
        }
    }

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

    /// What `/api/v1/jamf-pro-version` reports from now on (an upgrade or downgrade).
    pub fn set_version(&self, version: &str) {
        lock(&self.state.cfg).version = version.to_string();
    }

    pub fn set_latency(&self, ms: u64) {
        lock(&self.state.cfg).latency_ms = ms;
    }

    /// Extra latency of list pages per record and requested section (after the page is read:
    /// its content is as of the request).
    pub fn set_per_record_section_us(&self, us: u64) {
        lock(&self.state.cfg).per_record_section_us = us;
    }

    /// Enrolments and deletions of computers after each served list page.
    pub fn set_fleet_churn(&self, enrol: usize, leave: usize) {
        let mut cfg = lock(&self.state.cfg);
        cfg.enrol_per_page = enrol;
        cfg.leave_per_page = leave;
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

    /// Sets how far Jamf's clock is off (see [`SimConfig::clock_offset_secs`]).
    pub fn set_clock_offset(&self, secs: i64) {
        lock(&self.state.cfg).clock_offset_secs = secs;
    }

    /// Specific devices submit inventory now (by the simulated server's clock).
    pub fn touch_ids(&self, ids: &[i64]) {
        let now = self.state.now();
        let mut inner = lock(&self.state.inner);
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
    /// As in Jamf, no inventory is submitted: its last inventory time stays as it was.
    pub fn unenroll_mobile(&self, id: i64) -> bool {
        let mut inner = lock(&self.state.inner);
        let Some(m) = inner.mobiles.get_mut(&id) else {
            return false;
        };
        m.managed = false;
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
        enrol(&mut lock(&self.state.inner), age)
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

    /// Serve this computer's record odd in this way from now on (`None`: as generated).
    pub fn set_odd(&self, id: i64, odd: Option<odd::Oddity>) {
        let mut inner = lock(&self.state.inner);
        match odd {
            Some(o) => inner.odd.insert(id, o),
            None => inner.odd.remove(&id),
        };
    }

    /// Serve this mobile device's Classic XML record odd in this way from now on.
    pub fn set_odd_mobile(&self, id: i64, odd: Option<odd::Oddity>) {
        let mut inner = lock(&self.state.inner);
        match odd {
            Some(o) => inner.odd_mobiles.insert(id, o),
            None => inner.odd_mobiles.remove(&id),
        };
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

    /// Leave this mobile device out of lists and list pages (its Classic record still
    /// answers): a listing glitch such as a mis-scoped site.
    pub fn unlist_mobile(&self, id: i64) {
        lock(&self.state.inner).unlisted_mobiles.insert(id);
    }

    /// Changes a computer as `edit` says and has it submit inventory now (report date and
    /// last contact move; nothing else changes unless `edit` changes it).
    pub fn edit_computer(&self, id: i64, edit: impl FnOnce(&mut SimComputer)) -> bool {
        let now = self.state.now();
        let mut inner = lock(&self.state.inner);
        let Some(c) = inner.fleet.get_mut(&id) else {
            return false;
        };
        edit(c);
        c.revision += 1;
        c.report_date = now;
        c.last_contact = now;
        inner.emit_computer("ComputerInventoryCompleted", id);
        true
    }

    /// Puts a computer in, or takes it out of, a static group, as an admin does in Jamf: no
    /// inventory, no webhook. `false` when the computer or the static group does not exist.
    pub fn set_computer_static_group(&self, id: i64, group_id: &str, member: bool) -> bool {
        let Some(&(gid, _, _)) = fleet::COMPUTER_GROUPS
            .iter()
            .find(|(g, _, smart)| *g == group_id && !smart)
        else {
            return false;
        };
        let mut inner = lock(&self.state.inner);
        let Some(c) = inner.fleet.get_mut(&id) else {
            return false;
        };
        c.static_groups.retain(|g| *g != gid);
        if member {
            c.static_groups.push(gid);
        }
        true
    }

    /// Puts a mobile device in, or takes it out of, the static group "Cart Pilot" (no
    /// inventory, no webhook).
    pub fn set_mobile_pilot(&self, id: i64, member: bool) -> bool {
        let mut inner = lock(&self.state.inner);
        let Some(m) = inner.mobiles.get_mut(&id) else {
            return false;
        };
        m.pilot = member;
        true
    }

    /// Changes a mobile device as `edit` says and has it submit inventory now.
    pub fn edit_mobile(&self, id: i64, edit: impl FnOnce(&mut mobile::SimMobile)) -> bool {
        let now = self.state.now();
        let mut inner = lock(&self.state.inner);
        let Some(m) = inner.mobiles.get_mut(&id) else {
            return false;
        };
        edit(m);
        m.revision += 1;
        m.last_inventory = now;
        inner.emit_mobile("MobileDeviceInventoryCompleted", id);
        true
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

/// A new computer (id above the highest) whose inventory report is `age` old.
pub(super) fn enrol(inner: &mut Inner, age: chrono::Duration) -> i64 {
    let id = inner.fleet.keys().next_back().copied().unwrap_or(0) + 1;
    let now = Utc::now();
    let mut c = SimComputer::generate(id, &mut inner.rng, now);
    c.report_date = now - age;
    inner.fleet.insert(id, c);
    inner.emit_computer("ComputerAdded", id);
    id
}

/// `count` random computers are deleted.
pub(super) fn leave(inner: &mut Inner, count: usize) {
    let ids: Vec<i64> = inner.fleet.keys().copied().collect();
    for id in pick(&mut inner.rng, ids, count) {
        inner.fleet.remove(&id);
    }
}

pub(super) fn touch(inner: &mut Inner, count: usize) -> Vec<i64> {
    // Called for every list page, nearly always with 0: no pass over the fleet for that.
    if count == 0 {
        return Vec::new();
    }
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
