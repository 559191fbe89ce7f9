//! Supervision of the daemon's long-running tasks (the run executor, the webhook worker) and
//! the health they add up to.
//!
//! Invariants: a supervised task that panics or returns before shutdown is restarted with
//! backoff (1 s doubling to 60 s, reset after 10 minutes of good running) and counted in
//! `jamf_sync_task_restarts_total`; while it is down, or while it is busy past its own limit
//! (a run past its deadline and grace), [`Health::report`] is unhealthy, so `/healthz` never
//! answers 200 for a dead or stuck task. Health starts empty: before the tasks exist (the
//! database still connecting) the process is alive and says so.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::telemetry::metric;

const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A task that ran this long before dying starts its backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
struct TaskHealth {
    up: bool,
    restarts: u64,
    last_error: Option<String>,
    /// The items it works on (a run per kind), each since when and how long it may take
    /// before the task counts as stuck.
    busy: BTreeMap<String, (Instant, Duration)>,
}

/// The health of every supervised task, plus extra checks (the scheduler's chain).
#[derive(Debug, Default)]
pub struct Health {
    tasks: Mutex<BTreeMap<&'static str, TaskHealth>>,
}

impl Health {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut TaskHealth)) {
        if let Ok(mut tasks) = self.tasks.lock() {
            f(tasks.entry(name).or_default());
        }
    }

    /// The task started working on `item` (one of several it may work on at once), which
    /// should be done within `limit`.
    pub fn busy(&self, name: &'static str, item: &str, limit: Duration) {
        self.update(name, |t| {
            t.busy.insert(item.to_string(), (Instant::now(), limit));
        });
    }

    /// The task finished `item`.
    pub fn idle(&self, name: &'static str, item: &str) {
        self.update(name, |t| {
            t.busy.remove(item);
        });
    }

    /// Whether every task is up and none is stuck, and the details per task.
    pub fn report(&self) -> (bool, Value) {
        let Ok(tasks) = self.tasks.lock() else {
            return (false, json!({"error": "health state unavailable"}));
        };
        let mut healthy = true;
        let mut out = serde_json::Map::new();
        for (name, t) in tasks.iter() {
            let busy_for = t.busy.values().map(|(since, _)| since.elapsed()).max();
            let stuck = t
                .busy
                .values()
                .any(|(since, limit)| since.elapsed() > *limit);
            let state = match (t.up, stuck) {
                (false, _) => "down",
                (true, true) => "stuck",
                (true, false) => "up",
            };
            healthy &= state == "up";
            out.insert(
                (*name).to_string(),
                json!({
                    "state": state,
                    "restarts": t.restarts,
                    "last_error": t.last_error,
                    "busy_secs": busy_for.map(|d| d.as_secs()),
                }),
            );
        }
        (healthy, Value::Object(out))
    }
}

/// What a `JoinError` says: the panic's message when it was a panic.
pub fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Runs the task `make` builds, restarting it whenever it panics or returns before
/// `shutdown` turns true; returns after shutdown.
pub async fn supervise<F, Fut>(
    name: &'static str,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    metrics::counter!(metric::TASK_RESTARTS, "task" => name).increment(0);
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        health.update(name, |t| t.up = true);
        let started = Instant::now();
        let result = tokio::spawn(make()).await;
        if *shutdown.borrow() {
            health.update(name, |t| t.up = false);
            return;
        }
        let why = match result {
            Ok(()) => "the task returned before shutdown".to_string(),
            Err(e) => panic_message(e),
        };
        if started.elapsed() > STABLE_AFTER {
            delay = FIRST_RESTART_DELAY;
        }
        tracing::error!(task = name, error = %why, restart_in = ?delay, "task died; restarting it");
        metrics::counter!(metric::TASK_RESTARTS, "task" => name).increment(1);
        health.update(name, |t| {
            t.up = false;
            t.busy.clear();
            t.restarts += 1;
            t.last_error = Some(why);
        });
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_reported_down_meanwhile() {
        let health = Arc::new(Health::default());
        let (tx, rx) = watch::channel(false);
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let supervisor = tokio::spawn(supervise("worker", health.clone(), rx, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom in the first run");
                }
                std::future::pending::<()>().await
            }
        }));
        // Let the first instance panic; the supervisor now waits out its backoff.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (healthy, details) = health.report();
        assert!(!healthy, "a dead task is unhealthy: {details}");
        assert_eq!(details["worker"]["state"], "down");
        assert_eq!(details["worker"]["last_error"], "boom in the first run");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted once");
        let (healthy, details) = health.report();
        assert!(healthy, "{details}");
        assert_eq!(details["worker"]["restarts"], 1);
        tx.send(true).ok();
        supervisor.abort();
    }

    #[tokio::test]
    async fn a_task_busy_past_its_limit_is_stuck() {
        let health = Health::default();
        health.update("executor", |t| t.up = true);
        health.busy("executor", "computers", Duration::from_secs(3600));
        assert!(health.report().0);
        // A second item beside the first; it alone runs past its limit.
        health.busy("executor", "mobile_devices", Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (healthy, details) = health.report();
        assert!(!healthy);
        assert_eq!(details["executor"]["state"], "stuck");
        // The item that is fine finishing does not clear the stuck one.
        health.idle("executor", "computers");
        assert!(!health.report().0);
        health.idle("executor", "mobile_devices");
        assert!(health.report().0);
    }
}
