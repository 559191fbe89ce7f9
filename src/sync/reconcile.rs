//! Reconcile: find devices deleted in Jamf, safely. Load both sides → pure [`diff`] → apply.
//!
//! # Safety
//! - Deletions are applied only when the whole listing succeeded; any listing error fails the
//!   run with nothing marked.
//! - Each candidate is confirmed with a direct fetch: only a 404 confirms a deletion; a device
//!   that answers is kept (the listing missed it) and refreshed.
//! - More than `reconcile.max_delete_fraction` of the stored devices (default 10%) is refused
//!   unless forced: a mis-scoped API role or an empty Jamf must not wipe the table.
//! - `--dry-run` computes everything and writes nothing.
//!
//! Devices present in Jamf but not stored (created with an old report date, so invisible to
//! deltas) are fetched and stored; devices stored as deleted that are back are revived.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;

use super::{Engine, RunError, Trigger};
use crate::config::OnMissing;
use crate::jamf::classic::MobileDevice;
use crate::jamf::models::{numeric_id, Computer};
use crate::jamf::JamfError;
use crate::store::{Kind, NewRun, RunCounts, RunEnd, RunStatus, Store, StoreError};
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
#[derive(Debug, Clone, Default)]
pub struct ReconcileSummary {
    pub kind: &'static str,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub status: &'static str,
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
        self.status == "succeeded"
    }
}

