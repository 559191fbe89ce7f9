//! The daemon's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status`, `POST /sync`,
//! and `POST /webhooks/jamf[/NAME]` when webhooks are on (see [`super::webhooks`]), over every
//! Jamf instance the daemon serves.
//!
//! Invariants: handlers only read state or *request* runs through the [`Runner`] (on a shared
//! PostgreSQL database: through `run_requests`, for the instance's holder); `POST /sync`
//! is off unless an admin token is configured, and the token is compared in constant time;
//! nothing secret is ever rendered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::credentials::secret_eq;
use super::runner::NextRuns;
use super::runner::{NextRetries, Op, Runner};
use super::supervise::Health;
use super::webhooks;
use crate::domain::{Kind, Trigger};
use crate::store::lease::{self, LeaseRow};
use crate::store::{Db, Store};
use crate::sync::Engine;
use crate::telemetry::metric;

/// What `/readyz` reports until each part is ready.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub database: Result<(), String>,
}

/// One Jamf instance's part of the daemon, as the handlers see it; filled in as it starts.
pub struct InstanceState {
    pub instance: String,
    pub kinds: Vec<Kind>,
    pub engine: OnceLock<Arc<Engine<Db>>>,
    pub runner: OnceLock<Runner>,
    pub next_runs: NextRuns,
    pub next_retries: OnceLock<NextRetries>,
    /// Set when the instance's webhooks are enabled.
    pub webhooks: Option<Arc<webhooks::Receiver>>,
    /// On a shared database: the instance's lease epoch while this process holds it.
    pub lease: OnceLock<tokio::sync::watch::Receiver<Option<i64>>>,
}

impl InstanceState {
    pub fn new(instance: String, kinds: Vec<Kind>) -> Self {
        InstanceState {
            instance,
            kinds,
            engine: OnceLock::new(),
            runner: OnceLock::new(),
            next_runs: Arc::new(Mutex::new(HashMap::new())),
            next_retries: OnceLock::new(),
            webhooks: None,
            lease: OnceLock::new(),
        }
    }

    /// Enables `POST /webhooks/jamf[/NAME]` for this instance.
    pub fn with_webhooks(mut self, receiver: Arc<webhooks::Receiver>) -> Self {
        self.webhooks = Some(receiver);
        self
    }
}

/// Shared by the handlers; parts are filled in as the daemon starts.
pub struct AppState {
    pub instances: Vec<Arc<InstanceState>>,
    pub prometheus: Option<PrometheusHandle>,
    pub admin_token: Option<SecretString>,
    pub readiness: Mutex<Readiness>,
    /// The database, once connected.
    pub db: OnceLock<Arc<Db>>,
    pub health: Arc<Health>,
    /// When a scrape last read the database's gauges: scrapes within [`GAUGES_FROM_DB_EVERY`]
    /// of it render what it read, and one scrape at a time reads (a flood of scrapes of an
    /// unauthenticated endpoint costs the database nothing more).
    gauges_read: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// How often `/metrics` reads the gauges that come from the database, at most.
const GAUGES_FROM_DB_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl AppState {
    pub fn new(
        instances: Vec<Arc<InstanceState>>,
        prometheus: Option<PrometheusHandle>,
        admin_token: Option<SecretString>,
    ) -> Self {
        AppState {
            instances,
            prometheus,
            admin_token,
            readiness: Mutex::new(Readiness {
                database: Err("connecting".into()),
            }),
            db: OnceLock::new(),
            health: Arc::new(Health::default()),
            gauges_read: tokio::sync::Mutex::new(None),
        }
    }

    pub fn set_database(&self, r: Result<(), String>) {
        if let Ok(mut g) = self.readiness.lock() {
            g.database = r;
        }
    }

    fn receivers(&self) -> Vec<Arc<webhooks::Receiver>> {
        self.instances
            .iter()
            .filter_map(|i| i.webhooks.clone())
            .collect()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let hooks: Vec<_> = state
        .receivers()
        .into_iter()
        .filter(|w| !w.own_listener)
        .collect();
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sync", post(trigger))
        .with_state(state);
    if !hooks.is_empty() {
        app = app.merge(webhooks::routes(&hooks));
    }
    app
}

/// What a connection over `server.max_connections` is served: the probes only, so they
/// answer while clients (a flood of webhooks, bodies trickling in) hold every normal
/// connection; anything else is told to come back.
pub fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "connection limit reached (server.max_connections); retry\n",
            )
        })
        .with_state(state)
}

