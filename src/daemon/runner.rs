//! The runner: the daemon's one owner of sync side effects.
//!
//! The scheduler, `POST /sync`, start-up catch-up and retries only *request* runs. Requests go
//! through one queue to one executor, which runs one operation per kind at a time: a kind's
//! sync, reconcile and group refresh never overlap (a refresh waits for its kind's sync), while
//! computers and mobile devices run beside each other through the instance's one limiter, so
//! the five connections serve whichever kind has work. A request for an operation and kind
//! that is already queued or running is coalesced (dropped and reported), not queued twice.
//!
//! Invariants: each run executes in a task of its own, so a panic inside it becomes a failed
//! run (its row is marked failed, the kind is free again) and the executor goes on; the
//! executor itself is supervised ([`super::supervise`]) and keeps its queue across restarts.
//! Health tracks each kind's run apart: one stuck run makes the executor stuck. Losing the
//! lease abandons every run in progress.
//! A failed or interrupted run is retried after `sync.retry_initial_secs`, doubling up to
//! `sync.retry_max_secs`, until one succeeds or the next scheduled run of it comes first;
//! the pending retry is published for `/status`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use super::supervise::{panic_message, Health};
use crate::config::SyncConfig;
use crate::domain::{Kind, RunKind, Trigger};
use crate::store::Store;
use crate::sync::reconcile::ReconcileOptions;
use crate::sync::{Engine, SyncOptions};
use crate::telemetry::metric;

/// The executor's name in health reports and restart metrics.
pub const EXECUTOR: &str = "executor";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Sync {
        full: bool,
    },
    Reconcile,
    /// A group membership refresh.
    Groups,
}

impl Op {
    /// How many operations [`Op::index`] tells apart.
    const COUNT: usize = 3;

    fn index(self) -> usize {
        match self {
            Op::Sync { .. } => 0,
            Op::Reconcile => 1,
            Op::Groups => 2,
        }
    }

    /// `computers`, `reconcile computers`, ...: the key of schedules and retries in `/status`.
    pub fn label(self, kind: Kind) -> String {
        match self {
            Op::Sync { .. } => kind.as_str().to_string(),
            Op::Reconcile => format!("reconcile {}", kind.as_str()),
            Op::Groups => format!("groups {}", kind.as_str()),
        }
    }

    /// The operation's name in `run_requests.op` (a request recorded for the holder).
    pub fn request_name(self) -> &'static str {
        match self {
            Op::Sync { full: false } => "sync",
            Op::Sync { full: true } => "full",
            Op::Reconcile => "reconcile",
            Op::Groups => "groups",
        }
    }

    /// The operation a recorded request names.
    pub fn from_request_name(name: &str) -> Option<Op> {
        [
            Op::Sync { full: false },
            Op::Sync { full: true },
            Op::Reconcile,
            Op::Groups,
        ]
        .into_iter()
        .find(|op| op.request_name() == name)
    }

    fn run_kind(self, kind: Kind) -> RunKind {
        match self {
            Op::Sync { .. } => RunKind::Sync(kind),
            Op::Reconcile => RunKind::Reconcile,
            Op::Groups => RunKind::Groups,
        }
    }
}

/// Next fire time per `kind` (`computers`, `mobile_devices`, `reconcile computers`, ...), set
/// by the scheduler and by the executor's retries, for `/status`.
pub type NextRuns = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

#[derive(Debug, Clone, Copy)]
pub struct RunRequest {
    pub kind: Kind,
    pub op: Op,
    pub trigger: Trigger,
}

/// Hands run requests to the executor.
#[derive(Debug, Clone)]
pub struct Runner {
    tx: mpsc::UnboundedSender<RunRequest>,
    /// Per operation and kind: one is queued or running.
    busy: Arc<[[AtomicBool; Kind::COUNT]; Op::COUNT]>,
}