impl fmt::Display for ReconcileSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reconcile{} {}: listed {}, stored {}, candidates {}, deleted {}, kept {}, refused {}, missed-and-fetched {}, revived {} in {:.1}s",
            self.kind,
            if self.dry_run { " (dry run)" } else { "" },
            self.status,
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
        let t0 = Instant::now();
        let instance = self.client.instance().to_string();
        let started_at = Utc::now();
        let run_id = if opts.dry_run {
            None
        } else {
            Some(
                self.store
                    .start_run(&NewRun {
                        instance: &instance,
                        kind: "reconcile",
                        trigger: opts.trigger.as_str(),
                        mode: kind.as_str(),
                        started_at,
                        cursor_before: None,
                    })
                    .await?,
            )
        };
        let mut summary = ReconcileSummary {
            kind: kind.as_str(),
            run_id,
            dry_run: opts.dry_run,
            ..ReconcileSummary::default()
        };
        let result = self.reconcile_inner(kind, opts, &mut summary).await;
        summary.status = match &result {
            Ok(()) => "succeeded",
            Err(RunError::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        if let Err(e) = &result {
            summary.error = Some(e.to_string());
        }
        summary.elapsed = t0.elapsed();
        if let Some(run_id) = run_id {
            let status = match summary.status {
                "succeeded" => RunStatus::Succeeded,
                "interrupted" => RunStatus::Interrupted,
                _ => RunStatus::Failed,
            };
            self.store
                .finish_run(&RunEnd {
                    run_id,
                    instance: &instance,
                    kind: "reconcile",
                    status,
                    // sync_runs columns: missing = deleted, failed = refused,
                    // upserted = missed-and-fetched + revived.
                    counts: RunCounts {
                        listed: summary.listed,
                        fetched: summary.missed_fetched + summary.revived + summary.kept,
                        upserted: summary.missed_fetched + summary.revived,
                        unchanged: summary.kept,
                        failed: summary.refused,
                        missing: summary.deleted,
                    },
                    error: summary.error.clone(),
                    cursor_after: None,
                    finished_at: Utc::now(),
                })
                .await?;
        }
        if !opts.dry_run {
            for (outcome, n) in [
                ("deleted", summary.deleted),
                ("kept", summary.kept),
                ("refused", summary.refused),
                ("missed_fetched", summary.missed_fetched),
                ("revived", summary.revived),
            ] {
                metrics::counter!(metric::RECONCILE, "kind" => kind.as_str(), "outcome" => outcome)
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

    async fn reconcile_inner(
        &self,
        kind: Kind,
        opts: ReconcileOptions,
        summary: &mut ReconcileSummary,
    ) -> Result<(), RunError> {
        let instance = self.client.instance().to_string();
        // Jamf first: a listing that fails leaves everything as it was.
        let listed = match kind {
            Kind::Computers => self.list_all_computer_ids().await?,
            Kind::MobileDevices => self.client.mobile_device_ids().await?,
        };
        self.check_stop()?;
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

        // Candidates: only a 404 on a direct fetch confirms a deletion.
        let mut confirmed = Vec::new();
        let confirmations = self.fetch_many(kind, &candidates).await;
        for (id, result) in confirmations {
            match result {
                Err(e) if e.is_not_found() => confirmed.push(id),
                Err(e) => return Err(e.into()),
                Ok(record) => {
                    summary.kept += 1;
                    if !opts.dry_run {
                        self.store_record(record).await?;
                    }
                }
            }
        }
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

        // Devices Jamf has that we lack (or had marked deleted).
        let fetched = self.fetch_many(kind, &to_fetch).await;
        let mut found = Vec::new();
        for (id, result) in fetched {
            match result {
                Ok(record) => found.push(record),
                // Deleted since the listing: nothing to store.
                Err(e) if e.is_not_found() => tracing::info!(id, "listed device is gone"),
                Err(e) => return Err(e.into()),
            }
        }
        if opts.dry_run {
            return Ok(());
        }
        for record in found {
            self.store_record(record).await?;
        }
        if !confirmed.is_empty() {
            match self.reconcile_cfg.on_missing {
                OnMissing::Mark => {
                    self.store
                        .mark_deleted(&instance, kind, &confirmed, Utc::now())
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

    /// Every computer id, GENERAL only, at the largest page size Jamf serves.
    async fn list_all_computer_ids(&self) -> Result<Vec<i64>, JamfError> {
        let general = ["GENERAL".to_string()];
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let version = self.client.inventory_version().await?;
            let filter = super::keyset_filter(None, after);
            let page = self
                .client
                .computers_page(
                    version,
                    &general,
                    crate::config::JAMF_MAX_PAGE_SIZE,
                    filter.as_deref(),
                    false,
                )
                .await?;
            let n = page.results.len() as i64;
            let before = ids.len();
            ids.extend(page.results.iter().filter_map(|raw| numeric_id(raw.get())));
            if n == 0 || n >= page.total_count || ids.len() == before {
                return Ok(ids);
            }
            after = ids.last().copied();
        }
    }

    /// Fetches full records through the worker pool; a record that does not decode counts as
    /// present (it answered) but is not stored.
    async fn fetch_many(&self, kind: Kind, ids: &[i64]) -> Vec<(i64, Result<Fetched, JamfError>)> {
        let workers = self.client.max_concurrency() as usize;
        futures_util::stream::iter(ids.iter().copied())
            .map(|id| {
                let client = self.client.clone();
                async move {
                    let result = match kind {
                        Kind::Computers => match client.inventory_version().await {
                            Ok(v) => client
                                .computer_detail(v, id)
                                .await
                                .map(|raw| Fetched::Computer(Computer::from_raw(&raw).ok())),
                            Err(e) => Err(e),
                        },
                        Kind::MobileDevices => client
                            .mobile_device_xml(id)
                            .await
                            .map(|xml| Fetched::Mobile(MobileDevice::from_xml(&xml).ok())),
                    };
                    (id, result)
                }
            })
            .buffer_unordered(workers)
            .collect()
            .await
    }

    /// Upserts one fetched record. Run id 0 matches no `sync_runs` row: reconcile records its
    /// own counts when it finishes.
    async fn store_record(&self, record: Fetched) -> Result<(), StoreError> {
        let instance = self.client.instance();
        let counts = RunCounts::default();
        match record {
            Fetched::Computer(Some(c)) => {
                self.store
                    .write_computers(instance, 0, &[c], &counts, None, Utc::now())
                    .await?;
            }
            Fetched::Mobile(Some(m)) => {
                self.store
                    .write_mobile_devices(instance, 0, &[m], &counts, None, Utc::now())
                    .await?;
            }
            Fetched::Computer(None) | Fetched::Mobile(None) => {}
        }
        Ok(())
    }
}

/// A record fetched during reconcile (`None`: it answered but did not decode).
#[derive(Debug)]
enum Fetched {
    Computer(Option<Computer>),
    Mobile(Option<MobileDevice>),
}

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
