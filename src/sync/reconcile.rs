//! Reconcile: find devices deleted in Jamf, safely. Load both sides → pure [`diff`] → apply.
//!
//! # Safety
//! - Deletions are applied only when the whole listing succeeded; any listing error fails the
//!   run with nothing marked.
//! - Each candidate is confirmed with a direct request for the device: only a 404 confirms a
//!   deletion; a device that answers is kept (the listing missed it), and its copy, fetched
//!   through the kind's source in the shape a sync stores, is written like any other (newer
//!   wins).
//! - More than `reconcile.max_delete_fraction` of the stored devices (default 10%) is refused
//!   unless forced: a mis-scoped API role or an empty Jamf must not wipe the table.
//! - `--dry-run` computes everything and writes nothing.
//!
//! Devices present in Jamf but not stored (created with an old report date, so invisible to
//! deltas) are fetched and stored; devices stored as deleted that are back are revived. Every
//! reconcile is a run of its own ([`Run`]), with its own deadline.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument;

use super::error::RunError;
use super::run::Run;
use super::scope::{Ending, Opening};
use super::source::{DeviceSource, WithSource};
use super::Engine;
use crate::config::OnMissing;
use crate::domain::{Kind, RunCounts, RunKind, RunStatus, Trigger};
use crate::store::{Store, StoreError, Write};
use crate::telemetry::metric;

/// One difference between the stored copy and Jamf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// Stored and live, but not listed by Jamf: a candidate deletion.
    Missing(i64),
    /// Listed by Jamf, never stored (missed by deltas): fetch it.
    Unstored(i64),
    /// Listed by Jamf, stored as deleted: it is back; fetch it (the upsert revives it).
    Returned(i64),
}

/// Compares stored `(id, deleted)` pairs with the ids Jamf listed. Pure; order of the result
/// follows the ids.
pub fn diff(stored: &[(i64, bool)], listed: &[i64]) -> Vec<Difference> {
    let listed: std::collections::BTreeSet<i64> = listed.iter().copied().collect();
    let stored_map: std::collections::BTreeMap<i64, bool> = stored.iter().copied().collect();
    let mut out = Vec::new();
    for (id, deleted) in &stored_map {
        if !deleted && !listed.contains(id) {
            out.push(Difference::Missing(*id));
        }
    }
    for id in &listed {
        match stored_map.get(id) {
            None => out.push(Difference::Unstored(*id)),
            Some(true) => out.push(Difference::Returned(*id)),
            Some(false) => {}
        }
    }
    out.sort_by_key(|d| match d {
        Difference::Missing(i) | Difference::Unstored(i) | Difference::Returned(i) => *i,
    });
    out
}

#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    pub dry_run: bool,
    /// Apply deletions beyond `max_delete_fraction`.
    pub force: bool,
    pub trigger: Trigger,
}

/// What a reconcile found and did.
#[derive(Debug, Clone)]
pub struct ReconcileSummary {
    pub kind: &'static str,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub status: RunStatus,
    /// Devices Jamf listed.
    pub listed: i64,
    /// Live devices stored before the run.
    pub stored: i64,
    /// Stored devices missing from the listing.
    pub candidates: i64,
    /// Candidates confirmed gone (404) and marked or deleted (or that would be, in a dry run).
    pub deleted: i64,
    /// Candidates that still answered: kept.
    pub kept: i64,
    /// Candidates not applied because of the safety limit.
    pub refused: i64,
    /// Devices Jamf has that were never stored, fetched now.
    pub missed_fetched: i64,
    /// Devices stored as deleted that are back.
    pub revived: i64,
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl ReconcileSummary {
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }
}

