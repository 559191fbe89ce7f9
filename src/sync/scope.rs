//! One run's bookkeeping, the same for a sync, a reconcile and a group refresh: pacing starts
//! warm, the `sync_runs` row is opened before the first request to Jamf and closed with how
//! the run ended, and pacing's memory is kept for the next process. A dry run opens no row.
//!
//! Invariant: a run that opened a row closes it (succeeded, failed or interrupted) unless the
//! database itself fails; a row left `running` by a crash is marked `interrupted` at the next
//! start (`Store::interrupt_stale_runs`).

use chrono::{DateTime, Utc};

use super::Engine;
use crate::domain::{RunCounts, RunKind, RunStatus, Trigger};
use crate::store::{NewRun, RunEnd, Store, StoreError};

/// A run being recorded.
#[derive(Debug, Clone)]
pub(crate) struct RunScope {
    /// The `sync_runs` row; `None` for a dry run.
    pub id: Option<i64>,
    pub kind: RunKind,
    pub instance: String,
}

/// How a run ended, as its row records it.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub status: RunStatus,
    pub counts: RunCounts,
    pub error: Option<String>,
    /// The new delta cursor; stored only when the run succeeded.
    pub cursor_after: Option<DateTime<Utc>>,
}

/// What a run records when it opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opening<'a> {
    pub kind: RunKind,
    pub trigger: Trigger,
    /// `full` or `delta` for syncs; the device kind for reconcile and group refresh.
    pub mode: &'a str,
    pub started_at: DateTime<Utc>,
    pub cursor_before: Option<DateTime<Utc>>,
    /// `false` for a dry run: nothing is written.
    pub record: bool,
}

impl<S: Store> Engine<S> {
    /// Starts a run: pacing from what the last run learned, then its row.
    pub(crate) async fn open_run(&self, o: Opening<'_>) -> Result<RunScope, StoreError> {
        self.warm_pacing().await;
        let instance = self.client.instance().to_string();
        let id = if o.record {
            let row = NewRun {
                instance: &instance,
                kind: o.kind,
                trigger: o.trigger,
                mode: o.mode,
                started_at: o.started_at,
                cursor_before: o.cursor_before,
            };
            Some(self.store.start_run(&row).await?)
        } else {
            None
        };
        Ok(RunScope {
            id,
            kind: o.kind,
            instance,
        })
    }

    /// Ends a run: its row (and, for a succeeded sync, the cursor, in the same transaction),
    /// then pacing's memory. Nothing for a dry run.
    pub(crate) async fn close_run(&self, scope: &RunScope, end: Ending) -> Result<(), StoreError> {
        let Some(run_id) = scope.id else {
            return Ok(());
        };
        self.store
            .finish_run(&RunEnd {
                run_id,
                instance: &scope.instance,
                kind: scope.kind,
                status: end.status,
                counts: end.counts,
                error: end.error,
                cursor_after: end.cursor_after,
                finished_at: Utc::now(),
                clock_offset_ms: self.client.clock_offset().map(|o| o.num_milliseconds()),
            })
            .await?;
        self.remember_pacing().await;
        Ok(())
    }
}