/// The webhook endpoints alone, for `webhooks.listen` (plus `/healthz` for load balancers).
pub fn webhook_router(state: Arc<AppState>) -> Router {
    let hooks = state.receivers();
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
        .merge(webhooks::routes(&hooks))
}

/// How late a scheduled run may be before the scheduler counts as stuck.
const SCHEDULE_SLACK: chrono::Duration = chrono::Duration::minutes(5);

/// Alive: every supervised task is up and not stuck, and no scheduled run is overdue. Says
/// which part is not, never where anything is.
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let (mut healthy, tasks) = s.health.report();
    let now = chrono::Utc::now();
    let several = s.instances.len() > 1;
    let mut overdue: Vec<String> = Vec::new();
    for i in &s.instances {
        if let Ok(m) = i.next_runs.lock() {
            overdue.extend(m.iter().filter(|(_, at)| **at + SCHEDULE_SLACK < now).map(
                |(what, _)| match several {
                    true => format!("{} {what}", i.instance),
                    false => what.clone(),
                },
            ));
        }
    }
    healthy &= overdue.is_empty();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"healthy": healthy, "tasks": tasks, "overdue_schedules": overdue});
    (code, Json(body)).into_response()
}

/// Ready: this process serves (the database answers, its tasks are alive). Jamf being up is
/// not part of it (one instance's bad credentials must not take the others' webhooks out of
/// a load balancer); each instance's Jamf state is in the body, in `/status` and in metrics.
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    // Unauthenticated: says what is not ready, never where it is (user, host, database); the
    // log has the details.
    let connected = s
        .readiness
        .lock()
        .map(|r| r.database.is_ok())
        .unwrap_or(false);
    let mut database = false;
    if let (true, Some(db), Some(first)) = (connected, s.db.get(), s.instances.first()) {
        // Reachable and migrated: a query on a table the migrations create.
        let probe = tokio::time::timeout(
            Duration::from_secs(2),
            db.count_devices(&first.instance, Kind::Computers),
        )
        .await;
        database = match probe {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: database probe failed");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: database probe got no answer within 2 s");
                false
            }
        };
    }
    // Every instance started (engine and runner in place): requests can be taken.
    let started = s
        .instances
        .iter()
        .all(|i| i.runner.get().is_some() && i.engine.get().is_some());
    let (alive, _) = s.health.report();
    let tasks = alive && started;
    let jamf: serde_json::Map<String, serde_json::Value> = s
        .instances
        .iter()
        .map(|i| (i.instance.clone(), json!(jamf_state(i))))
        .collect();
    let ready = database && tasks;
    let mut body = json!({
        "ready": ready,
        "database": if database { "ok" } else { "unreachable" },
        "tasks": match (started, alive) {
            (false, _) => "starting",
            (true, false) => "not all alive",
            (true, true) => "ok",
        },
        "jamf": jamf,
    });
    if let [only] = s.instances.as_slice() {
        body["jamf"] = json!(jamf_state(only));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `ok`, or why an instance's Jamf is not usable yet.
fn jamf_state(i: &InstanceState) -> &'static str {
    let elsewhere = i.lease.get().is_some_and(|l| l.borrow().is_none());
    match i.engine.get() {
        None => "not started",
        Some(e) if e.client().has_authenticated() => "ok",
        // Only the holder talks to Jamf.
        Some(_) if elsewhere => "not held by this process",
        Some(_) => "authentication has not succeeded yet",
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    // Another scrape reading the database now, or one a moment ago: its figures are fresh.
    if let Ok(mut last) = s.gauges_read.try_lock() {
        if last.is_none_or(|at| at.elapsed() >= GAUGES_FROM_DB_EVERY) {
            gauges_from_db(&s).await;
            *last = Some(std::time::Instant::now());
        }
    }
    render(&s)
}

/// The gauges that come from the database (stored devices, cursor lag; on a shared database
/// the last runs and the queue depth, which another process may be moving).
async fn gauges_from_db(s: &AppState) {
    let shared = s.db.get().is_some_and(|db| db.shared().is_some());
    for i in &s.instances {
        if let Some(engine) = i.engine.get() {
            for kind in &i.kinds {
                engine.refresh_gauges(*kind).await;
            }
            // Another process may be the one running it: the last success is in the database.
            if shared {
                super::last_runs_from_db(engine.store(), &i.instance, &i.kinds, None).await;
                if i.webhooks.is_some() {
                    if let Ok(n) = engine.store().webhook_queue_depth(&i.instance).await {
                        metrics::gauge!(metric::WEBHOOK_QUEUE_DEPTH, "jamf_instance" => i.instance.clone())
                            .set(n as f64);
                    }
                }
            }
        }
    }
}

fn render(s: &AppState) -> Response {
    match &s.prometheus {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let (holder, leases) = match s.db.get().and_then(|db| db.shared()) {
        Some((pool, fence)) => (
            Some(fence.holder().to_string()),
            lease::leases(pool).await.ok(),
        ),
        None => (None, None),
    };
    let mut instances = Vec::new();
    for i in &s.instances {
        let mut one = instance_status(i).await;
        if let Some(holder) = &holder {
            let row = leases
                .as_ref()
                .and_then(|l| l.iter().find(|r| r.instance == i.instance));
            one["lease"] = lease_status(row, holder);
        }
        instances.push(one);
    }
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "tasks": s.health.report().1,
    });
    if let Some(holder) = holder {
        body["holder"] = json!(holder);
    }
    // The first instance also at the top level: what a one-instance deployment always saw.
    if let Some(first) = instances.first() {
        for key in ["instance", "kinds", "webhooks", "jamf", "lease"] {
            body[key] = first[key].clone();
        }
    }
    body["instances"] = json!(instances);
    Json(body).into_response()
}

