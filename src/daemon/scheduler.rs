//! The scheduler: turns cron expressions into run *requests*; it never runs a sync itself.
//!
//! # Design
//! tokio-cron-scheduler's time-zone-aware jobs keep the UTC offset they were created with, so a
//! job created in winter fires an hour off after the switch to summer time. Instead, each kind
//! gets a chain of one-shot jobs: `Schedule::next_after` computes the next fire time with
//! croner in the configured `chrono-tz` zone (DST-correct), the one-shot job fires at that
//! instant, requests the run and schedules the next link. The next fire times are published for
//! `/status`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::runner::{NextRuns, Op, Runner};
use crate::config::Schedule;
use crate::domain::{Kind, Trigger};

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
        self.op.label(self.kind)
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