impl Runner {
    pub fn new() -> (Runner, mpsc::UnboundedReceiver<RunRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Runner {
                tx,
                busy: Arc::new(Default::default()),
            },
            rx,
        )
    }

    /// Queues a sync; `false` when one of that kind is already queued or running (coalesced)
    /// or the executor has stopped.
    pub fn request(&self, kind: Kind, full: bool, trigger: Trigger) -> bool {
        self.request_op(kind, Op::Sync { full }, trigger)
    }

    /// Queues any operation, coalescing like [`Runner::request`].
    pub fn request_op(&self, kind: Kind, op: Op, trigger: Trigger) -> bool {
        let flag = &self.busy[op.index()][kind.index()];
        if flag.swap(true, Ordering::SeqCst) {
            return false;
        }
        let sent = self.tx.send(RunRequest { kind, op, trigger });
        if sent.is_err() {
            flag.store(false, Ordering::SeqCst);
        }
        sent.is_ok()
    }

    /// Whether a sync of this kind is queued or running.
    pub fn is_busy(&self, kind: Kind) -> bool {
        self.busy[0][kind.index()].load(Ordering::SeqCst)
    }

    /// Whether nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.busy
            .iter()
            .flatten()
            .all(|flag| !flag.load(Ordering::SeqCst))
    }

    fn done(&self, req: &RunRequest) {
        self.busy[req.op.index()][req.kind.index()].store(false, Ordering::SeqCst);
    }
}

/// What the executor runs requests with: the engine, or a stand-in in tests.
pub trait Executes: Send + Sync + 'static {
    /// Runs one request; whether it succeeded. `Err` when its outcome could not be recorded.
    fn execute(&self, req: RunRequest) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// The request's task panicked: record its run as failed.
    fn panicked(&self, req: RunRequest, message: &str) -> impl Future<Output = ()> + Send;
    /// Whether shutdown was asked for (an interrupted run is then not retried).
    fn stopping(&self) -> bool;
    /// Resolves once shutdown was asked for.
    fn stopped(&self) -> impl Future<Output = ()> + Send;
    /// The Jamf instance it runs for (the `jamf_instance` metrics label).
    fn instance(&self) -> String {
        String::new()
    }
}

impl<S: Store> Executes for Engine<S> {
    async fn execute(&self, req: RunRequest) -> anyhow::Result<bool> {
        let ok = match req.op {
            Op::Sync { full } => self
                .sync(req.kind, SyncOptions::new(full, req.trigger))
                .await?
                .succeeded(),
            Op::Reconcile => {
                let opts = ReconcileOptions {
                    dry_run: false,
                    force: false,
                    trigger: req.trigger,
                };
                self.reconcile(req.kind, opts).await?.status == crate::domain::RunStatus::Succeeded
            }
            Op::Groups => self
                .refresh_groups(req.kind, req.trigger)
                .await?
                .succeeded(),
        };
        self.refresh_gauges(req.kind).await;
        Ok(ok)
    }

    async fn panicked(&self, req: RunRequest, message: &str) {
        let run_kind = req.op.run_kind(req.kind);
        let error = format!("the run panicked: {message}");
        match self
            .store()
            .fail_running_runs(self.client().instance(), run_kind, &error)
            .await
        {
            Ok(n) => tracing::error!(kind = req.kind.as_str(), runs = n, %error, "run failed"),
            Err(e) => {
                tracing::error!(kind = req.kind.as_str(), %error, db_error = %e, "run failed; cannot record it")
            }
        }
        if let Op::Sync { .. } = req.op {
            metrics::counter!(metric::RUNS, "jamf_instance" => self.client().instance().to_string(), "kind" => req.kind.as_str(), "result" => "failed")
                .increment(1);
        }
    }

    fn stopping(&self) -> bool {
        Engine::stopping(self)
    }

    async fn stopped(&self) {
        Engine::stopped(self).await
    }

    fn instance(&self) -> String {
        self.client().instance().to_string()
    }
}

/// Resolves once the lease (if any) is lost; never without one, nor once its sender is gone
/// (the process is shutting down: the runs wind down themselves).
async fn lost(lease: Option<&mut watch::Receiver<Option<i64>>>) {
    let gone = match lease {
        Some(l) => l.wait_for(|held| held.is_none()).await.is_ok(),
        None => false,
    };
    if !gone {
        std::future::pending::<()>().await;
    }
}

/// Pending retries per label (`computers`, `reconcile computers`): when they fire, for
/// `/status`.
pub type NextRetries = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

/// The executor's state; it outlives any one executor task, so a restart keeps the queue.
pub struct Executor<E> {
    pub exec: Arc<E>,
    pub runner: Runner,
    pub rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<RunRequest>>,
    pub health: Arc<Health>,
    /// A run busy for longer than this is stuck (its deadline plus the shutdown grace).
    pub stuck_after: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Scheduled runs: a retry that would come after the next scheduled run is left to it.
    pub next_runs: NextRuns,
    pub next_retries: NextRetries,
    /// The task's name in health reports (`executor`, or `executor NAME` per instance).
    pub name: &'static str,
    /// With several processes on one database: the instance's lease epoch while this process
    /// holds it. Requests are run only while it is held, and a run is abandoned the moment it
    /// is lost (its next holder marks it interrupted).
    pub lease: Option<watch::Receiver<Option<i64>>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Requests taken from the queue whose kind is busy, per kind in arrival order; kept
    /// across restarts like the queue.
    pending: Mutex<[VecDeque<RunRequest>; Kind::COUNT]>,
}