/// Who holds an instance: `held_here` when this process does.
fn lease_status(row: Option<&LeaseRow>, holder: &str) -> serde_json::Value {
    match row {
        Some(r) => json!({
            "holder": if r.live { Some(&r.holder) } else { None },
            "epoch": r.epoch,
            "expires_at": r.expires_at,
            "held_here": r.live && r.holder == holder,
        }),
        None => json!({"holder": null, "epoch": null, "expires_at": null, "held_here": false}),
    }
}

async fn instance_status(s: &InstanceState) -> serde_json::Value {
    let next = s.next_runs.lock().map(|m| m.clone()).unwrap_or_default();
    let retries = s
        .next_retries
        .get()
        .and_then(|r| r.lock().ok().map(|m| m.clone()))
        .unwrap_or_default();
    let mut kinds = Vec::new();
    let (runs, cursors) = match s.engine.get() {
        Some(engine) => (
            engine.store().recent_runs(&s.instance, 50).await.ok(),
            engine.store().cursors(&s.instance).await.ok(),
        ),
        None => (None, None),
    };
    for kind in &s.kinds {
        let name = kind.as_str();
        let last_run = runs
            .as_ref()
            .and_then(|r| r.iter().find(|r| r.kind == name).cloned());
        let last_success = runs.as_ref().and_then(|r| {
            r.iter()
                .find(|r| r.kind == name && r.status == "succeeded")
                .cloned()
        });
        let cursor = cursors
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.kind == name).map(|c| c.cursor));
        // Bounded: an unauthenticated endpoint never reads the whole table.
        let failing = match s.engine.get() {
            Some(engine) => engine
                .store()
                .failing_sample(&s.instance, *kind, 10)
                .await
                .ok(),
            None => None,
        };
        kinds.push(json!({
            "kind": name,
            "running": s.runner.get().is_some_and(|r| r.is_busy(*kind)),
            "last_run": last_run,
            "last_success": last_success,
            "cursor": cursor,
            "next_scheduled": next.get(name),
            "next_reconcile": next.get(&format!("reconcile {name}")),
            "next_retry": retries.get(name),
            // Devices Jamf would not give; every run retries them.
            "failing_devices": failing.as_ref().map(|f| f.0),
            "failing_sample": failing.map(|f| f.1),
            "next_reconcile_retry": retries.get(&format!("reconcile {name}")),
            "next_groups": next.get(&format!("groups {name}")),
            "next_groups_retry": retries.get(&format!("groups {name}")),
        }));
    }
    let webhooks = match (&s.webhooks, s.engine.get()) {
        (Some(_), Some(engine)) => json!({
            "enabled": true,
            "queue_depth": engine.store().webhook_queue_depth(&s.instance).await.ok(),
        }),
        (Some(_), None) => json!({"enabled": true, "queue_depth": null}),
        (None, _) => json!({"enabled": false}),
    };
    json!({
        "instance": s.instance,
        "jamf": jamf_state(s),
        "kinds": kinds,
        "webhooks": webhooks,
    })
}

