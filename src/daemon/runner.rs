//! The runner: the daemon's one owner of sync side effects.
//!
//! The scheduler, `POST /sync` and start-up catch-up only *request* runs. Requests go through
//! one queue to one executor that runs them one at a time, so two runs never race. A request
//! for a kind that is already queued or running is coalesced (dropped and reported), not
//! queued twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::domain::{Kind, Trigger};
use crate::store::Store;
use crate::sync::reconcile::ReconcileOptions;
use crate::sync::{Engine, SyncOptions};
use crate::telemetry::metric;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Sync { full: bool },
    Reconcile,
}

impl Op {
    fn index(self) -> usize {
        match self {
            Op::Sync { .. } => 0,
            Op::Reconcile => 1,
        }
    }
}

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
    busy: Arc<[[AtomicBool; 2]; 2]>,
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

    fn done(&self, req: &RunRequest) {
        self.busy[req.op.index()][req.kind.index()].store(false, Ordering::SeqCst);
    }
}

/// Runs requests one at a time until the queue closes or the engine is stopping.
pub async fn execute<S: Store>(
    engine: Arc<Engine<S>>,
    runner: Runner,
    mut rx: mpsc::UnboundedReceiver<RunRequest>,
) {
    loop {
        let req = tokio::select! {
            biased;
            _ = engine.stopped() => break,
            req = rx.recv() => match req {
                Some(r) => r,
                None => break,
            },
        };
        let result = match req.op {
            Op::Sync { full } => engine
                .sync(req.kind, SyncOptions::new(full, req.trigger))
                .await
                .map(|_| ()),
            Op::Reconcile => engine
                .reconcile(
                    req.kind,
                    ReconcileOptions {
                        dry_run: false,
                        force: false,
                        trigger: req.trigger,
                    },
                )
                .await
                .map(|_| ()),
        };
        runner.done(&req);
        metrics::gauge!(metric::LAST_RUN, "kind" => req.kind.as_str())
            .set(chrono::Utc::now().timestamp() as f64);
        if let Err(e) = result {
            tracing::error!(kind = req.kind.as_str(), error = %e, "run could not be recorded: database error");
        }
        engine.refresh_gauges(req.kind).await;
    }
}
