//! The daemon's side of sharing a PostgreSQL database with other processes: it runs the lease
//! [`Coordinator`] (which instances this process holds), reacts when an instance is taken or
//! lost, and hands runs requested on any process (`run_requests`) to the holder's runner.
//!
//! Invariants: an instance's executor runs nothing and its webhook worker drains nothing
//! while it is not held (they watch the lease, see [`super::runner::Executor::lease`]); taking
//! an instance is followed by its start-up catch-up, as a process start would be; a recorded
//! request leaves the table only once the holder's runner has queued it, so a request is run
//! at least once even when its holder dies (a second run of a sync is harmless).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::runner::{Op, Runner};
use crate::config::Schedule;
use crate::domain::{Kind, Trigger};
use crate::jamf::JamfClient;
use crate::store::{Db, Store};
use crate::telemetry::metric;

/// How often the holder looks for runs requested on other processes.
const REQUEST_POLL: Duration = Duration::from_secs(1);

/// The schedules of one instance's syncs, for its catch-up when it is taken.
pub struct CatchUp {
    pub instance: String,
    pub runner: Runner,
    pub syncs: Vec<(Kind, Schedule)>,
    pub on_start: bool,
}

impl CatchUp {
    /// Requests a sync of every kind whose last success is older than its schedule's interval
    /// (or that never succeeded).
    pub async fn run(&self, db: &Db) {
        if !self.on_start {
            return;
        }
        let now = Utc::now();
        for (kind, schedule) in &self.syncs {
            let cursor = match db.cursor(&self.instance, *kind).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(instance = %self.instance, error = %e, "cannot read the cursor; no catch-up");
                    continue;
                }
            };
            let interval = schedule.interval(now).unwrap_or(chrono::Duration::days(1));
            if cursor.is_none_or(|c| now - c > interval) {
                tracing::info!(instance = %self.instance, kind = kind.as_str(), last_success = ?cursor, "catching up");
                self.runner.request(*kind, false, Trigger::Startup);
            }
        }
    }
}

/// Follows one instance's lease: metrics on every change, the catch-up on every take; on
/// losing it, closes the idle connections to Jamf (the next holder opens its own five).
pub async fn follow(
    db: Arc<Db>,
    client: Arc<JamfClient>,
    mut lease: watch::Receiver<Option<i64>>,
    catch_up: CatchUp,
) {
    let instance = catch_up.instance.clone();
    let held_gauge = || metrics::gauge!(metric::INSTANCE_HELD, "jamf_instance" => instance.clone());
    let epoch_gauge = || metrics::gauge!(metric::LEASE_EPOCH, "jamf_instance" => instance.clone());
    held_gauge().set(0.0);
    loop {
        let now = *lease.borrow_and_update();
        match now {
            Some(epoch) => {
                held_gauge().set(1.0);
                epoch_gauge().set(epoch as f64);
                metrics::counter!(metric::LEASE_CHANGES, "jamf_instance" => instance.clone(), "change" => "acquired")
                    .increment(1);
                super::check_jamf(client.clone());
                catch_up.run(&db).await;
            }
            None => held_gauge().set(0.0),
        }
        if lease.changed().await.is_err() {
            return;
        }
        if now.is_some() && lease.borrow().is_none() {
            client.drop_connections();
            metrics::counter!(metric::LEASE_CHANGES, "jamf_instance" => instance.clone(), "change" => "given_up")
                .increment(1);
        }
    }
}

/// Hands runs recorded in `run_requests` to the runners of the instances this process runs
/// (on PostgreSQL those it holds; on SQLite, whose file has one writing process, all of
/// them), until `stop` turns true. A run started for a request carries its id
/// (`sync_runs.request_id`), so whoever asked finds the answer.
pub async fn take_requests(
    db: Arc<Db>,
    runners: Vec<(String, Runner)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // On SQLite this process is the file's only writer: every request is for it, and one
        // for an instance it does not run is dropped (the command that asked then says so)
        // instead of waiting for as long as this process lives.
        let held = db.shared().map(|(_, fence)| fence.held_instances());
        let instances = match (&held, db.postgres()) {
            (Some(held), _) => Some(held.as_slice()),
            (None, Some(_)) => Some(&[][..]),
            (None, None) => None,
        };
        match db.waiting_requests(instances).await {
            Ok(rows) => {
                for row in rows {
                    let runner = runners.iter().find(|(i, _)| *i == row.instance);
                    let (Some((_, runner)), Some(kind), Some(op)) = (
                        runner,
                        Kind::parse(&row.kind),
                        Op::from_request_name(&row.op),
                    ) else {
                        tracing::warn!(request = row.id, instance = %row.instance, kind = %row.kind, op = %row.op, "dropping a run request this process cannot run");
                        let _ = db.take_request(row.id).await;
                        continue;
                    };
                    let trigger = Trigger::Request {
                        id: row.id,
                        cli: row.trigger == Trigger::Cli.as_str(),
                    };
                    // A kind busy here keeps its request waiting: it runs after the current run.
                    if runner.request_op(kind, op, trigger) {
                        tracing::info!(instance = %row.instance, what = %op.label(kind), trigger = %row.trigger, "running a requested run");
                        if let Err(e) = db.take_request(row.id).await {
                            tracing::warn!(error = %e, "cannot remove a queued run request; it may run twice");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read run requests; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REQUEST_POLL) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// Resolves once `lease` is lost or `shutdown` turns true; `true` for shutdown.
pub async fn lost_or_shutdown(
    lease: &mut watch::Receiver<Option<i64>>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = super::until_shutdown(shutdown) => true,
        _ = lease.wait_for(|held| held.is_none()) => false,
    }
}
