//! The runner: the daemon's one owner of sync side effects.
//!
//! The scheduler, `POST /sync` and start-up catch-up only *request* runs. Requests go through
//! one queue to one executor that runs them one at a time, so two runs never race. A request
//! for a kind that is already queued or running is coalesced (dropped and reported), not
//! queued twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::store::{Kind, Store};
use crate::sync::{Engine, SyncOptions, Trigger};
use crate::telemetry::metric;

#[derive(Debug, Clone, Copy)]
pub struct RunRequest {
    pub kind: Kind,
    pub full: bool,
    pub trigger: Trigger,
}

/// Hands run requests to the executor.
#[derive(Debug, Clone)]
pub struct Runner {
    tx: mpsc::UnboundedSender<RunRequest>,
    /// Per kind: a run is queued or running.
    busy: Arc<[AtomicBool; 2]>,
}

impl Runner {
    pub fn new() -> (Runner, mpsc::UnboundedReceiver<RunRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Runner {
                tx,
                busy: Arc::new([AtomicBool::new(false), AtomicBool::new(false)]),
            },
            rx,
        )
    }

    /// Queues a run; `false` when one of that kind is already queued or running (coalesced)
    /// or the executor has stopped.
    pub fn request(&self, kind: Kind, full: bool, trigger: Trigger) -> bool {
        if self.busy[kind.index()].swap(true, Ordering::SeqCst) {
            return false;
        }
        let sent = self.tx.send(RunRequest {
            kind,
            full,
            trigger,
        });
        if sent.is_err() {
            self.busy[kind.index()].store(false, Ordering::SeqCst);
        }
        sent.is_ok()
    }

    pub fn is_busy(&self, kind: Kind) -> bool {
        self.busy[kind.index()].load(Ordering::SeqCst)
    }

    fn done(&self, kind: Kind) {
        self.busy[kind.index()].store(false, Ordering::SeqCst);
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
        let result = engine
            .sync(
                req.kind,
                SyncOptions {
                    full: req.full,
                    trigger: req.trigger,
                },
            )
            .await;
        runner.done(req.kind);
        metrics::gauge!(metric::LAST_RUN, "kind" => req.kind.as_str())
            .set(chrono::Utc::now().timestamp() as f64);
        if let Err(e) = result {
            tracing::error!(kind = req.kind.as_str(), error = %e, "run could not be recorded: database error");
        }
        engine.refresh_gauges(req.kind).await;
    }
}
