//! The scheduler: turns cron expressions into run *requests*; it never runs a sync itself.
//!
//! # Design
//! tokio-cron-scheduler's time-zone-aware jobs keep the UTC offset they were created with, so a
//! job created in winter fires an hour off after the switch to summer time. Instead, each kind
//! gets a chain of one-shot jobs: [`Schedule::next_after`] computes the next fire time with
//! croner in the configured `chrono-tz` zone (DST-correct), the one-shot job fires at that
//! instant, requests the run and schedules the next link. The next fire times are published for
//! `/status`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::runner::{Op, Runner};
use crate::store::Kind;
use crate::sync::Trigger;

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
    pub expr: String,
}

impl Schedule {
    /// Parses a cron expression (5 or 6 fields) and an IANA time zone name. The error names
    /// the config key and the problem.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, (String, String)> {
        let cron = croner::Cron::from_str(expr.trim()).map_err(|e| {
            (
                "sync.schedule".to_string(),
                format!("not a cron expression ({e}): {expr:?}"),
            )
        })?;
        let tz = Tz::from_str(tz.trim()).map_err(|_| {
            (
                "sync.timezone".to_string(),
                format!("unknown time zone {tz:?}; use an IANA name such as Europe/Berlin"),
            )
        })?;
        Ok(Schedule {
            cron,
            tz,
            expr: expr.trim().to_string(),
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The gap between the next two fire times: what "the schedule interval" means for
    /// start-up catch-up.
    pub fn interval(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let a = self.next_after(now)?;
        let b = self.next_after(a)?;
        Some(b - a)
    }
}

/// Next fire time per `kind` (`computers`, `mobile_devices`, `reconcile computers`, ...),
/// for `/status`.
pub type NextRuns = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

/// Starts one chain of one-shot jobs per scheduled operation and kind.
pub async fn start(
    schedules: Vec<(Kind, Op, Schedule)>,
    runner: Runner,
    next_runs: NextRuns,
) -> Result<JobScheduler, JobSchedulerError> {
    let sched = JobScheduler::new().await?;
    for (kind, op, schedule) in schedules {
        schedule_next(
            sched.clone(),
            Planned { kind, op },
            Arc::new(schedule),
            runner.clone(),
            next_runs.clone(),
        )
        .await?;
    }
    sched.start().await?;
    Ok(sched)
}

/// A scheduled operation on a kind.
#[derive(Debug, Clone, Copy)]
struct Planned {
    kind: Kind,
    op: Op,
}

impl Planned {
    fn label(&self) -> String {
        match self.op {
            Op::Sync { .. } => self.kind.as_str().to_string(),
            Op::Reconcile => format!("reconcile {}", self.kind.as_str()),
        }
    }
}

fn schedule_next(
    sched: JobScheduler,
    planned: Planned,
    schedule: Arc<Schedule>,
    runner: Runner,
    next_runs: NextRuns,
) -> Pin<Box<dyn Future<Output = Result<(), JobSchedulerError>> + Send>> {
    Box::pin(async move {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(what = %planned.label(), expr = %schedule.expr, "schedule never fires again");
            return Ok(());
        };
        if let Ok(mut map) = next_runs.lock() {
            map.insert(planned.label(), next);
        }
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        let job = Job::new_one_shot_async(wait, move |_id, locked| {
            let schedule = schedule.clone();
            let runner = runner.clone();
            let next_runs = next_runs.clone();
            Box::pin(async move {
                if !runner.request_op(planned.kind, planned.op, Trigger::Schedule) {
                    tracing::info!(
                        what = %planned.label(),
                        "scheduled run coalesced with one already queued or running"
                    );
                }
                if let Err(e) = schedule_next(locked, planned, schedule, runner, next_runs).await {
                    tracing::error!(what = %planned.label(), error = %e, "cannot schedule the next run");
                }
            })
        })?;
        sched.add(job).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn five_and_six_fields() {
        let s = Schedule::parse("0 2 * * *", "UTC").map_err(|e| e.1);
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(utc("2026-11-24T01:00:00Z")),
            Some(utc("2026-11-24T02:00:00Z"))
        );
        let s = Schedule::parse("*/2 * * * * *", "UTC").unwrap_or_else(|e| panic!("{}", e.1));
        assert_eq!(
            s.next_after(utc("2026-11-24T01:00:00Z")),
            Some(utc("2026-11-24T01:00:02Z"))
        );
        assert_eq!(
            s.interval(utc("2026-11-24T01:00:00Z")),
            Some(chrono::Duration::seconds(2))
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            Schedule::parse("nope", "UTC").err().map(|e| e.0).as_deref(),
            Some("sync.schedule")
        );
        assert_eq!(
            Schedule::parse("0 2 * * *", "Mars/Base")
                .err()
                .map(|e| e.0)
                .as_deref(),
            Some("sync.timezone")
        );
    }

    #[test]
    fn daylight_saving_boundaries_keep_local_time() {
        // 04:00 in Berlin: CET is UTC+1, CEST is UTC+2; 2026 switches on March 29 and
        // October 25.
        let s =
            Schedule::parse("0 0 4 * * *", "Europe/Berlin").unwrap_or_else(|e| panic!("{}", e.1));
        assert_eq!(
            s.next_after(utc("2026-03-27T12:00:00Z")),
            Some(utc("2026-03-28T03:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-23T12:00:00Z")),
            Some(utc("2026-10-24T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T03:00:00Z"))
        );
    }
}