impl fmt::Display for ReconcileSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reconcile{} {}: listed {}, stored {}, candidates {}, deleted {}, kept {}, refused {}, missed-and-fetched {}, revived {} in {:.1}s",
            self.kind,
            if self.dry_run { " (dry run)" } else { "" },
            self.status.as_str(),
            self.listed,
            self.stored,
            self.candidates,
            self.deleted,
            self.kept,
            self.refused,
            self.missed_fetched,
            self.revived,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(e) = &self.error {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl<S: Store> Engine<S> {
    /// One reconcile of a kind; `Err` only when the database fails.
    pub async fn reconcile(
        &self,
        kind: Kind,
        opts: ReconcileOptions,
    ) -> Result<ReconcileSummary, StoreError> {
        struct Reconcile<'a, S: Store>(&'a Engine<S>, ReconcileOptions);
        impl<S: Store> WithSource for Reconcile<'_, S> {
            type Out = Result<ReconcileSummary, StoreError>;
            async fn with<Src: DeviceSource>(self, kind: Kind, source: &Src) -> Self::Out {
                self.0.reconcile_with(kind, source, self.1).await
            }
        }
        self.sources.visit(kind, Reconcile(self, opts)).await
    }

    async fn reconcile_with<Src: DeviceSource>(
        &self,
        kind: Kind,
        source: &Src,
        opts: ReconcileOptions,
    ) -> Result<ReconcileSummary, StoreError> {
        let t0 = Instant::now();
        let instance = self.client.instance().to_string();
        let scope = self
            .open_run(Opening {
                kind: RunKind::Reconcile,
                trigger: opts.trigger,
                mode: kind.as_str(),
                started_at: Utc::now(),
                cursor_before: None,
                record: !opts.dry_run,
            })
            .await?;
        let run_id = scope.id;
        let hint = self.hint_listing(&instance, kind, "full").await;
        let run = self.new_run(run_id, RunKind::Reconcile, hint);
        let mut summary = ReconcileSummary {
            kind: kind.as_str(),
            run_id,
            dry_run: opts.dry_run,
            status: RunStatus::Running,
            listed: 0,
            stored: 0,
            candidates: 0,
            deleted: 0,
            kept: 0,
            refused: 0,
            missed_fetched: 0,
            revived: 0,
            error: None,
            elapsed: Duration::ZERO,
        };
        let span = tracing::info_span!(
            "reconcile",
            run_id,
            instance = %instance,
            kind = kind.as_str(),
            dry_run = opts.dry_run
        );
        let result = self
            .reconcile_inner(kind, source, &run, opts, &mut summary)
            .instrument(span)
            .await;
        summary.status = RunError::status(&result);
        summary.error = result.err().map(|e| e.to_string());
        summary.elapsed = t0.elapsed();
        let ending = Ending {
            status: summary.status,
            // sync_runs columns: missing = deleted, failed = refused,
            // upserted = missed-and-fetched + revived.
            counts: RunCounts {
                listed: summary.listed,
                fetched: summary.missed_fetched + summary.revived + summary.kept,
                upserted: summary.missed_fetched + summary.revived,
                unchanged: summary.kept,
                stale: 0,
                failed: summary.refused,
                missing: summary.deleted,
                child_rows: 0,
            },
            error: summary.error.clone(),
            cursor_after: None,
        };
        self.close_run(&scope, ending).await?;
        if !opts.dry_run {
            for (outcome, n) in [
                ("deleted", summary.deleted),
                ("kept", summary.kept),
                ("refused", summary.refused),
                ("missed_fetched", summary.missed_fetched),
                ("revived", summary.revived),
            ] {
                metrics::counter!(metric::RECONCILE, "jamf_instance" => instance.clone(), "kind" => kind.as_str(), "outcome" => outcome)
                    .increment(n.max(0) as u64);
            }
        }
        if summary.succeeded() {
            tracing::info!("{summary}");
        } else {
            tracing::error!("{summary}");
        }
        Ok(summary)
    }

    async fn reconcile_inner<Src: DeviceSource>(
        &self,
        kind: Kind,
        source: &Src,
        run: &Run,
        opts: ReconcileOptions,
        summary: &mut ReconcileSummary,
    ) -> Result<(), RunError> {
        let instance = self.client.instance().to_string();
        // Jamf first: a listing that fails leaves everything as it was.
        let listed = source.list_ids(run).await?;
        run.check()?;
        let stored = self.store.device_ids(&instance, kind).await?;
        summary.listed = listed.len() as i64;
        summary.stored = stored.iter().filter(|(_, deleted)| !deleted).count() as i64;
        let differences = diff(&stored, &listed);
        let mut candidates = Vec::new();
        let mut to_fetch = Vec::new();
        for d in &differences {
            match *d {
                Difference::Missing(id) => candidates.push(id),
                Difference::Unstored(id) => {
                    summary.missed_fetched += 1;
                    to_fetch.push(id);
                }
                Difference::Returned(id) => {
                    summary.revived += 1;
                    to_fetch.push(id);
                }
            }
        }
        summary.candidates = candidates.len() as i64;

        // Candidates: only a 404 on a direct request confirms a deletion. A device that still
        // answers is kept, and its copy written (in the source's shape) when the source
        // returns it.
        let confirmed = source.confirm_gone(&candidates).await?;
        run.check()?;
        summary.kept = (candidates.len() - confirmed.len()) as i64;
        let kept: Vec<i64> = candidates
            .iter()
            .copied()
            .filter(|id| confirmed.binary_search(id).is_err())
            .collect();
        let limit = (summary.stored as f64 * self.reconcile_cfg.max_delete_fraction).floor() as i64;
        if confirmed.len() as i64 > limit && !opts.force {
            summary.refused = confirmed.len() as i64;
            return Err(RunError::Other(format!(
                "refusing to remove {} of {} stored {} ({:.1}% > reconcile.max_delete_fraction {:.1}%); \
                 check the API role's scope, or run `jamf-sync reconcile --force`",
                confirmed.len(),
                summary.stored,
                kind.as_str(),
                100.0 * confirmed.len() as f64 / summary.stored.max(1) as f64,
                100.0 * self.reconcile_cfg.max_delete_fraction
            )));
        }
        summary.deleted = confirmed.len() as i64;

        // Kept candidates, and devices Jamf has that we lack (or had marked deleted): fetched
        // and written a chunk at a time, so memory does not grow with how many there are.
        for ids in [&kept, &to_fetch] {
            for chunk in ids.chunks(RECONCILE_CHUNK) {
                run.check()?;
                let got = source.fetch(chunk).await?;
                for id in got.missing.iter().chain(&got.gone) {
                    tracing::info!(id, "listed device is gone");
                }
                if !opts.dry_run && !got.records.is_empty() {
                    self.store
                        .write_devices(Write::guarded(&instance, &got.records, &self.history))
                        .await?;
                }
            }
        }
        if opts.dry_run {
            return Ok(());
        }
        if !confirmed.is_empty() {
            match self.reconcile_cfg.on_missing {
                OnMissing::Mark => {
                    self.store
                        .mark_deleted(
                            &instance,
                            kind,
                            &confirmed,
                            self.client.jamf_now(),
                            &self.history,
                        )
                        .await?;
                }
                OnMissing::Delete => {
                    self.store
                        .purge_devices(&instance, kind, &confirmed)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Devices reconcile fetches and writes at a time.
const RECONCILE_CHUNK: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_missing_unstored_and_returned() {
        let stored = [(1, false), (2, false), (3, true), (4, false), (6, true)];
        let listed = [1, 3, 4, 5];
        assert_eq!(
            diff(&stored, &listed),
            vec![
                Difference::Missing(2),
                Difference::Returned(3),
                Difference::Unstored(5),
            ]
        );
    }

    #[test]
    fn diff_of_equal_sides_is_empty_and_an_empty_listing_misses_everything() {
        let stored = [(1, false), (2, false)];
        assert!(diff(&stored, &[2, 1]).is_empty());
        assert_eq!(
            diff(&stored, &[]),
            vec![Difference::Missing(1), Difference::Missing(2)]
        );
        assert_eq!(diff(&[], &[7]), vec![Difference::Unstored(7)]);
        // A device already marked deleted and still absent is no difference.
        assert!(diff(&[(9, true)], &[]).is_empty());
    }
}