impl<E: Executes> Executor<E> {
    pub fn new(
        exec: Arc<E>,
        runner: Runner,
        rx: mpsc::UnboundedReceiver<RunRequest>,
        health: Arc<Health>,
        cfg: &SyncConfig,
        next_runs: NextRuns,
    ) -> Self {
        Executor {
            exec,
            runner,
            rx: tokio::sync::Mutex::new(rx),
            health,
            stuck_after: Duration::from_secs(
                cfg.run_deadline_secs
                    .saturating_add(cfg.shutdown_grace_secs)
                    .saturating_add(300),
            ),
            retry_initial: Duration::from_secs(cfg.retry_initial_secs),
            retry_max: Duration::from_secs(cfg.retry_max_secs),
            next_runs,
            next_retries: Arc::new(Mutex::new(HashMap::new())),
            name: EXECUTOR,
            lease: None,
            failures: Mutex::new(HashMap::new()),
            pending: Mutex::new(Default::default()),
        }
    }

    /// Runs requests until the queue closes or shutdown is asked for: one at a time per kind,
    /// the kinds beside each other (a sync of computers beside a reconcile of mobile devices);
    /// a kind's requests run in the order they came. After shutdown was asked for or the queue
    /// closed, the runs in progress finish (they wind down themselves) before this returns.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.rx.lock().await;
        let mut lanes: JoinSet<(RunRequest, Result<anyhow::Result<bool>, JoinError>)> =
            JoinSet::new();
        let mut running: [Option<(RunRequest, AbortHandle)>; Kind::COUNT] = Default::default();
        loop {
            self.start_ready(&mut lanes, &mut running);
            let mut lease = self.lease.clone();
            let busy = running.iter().any(Option::is_some);
            tokio::select! {
                biased;
                _ = self.exec.stopped() => break,
                Some(done) = lanes.join_next(), if !lanes.is_empty() => {
                    if let Ok((req, result)) = done {
                        running[req.kind.index()] = None;
                        self.finish(req, result).await;
                    }
                }
                () = lost(lease.as_mut()), if busy => {
                    // Stop talking to Jamf at once: the next holder may start any moment.
                    for (req, abort) in running.iter_mut().filter_map(Option::take) {
                        abort.abort();
                        tracing::warn!(what = %req.op.label(req.kind), "lost the instance: the run in progress was abandoned");
                        self.runner.done(&req);
                        self.health.idle(self.name, req.kind.as_str());
                    }
                    lanes.abort_all();
                    while lanes.join_next().await.is_some() {}
                }
                req = rx.recv() => match req {
                    Some(r) => self.queue(r),
                    None => break,
                },
            }
        }
        while let Some(done) = lanes.join_next().await {
            if let Ok((req, result)) = done {
                running[req.kind.index()] = None;
                self.finish(req, result).await;
            }
        }
    }

    fn queue(&self, req: RunRequest) {
        if let Ok(mut pending) = self.pending.lock() {
            pending[req.kind.index()].push_back(req);
        }
    }

    /// Starts the next queued request of every kind that has none running.
    fn start_ready(
        &self,
        lanes: &mut JoinSet<(RunRequest, Result<anyhow::Result<bool>, JoinError>)>,
        running: &mut [Option<(RunRequest, AbortHandle)>; Kind::COUNT],
    ) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for (lane, queue) in running.iter_mut().zip(pending.iter_mut()) {
            while lane.is_none() {
                let Some(req) = queue.pop_front() else {
                    break;
                };
                if self.lease.as_ref().is_some_and(|l| l.borrow().is_none()) {
                    tracing::debug!(what = %req.op.label(req.kind), "not holding the instance: its holder runs it");
                    self.runner.done(&req);
                    continue;
                }
                self.health
                    .busy(self.name, req.kind.as_str(), self.stuck_after);
                let exec = self.exec.clone();
                // The run in a task of its own: its panic is a `JoinError` here, not the
                // executor's; the lane task only waits for it.
                let task = tokio::spawn(async move { exec.execute(req).await });
                *lane = Some((req, task.abort_handle()));
                lanes.spawn(async move { (req, task.await) });
            }
        }
    }

    /// Records how a run ended and frees its kind.
    async fn finish(&self, req: RunRequest, result: Result<anyhow::Result<bool>, JoinError>) {
        let ok = match result {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::error!(kind = req.kind.as_str(), error = %e, "run could not be recorded: database error");
                false
            }
            Err(e) => {
                self.exec.panicked(req, &panic_message(e)).await;
                false
            }
        };
        self.runner.done(&req);
        self.health.idle(self.name, req.kind.as_str());
        if let Op::Sync { .. } = req.op {
            // Syncs only: the alert comparing it with the last success is about syncs.
            metrics::gauge!(metric::LAST_RUN, "jamf_instance" => self.exec.instance(), "kind" => req.kind.as_str())
                .set(Utc::now().timestamp() as f64);
        }
        self.after(req, ok);
    }

    /// Clears the retry state of a run that succeeded; plans the retry of one that did not.
    fn after(&self, req: RunRequest, ok: bool) {
        let label = req.op.label(req.kind);
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if ok || self.retry_initial.is_zero() {
            failures.remove(&label);
            if let Ok(mut next) = self.next_retries.lock() {
                next.remove(&label);
            }
            return;
        }
        if self.exec.stopping() {
            return;
        }
        let n = failures.entry(label.clone()).or_insert(0);
        let delay = super::doubling(self.retry_initial, *n, self.retry_max);
        *n += 1;
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let scheduled = self
            .next_runs
            .lock()
            .ok()
            .and_then(|m| m.get(&label).copied());
        if scheduled.is_some_and(|s| s <= at) {
            tracing::info!(what = %label, "run failed; the next scheduled run comes before a retry would");
            if let Ok(mut next) = self.next_retries.lock() {
                next.remove(&label);
            }
            return;
        }
        tracing::warn!(what = %label, retry_in = ?delay, failures = *n, "run failed; retrying with backoff");
        if let Ok(mut next) = self.next_retries.lock() {
            next.insert(label.clone(), at);
        }
        let (runner, next_retries) = (self.runner.clone(), self.next_retries.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Still this retry's turn: no run in between succeeded or planned a later one.
            let due = next_retries
                .lock()
                .map(|mut m| {
                    let due = m.get(&label) == Some(&at);
                    if due {
                        m.remove(&label);
                    }
                    due
                })
                .unwrap_or(false);
            if due && !runner.request_op(req.kind, req.op, Trigger::Retry) {
                tracing::info!(what = %label, "retry coalesced with a run already queued or running");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Panics on its first request, fails the second, then succeeds.
    #[derive(Default)]
    struct Flaky {
        calls: AtomicU32,
        panics_recorded: AtomicU32,
    }

    impl Executes for Flaky {
        async fn execute(&self, _req: RunRequest) -> anyhow::Result<bool> {
            match self.calls.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("a bug in a run"),
                1 => Ok(false),
                _ => Ok(true),
            }
        }
        async fn panicked(&self, _req: RunRequest, message: &str) {
            assert_eq!(message, "a bug in a run");
            self.panics_recorded.fetch_add(1, Ordering::SeqCst);
        }
        fn stopping(&self) -> bool {
            false
        }
        async fn stopped(&self) {
            std::future::pending::<()>().await
        }
    }

    /// An executor over `flaky`, running, with the first request queued.
    fn start(
        flaky: &Arc<Flaky>,
        cfg: SyncConfig,
        next_runs: NextRuns,
    ) -> (Runner, Arc<Executor<Flaky>>, tokio::task::JoinHandle<()>) {
        let (runner, rx) = Runner::new();
        let executor = Arc::new(Executor::new(
            flaky.clone(),
            runner.clone(),
            rx,
            Arc::new(Health::default()),
            &cfg,
            next_runs,
        ));
        let task = tokio::spawn(executor.clone().run());
        assert!(runner.request(Kind::Computers, false, Trigger::Schedule));
        (runner, executor, task)
    }

    /// Waits until `flaky` ran `calls` times and the kind is free.
    async fn wait_for_calls(flaky: &Flaky, runner: &Runner, calls: u32) {
        for _ in 0..100 {
            if flaky.calls.load(Ordering::SeqCst) >= calls && !runner.is_busy(Kind::Computers) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn no_retry_pending(executor: &Executor<Flaky>) -> bool {
        executor
            .next_retries
            .lock()
            .map(|m| m.is_empty())
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_panicking_run_fails_frees_its_kind_and_failed_runs_are_retried() {
        let flaky = Arc::new(Flaky::default());
        let cfg = SyncConfig {
            retry_initial_secs: 1,
            retry_max_secs: 1,
            ..SyncConfig::default()
        };
        let (runner, executor, task) = start(&flaky, cfg, Arc::new(Mutex::new(HashMap::new())));
        // The panic is recorded as a failed run, and the retry after it fails too; the one
        // after that succeeds and no further retry is planned.
        wait_for_calls(&flaky, &runner, 3).await;
        assert_eq!(flaky.panics_recorded.load(Ordering::SeqCst), 1);
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            3,
            "panicked, failed, succeeded"
        );
        assert!(!runner.is_busy(Kind::Computers), "the kind is free again");
        assert!(
            no_retry_pending(&executor),
            "no retry pending after a success"
        );
        assert!(!task.is_finished(), "the executor survived the panic");
        task.abort();
    }

    /// Holds each run for a while and records which ran at once.
    #[derive(Default)]
    struct Slow {
        running: Mutex<Vec<RunRequest>>,
        /// The largest set of runs seen at once.
        widest: Mutex<Vec<RunRequest>>,
        done: AtomicU32,
    }

    impl Executes for Slow {
        async fn execute(&self, req: RunRequest) -> anyhow::Result<bool> {
            if let Ok(mut running) = self.running.lock() {
                running.push(req);
                if let Ok(mut widest) = self.widest.lock() {
                    if running.len() > widest.len() {
                        *widest = running.clone();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(mut running) = self.running.lock() {
                running.retain(|r| !(r.kind == req.kind && r.op == req.op));
            }
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }
        async fn panicked(&self, _req: RunRequest, _message: &str) {}
        fn stopping(&self) -> bool {
            false
        }
        async fn stopped(&self) {
            std::future::pending::<()>().await
        }
    }

    #[tokio::test]
    async fn the_kinds_run_beside_each_other_and_a_kinds_operations_in_turn() {
        let slow = Arc::new(Slow::default());
        let (runner, rx) = Runner::new();
        let executor = Arc::new(Executor::new(
            slow.clone(),
            runner.clone(),
            rx,
            Arc::new(Health::default()),
            &SyncConfig::default(),
            Arc::new(Mutex::new(HashMap::new())),
        ));
        let task = tokio::spawn(executor.clone().run());
        assert!(runner.request(Kind::Computers, false, Trigger::Schedule));
        assert!(runner.request(Kind::MobileDevices, false, Trigger::Schedule));
        assert!(runner.request_op(Kind::Computers, Op::Groups, Trigger::Schedule));
        assert!(runner.request_op(Kind::MobileDevices, Op::Reconcile, Trigger::Schedule));
        // Coalesced: a sync of computers is already queued.
        assert!(!runner.request(Kind::Computers, true, Trigger::Api));
        for _ in 0..100 {
            if slow.done.load(Ordering::SeqCst) == 4 && runner.is_idle() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(slow.done.load(Ordering::SeqCst), 4);
        assert!(runner.is_idle());
        let widest = slow.widest.lock().map(|w| w.clone()).unwrap_or_default();
        // Two at once, never more: one per kind.
        assert_eq!(widest.len(), 2, "{widest:?}");
        assert_ne!(widest[0].kind, widest[1].kind, "{widest:?}");
        // Both runs were marked busy and both idle again (unsupervised here, so not "up").
        let (_, details) = executor.health.report();
        assert_eq!(
            details["executor"]["busy_secs"],
            serde_json::Value::Null,
            "{details}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_retry_that_would_come_after_the_next_scheduled_run_is_left_to_it() {
        let flaky = Arc::new(Flaky::default());
        flaky.calls.store(1, Ordering::SeqCst); // the next call fails
        let next_runs: NextRuns = Arc::new(Mutex::new(HashMap::new()));
        next_runs
            .lock()
            .map(|mut m| {
                m.insert(
                    "computers".into(),
                    Utc::now() + chrono::Duration::seconds(30),
                )
            })
            .ok();
        let cfg = SyncConfig {
            retry_initial_secs: 60,
            ..SyncConfig::default()
        };
        let (runner, executor, task) = start(&flaky, cfg, next_runs);
        wait_for_calls(&flaky, &runner, 2).await;
        assert!(!runner.is_busy(Kind::Computers));
        assert!(
            no_retry_pending(&executor),
            "no retry planned past the next scheduled run"
        );
        task.abort();
    }
}