#[derive(Debug, Deserialize)]
struct TriggerQuery {
    /// `computers` or `mobile-devices`; both when absent.
    kind: Option<String>,
    /// One instance; every instance when absent.
    instance: Option<String>,
    #[serde(default)]
    full: bool,
}

async fn trigger(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TriggerQuery>,
) -> Response {
    let Some(expected) = &s.admin_token else {
        return (
            StatusCode::NOT_FOUND,
            "POST /sync is off: configure server.admin_token to enable it\n",
        )
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !secret_eq(given.as_bytes(), expected.expose_secret().as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "bad or missing bearer token\n").into_response();
    }
    let chosen: Vec<&Arc<InstanceState>> = s
        .instances
        .iter()
        .filter(|i| q.instance.as_deref().is_none_or(|n| n == i.instance))
        .collect();
    if chosen.is_empty() {
        let known: Vec<&str> = s.instances.iter().map(|i| i.instance.as_str()).collect();
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown instance; configured: {}\n", known.join(", ")),
        )
            .into_response();
    }
    let only: Option<Kind> = match q.kind.as_deref().map(|name| (name, Kind::parse_any(name))) {
        None => None,
        Some((_, Some(kind))) => Some(kind),
        Some((other, None)) => {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.cli_name()).collect();
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown kind {other:?}; use {}\n", known.join(" or ")),
            )
                .into_response();
        }
    };
    let several = s.instances.len() > 1;
    let mut accepted = Vec::new();
    let mut coalesced = Vec::new();
    for i in chosen {
        let Some(runner) = i.runner.get() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database not connected yet\n",
            )
                .into_response();
        };
        let kinds = i.kinds.iter().filter(|k| only.is_none_or(|o| o == **k));
        for kind in kinds {
            let name = match several {
                true => format!("{} {}", i.instance, kind.as_str()),
                false => kind.as_str().to_string(),
            };
            let op = Op::Sync { full: q.full };
            let shared =
                s.db.get()
                    .and_then(|db| db.shared().map(|(_, fence)| (db, fence)));
            let queued = match shared {
                // Shared database: recorded for whichever process holds the instance.
                Some((db, fence)) => match db
                    .request_run(
                        &i.instance,
                        kind.as_str(),
                        op.request_name(),
                        Trigger::Api.as_str(),
                        fence.holder(),
                    )
                    .await
                {
                    Ok((_, new)) => new,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record a run request");
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cannot record the request: database unreachable\n",
                        )
                            .into_response();
                    }
                },
                None => runner.request_op(*kind, op, Trigger::Api),
            };
            if queued {
                accepted.push(name);
            } else {
                coalesced.push(name);
            }
        }
    }
    let code = if accepted.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    (
        code,
        Json(json!({"accepted": accepted, "coalesced": coalesced})),
    )
        .into_response()
}
