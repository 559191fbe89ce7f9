//! The sync engine: runs of a device kind (delta or full sync, reconcile) and refreshes of
//! single devices, each through the kind's one [`source::DeviceSource`], written through the
//! store's one newer-wins write path.
//!
//! # Design
//! - **Cursor.** A delta run asks Jamf for devices whose inventory time is `>= cursor -
//!   overlap`, where the cursor is the *start* time of the last successful run. Starting from
//!   the start (not the newest report date seen) means inventory that arrives while a run pages
//!   is picked up by the next run; the overlap covers clock skew between us and Jamf.
//! - **Runs** carry their own state ([`run::Run`]: deadline, page size, expected count), made
//!   afresh for every sync and reconcile.
//! - **Sources.** One per kind, chosen once from configuration (`sync.strategy`,
//!   `mobile_devices.source`), used by syncs, reconcile and webhook refreshes alike, so a device
//!   is stored in the same JSON shape whichever path fetched it.
//! - **Concurrent writers, newer wins.** Webhook refreshes run beside the runner's syncs
//!   instead of queueing behind them (a full sync can take hours; a refresh should take
//!   seconds). Their writes can interleave with a sync's pages: a page read before a refresh
//!   may commit after it. The store's write path refuses to replace a stored copy with an older
//!   one in the upsert's SQL itself ([`crate::store::newer_wins`]), so whatever the commit
//!   order, the newest copy stays; a page's records that lose are counted `stale`.
//! - **Events only trigger fetches.** A refresh stores what Jamf's record says; a device Jamf
//!   answers 404 for is marked deleted, as reconcile does.
//! - **Failure.** A record that does not decode is logged with its id, counted and skipped. A
//!   device that 404s between listing and fetching was deleted: counted as `missing`. Any other
//!   read that fails after retries fails the run: pages already written stay (they are correct
//!   and idempotent), the run is marked `failed` and the cursor does not move, so the next run
//!   redoes the whole window.

pub(crate) mod batch;
mod error;
pub(crate) mod fetch;
pub mod groups;
pub(crate) mod ranges;
pub mod reconcile;
pub mod refresh;
pub(crate) mod run;
pub(crate) mod scope;
pub(crate) mod source;
pub(crate) mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{HistoryConfig, MobileDevicesConfig, ReconcileConfig, SyncConfig};
use crate::domain::{Kind, RunCounts, RunKind, RunStatus, Trigger};
use crate::jamf::JamfClient;
use crate::store::{Store, StoreError};
use crate::telemetry::metric;
use batch::Batch;
pub use error::RunError;
use run::{ListingHint, PageSizes, Run, StopSignal};
use scope::{Ending, Opening};
use source::{ComputerSource, DeviceSource, MobileDeviceSource, Reading, Sources, WithSource};
use writer::write_batches;

/// What one sync run should do.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Ignore the cursor and read every device.
    pub full: bool,
    pub trigger: Trigger,
    /// Write what Jamf says even over a newer stored copy (after restoring Jamf from a
    /// backup); `sync --full --overwrite`.
    pub overwrite: bool,
}

impl SyncOptions {
    pub fn new(full: bool, trigger: Trigger) -> Self {
        SyncOptions {
            full,
            trigger,
            overwrite: false,
        }
    }
}

/// The outcome of one run, printed as a one-line summary.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: i64,
    pub kind: Kind,
    pub status: RunStatus,
    pub mode: &'static str,
    pub counts: RunCounts,
    pub elapsed: Duration,
    pub since: Option<DateTime<Utc>>,
    pub cursor_after: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl RunSummary {
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "{} {} sync {} (run {}): listed {}, fetched {}, upserted {}, unchanged {}, failed {}, missing {}",
            self.kind.as_str(),
            self.mode,
            self.status.as_str(),
            self.run_id,
            c.listed,
            c.fetched,
            c.upserted,
            c.unchanged,
            c.failed,
            c.missing,
        )?;
        if c.stale > 0 {
            write!(f, ", stale {}", c.stale)?;
        }
        write!(f, " in {:.1}s", self.elapsed.as_secs_f64())?;
        if let Some(since) = self.since {
            write!(f, "; since {}", since.to_rfc3339())?;
        }
        if let Some(e) = &self.error {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// Runs syncs, reconciles and refreshes for one Jamf instance into one store.
pub struct Engine<S: Store> {
    store: Arc<S>,
    client: Arc<JamfClient>,
    cfg: SyncConfig,
    reconcile_cfg: ReconcileConfig,
    history: Arc<HistoryConfig>,
    sources: Sources,
    stop: Arc<StopSignal>,
}

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, client: Arc<JamfClient>, cfg: SyncConfig) -> Self {
        Self {
            sources: Sources {
                computers: ComputerSource::new(client.clone(), &cfg),
                mobiles: MobileDeviceSource::new(
                    client.clone(),
                    &MobileDevicesConfig::default(),
                    &cfg,
                ),
            },
            store,
            client,
            cfg,
            reconcile_cfg: ReconcileConfig::default(),
            history: Arc::new(HistoryConfig::default()),
            stop: Arc::new(StopSignal::default()),
        }
    }

    /// Uses this mobile device configuration (the default one otherwise).
    pub fn with_mobile(mut self, mobile: MobileDevicesConfig) -> Self {
        self.sources.mobiles = MobileDeviceSource::new(self.client.clone(), &mobile, &self.cfg);
        self
    }

    /// Uses this reconcile configuration (the default one otherwise).
    pub fn with_reconcile(mut self, cfg: ReconcileConfig) -> Self {
        self.reconcile_cfg = cfg;
        self
    }

    /// Uses this change history configuration (the default one otherwise).
    pub fn with_history(mut self, cfg: HistoryConfig) -> Self {
        self.history = Arc::new(cfg);
        self
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub fn client(&self) -> &Arc<JamfClient> {
        &self.client
    }

    /// Stops taking new work: requests on the wire finish, completed pages are committed, and
    /// the run ends `interrupted` with its cursor untouched.
    pub fn stop(&self) {
        self.stop.stop();
    }

    pub fn stopping(&self) -> bool {
        self.stop.stopping()
    }

    /// Resolves once [`Engine::stop`] was called.
    pub async fn stopped(&self) {
        self.stop.stopped().await
    }

    /// Devices one refresh request covers (the configured page size, at most Jamf's 2000).
    pub fn refresh_chunk(&self) -> usize {
        self.cfg
            .page_size
            .clamp(1, crate::domain::facts::JAMF_MAX_PAGE_SIZE) as usize
    }

    /// What earlier runs tell a listing ([`ListingHint`]): how many devices it
    /// will likely match (the stored fleet for a full listing, the last successful delta's
    /// count for a delta; 0 when unknown) and, when that is more than two pages, where the
    /// stored devices sit in the id space; a full listing into an empty table is `unknown`
    /// (it probes first). A database error only costs the hint.
    async fn hint_listing(&self, instance: &str, kind: Kind, mode: &str) -> ListingHint {
        let page = self.cfg.page_size;
        let many = |likely: i64| likely > 2 * i64::from(page);
        let sample = || async {
            self.store
                .stored_ids(instance, kind, page)
                .await
                .unwrap_or_default()
        };
        let (likely, stored) = if mode == "full" {
            let stored = sample().await;
            (stored.as_ref().map_or(0, |s| s.count), stored)
        } else {
            let runs = self
                .store
                .recent_runs(instance, 50)
                .await
                .unwrap_or_default();
            let likely = runs
                .iter()
                .find(|r| r.kind == kind.as_str() && r.mode == mode && r.status == "succeeded")
                .map_or(0, |r| r.counts.listed);
            (likely, if many(likely) { sample().await } else { None })
        };
        ListingHint {
            likely,
            unknown: mode == "full" && stored.is_none(),
            stored: stored.filter(|_| many(likely)),
        }
    }

    /// A fresh run's state, its listing told what earlier runs know.
    fn new_run(&self, id: Option<i64>, kind: RunKind, hint: ListingHint) -> Run {
        Run::new(
            id,
            kind,
            self.client.instance(),
            self.cfg.run_deadline_secs,
            PageSizes {
                max: self.cfg.page_size,
                min: self.cfg.min_page_size,
            },
            self.stop.clone(),
            hint,
        )
    }

    /// Updates the stored-devices and cursor-lag gauges of a kind from the database.
    pub async fn refresh_gauges(&self, kind: Kind) {
        let instance = self.client.instance();
        if let Ok(n) = self.store.count_devices(instance, kind).await {
            metrics::gauge!(metric::DEVICES_STORED, "jamf_instance" => instance.to_string(), "kind" => kind.as_str())
                .set(n as f64);
        }
        // A count, not the rows: the table may hold a whole fleet's failures.
        if let Ok((failing, _)) = self.store.failing_sample(instance, kind, 0).await {
            metrics::gauge!(metric::FAILING_DEVICES, "jamf_instance" => instance.to_string(), "kind" => kind.as_str())
                .set(failing as f64);
        }
        if let Ok(Some(cursor)) = self.store.cursor(instance, kind).await {
            let lag = (Utc::now() - cursor).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!(metric::CURSOR_LAG, "jamf_instance" => instance.to_string(), "kind" => kind.as_str())
                .set(lag);
        }
    }

    /// Before a run's first request: pacing starts from what the last run against this server
    /// learned, if this process has learned nothing itself and the memory is recent enough
    /// (`jamf.pacing.remember_hours`). A failure to read it only means a cold start.
    pub(crate) async fn warm_pacing(&self) {
        let lifetime = self.client.pacing_memory_lifetime();
        if lifetime.is_zero() || self.client.pacing_memory().await.is_some() {
            return;
        }
        let instance = self.client.instance();
        match self
            .store
            .pacing_memory(instance, &self.client.server())
            .await
        {
            Ok(Some((memory, saved_at))) => {
                let age = (Utc::now() - saved_at).to_std().unwrap_or_default();
                if age <= lifetime && self.client.warm_pacing(&memory).await {
                    tracing::info!(
                        limit = self.client.concurrency_limit(),
                        saved_at = %saved_at,
                        "pacing starts where the last run against this server left it"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read pacing memory; starting cold"),
        }
    }

    /// Recreates the typed extension attribute view when the run brought attributes (or
    /// types) the view does not have.
    async fn refresh_ea_view(&self, kind: Kind) {
        match self
            .store
            .refresh_ea_view(self.client.instance(), kind, false)
            .await
        {
            Ok(Some((view, columns))) => {
                tracing::info!(
                    view,
                    attributes = columns.len(),
                    "extension attribute view recreated"
                )
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not refresh the extension attribute view"),
        }
    }

    /// Removes change history older than `history.retention_days` (0 keeps it forever).
    async fn prune_history(&self) {
        if self.history.retention_days == 0 {
            return;
        }
        let Some(before) = chrono::Duration::try_days(i64::from(self.history.retention_days))
            .and_then(|d| Utc::now().checked_sub_signed(d))
        else {
            return;
        };
        match self.store.prune_history(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned change history past its retention"),
            Err(e) => tracing::warn!(error = %e, "could not prune the change history"),
        }
    }

    /// After a run: keeps what pacing learned for the next process.
    pub(crate) async fn remember_pacing(&self) {
        let Some(memory) = self.client.pacing_memory().await else {
            return;
        };
        let instance = self.client.instance();
        let saved = self
            .store
            .save_pacing_memory(instance, &self.client.server(), &memory, Utc::now())
            .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not save pacing memory");
        }
    }

    /// How much wider than `sync.overlap_secs` a delta run of this kind reads: the clock
    /// difference to Jamf (this client's latest measurement, else the last run's), when it is
    /// over `sync.clock_skew_warn_secs`; zero otherwise.
    async fn skew_allowance(&self, instance: &str, kind: Kind) -> chrono::Duration {
        let offset = match self.client.clock_offset() {
            Some(o) => Some(o),
            None => self
                .store
                .last_clock_offset(instance, RunKind::Sync(kind))
                .await
                .ok()
                .flatten()
                .map(chrono::Duration::milliseconds),
        };
        let Some(offset) = offset else {
            return chrono::Duration::zero();
        };
        metrics::gauge!(metric::CLOCK_OFFSET, "jamf_instance" => instance.to_string())
            .set(offset.num_milliseconds() as f64 / 1000.0);
        let threshold = chrono::Duration::seconds(
            i64::try_from(self.cfg.clock_skew_warn_secs).unwrap_or(i64::MAX),
        );
        if offset.abs() <= threshold {
            return chrono::Duration::zero();
        }
        tracing::warn!(
            kind = kind.as_str(),
            jamf_minus_ours_secs = offset.num_seconds(),
            "Jamf's clock differs from this host's; widening the delta overlap by the difference (check NTP)"
        );
        offset.abs()
    }

    /// One computers sync; see [`Engine::sync`].
    pub async fn sync_computers(&self, opts: SyncOptions) -> Result<RunSummary, StoreError> {
        self.sync(Kind::Computers, opts).await
    }

    /// One mobile devices sync; see [`Engine::sync`].
    pub async fn sync_mobile_devices(&self, opts: SyncOptions) -> Result<RunSummary, StoreError> {
        self.sync(Kind::MobileDevices, opts).await
    }

    /// One run of a kind. `Err` only when the database itself fails before or after the run;
    /// a failed Jamf read is a summary with status `failed`.
    pub async fn sync(&self, kind: Kind, opts: SyncOptions) -> Result<RunSummary, StoreError> {
        struct Sync<'a, S: Store>(&'a Engine<S>, SyncOptions);
        impl<S: Store> WithSource for Sync<'_, S> {
            type Out = Result<RunSummary, StoreError>;
            async fn with<Src: DeviceSource>(self, kind: Kind, source: &Src) -> Self::Out {
                self.0.sync_with(kind, source, self.1).await
            }
        }
        self.sources.visit(kind, Sync(self, opts)).await
    }

    async fn sync_with<Src: DeviceSource>(
        &self,
        kind: Kind,
        source: &Src,
        opts: SyncOptions,
    ) -> Result<RunSummary, StoreError> {
        let instance = self.client.instance().to_string();
        let started_at = Utc::now();
        let offset_at_start = self.client.clock_offset();
        let t0 = Instant::now();
        let cursor = if opts.full {
            None
        } else {
            self.store.cursor(&instance, kind).await?
        };
        let skew = self.skew_allowance(&instance, kind).await;
        // An overlap too large to subtract reads everything, as a full run does.
        let overlap = i64::try_from(self.cfg.overlap_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|o| o.checked_add(&skew));
        let since = cursor
            .zip(overlap)
            .and_then(|(c, o)| c.checked_sub_signed(o));
        let mode = if since.is_some() { "delta" } else { "full" };
        let run_kind = RunKind::Sync(kind);
        let scope = self
            .open_run(Opening {
                kind: run_kind,
                trigger: opts.trigger,
                mode,
                started_at,
                cursor_before: cursor,
                record: true,
            })
            .await?;
        let run_id = scope.id.unwrap_or_default();
        let hint = self.hint_listing(&instance, kind, mode).await;
        let mut run = self.new_run(Some(run_id), run_kind, hint);
        run.overwrite = opts.overwrite;
        let run = Arc::new(run);
        let span =
            tracing::info_span!("sync", run_id, instance = %instance, kind = kind.as_str(), mode);
        // Devices earlier runs could not read are fetched again after the changed ones.
        let retry: Vec<i64> = self
            .store
            .sync_failures(&instance, kind)
            .await?
            .into_iter()
            .map(|f| f.jamf_id)
            .collect();
        let (run_ref, retry, instance_ref) = (&run, &retry, instance.as_str());
        let (result, counts) = self
            .pipeline(run.clone(), |tx| async move {
                let run = run_ref;
                source
                    .read_changed(Reading {
                        run,
                        since,
                        tx: tx.clone(),
                    })
                    .await?;
                if !retry.is_empty() {
                    run.check()?;
                    tracing::info!(
                        devices = retry.len(),
                        "retrying devices earlier runs could not read"
                    );
                    let got = source.fetch(retry).await?;
                    // Gone from Jamf meanwhile (a direct request says 404): marked deleted,
                    // which also ends their retries.
                    let mut gone = source.confirm_gone(&got.missing).await?;
                    gone.extend(&got.gone);
                    tx.send(Batch::from_fetched(got))
                        .await
                        .map_err(|_| RunError::Other("writer stopped".into()))?;
                    if !gone.is_empty() {
                        self.store
                            .mark_deleted(
                                instance_ref,
                                kind,
                                &gone,
                                self.client.jamf_now(),
                                &self.history,
                            )
                            .await?;
                    }
                }
                Ok(())
            })
            .instrument(span.clone())
            .await;
        let status = RunError::status(&result);
        let error = match &result {
            Ok(()) => None,
            Err(RunError::Interrupted) => {
                Some("stopped by shutdown; completed pages were kept".into())
            }
            Err(e) => Some(e.to_string()),
        };
        let cursor_after = (status == RunStatus::Succeeded)
            .then(|| jamf_time(started_at, offset_at_start, self.client.clock_offset()));
        self.close_run(
            &scope,
            Ending {
                status,
                counts,
                error: error.clone(),
                cursor_after,
            },
        )
        .await?;
        let summary = RunSummary {
            run_id,
            kind,
            status,
            mode,
            counts,
            elapsed: t0.elapsed(),
            since,
            cursor_after,
            error,
        };
        record_run_metrics(self.client.instance(), &summary);
        // After the metrics: a scrape that sees the run finished in the database sees it
        // counted.
        if status == RunStatus::Succeeded {
            self.prune_history().await;
            self.refresh_ea_view(kind).await;
        }
        span.in_scope(|| {
            if !summary.succeeded() {
                tracing::error!("{summary}");
            } else if summary.counts.failed > 0 {
                tracing::warn!(
                    failed = summary.counts.failed,
                    "{summary}; devices Jamf would not give are in sync_failures and retried next run"
                );
            } else {
                tracing::info!("{summary}");
            }
        });
        Ok(summary)
    }

    /// Runs a reader against a writer task; returns the first error and the committed counts.
    async fn pipeline<R, F, Fut>(&self, run: Arc<Run>, read: F) -> (Result<(), RunError>, RunCounts)
    where
        R: crate::domain::Record,
        F: FnOnce(mpsc::Sender<Batch<R>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), RunError>>,
    {
        // A few pages ahead of the writer: enough to keep it busy, few enough that records with
        // heavy sections do not pile up in memory.
        let (tx, rx) = mpsc::channel::<Batch<R>>(4);
        let writer = tokio::spawn(write_batches(
            self.store.clone(),
            self.client.instance().to_string(),
            run,
            self.history.clone(),
            rx,
        ));
        let fetched = read(tx).await;
        // The sender is dropped by now, so the writer drains what it has and stops.
        let (written, counts) = match writer.await {
            Ok((r, c)) => (r, c),
            Err(e) => (
                Err(RunError::Other(format!("writer task failed: {e}"))),
                RunCounts::default(),
            ),
        };
        // A write error is the root cause when both failed (the reader saw a closed channel).
        (written.and(fetched), counts)
    }
}

/// A moment of this host's clock in Jamf's, by the offsets measured from Jamf's `Date` headers
/// (the earlier reading when two differ: a cursor may be early, never late). The delta cursor
/// is kept in Jamf's clock, which every replica shares and in which the delta filter is
/// evaluated: a replica whose own clock runs ahead cannot move it past changes the next holder
/// must still read. Without a measurement, this host's clock.
fn jamf_time(
    ours: DateTime<Utc>,
    before: Option<chrono::Duration>,
    after: Option<chrono::Duration>,
) -> DateTime<Utc> {
    crate::jamf::in_jamf_clock(ours, [before, after].into_iter().flatten().min())
}

fn record_run_metrics(instance: &str, s: &RunSummary) {
    let kind = s.kind.as_str();
    let c = &s.counts;
    let i = || instance.to_string();
    for (outcome, n) in [
        ("upserted", c.upserted),
        ("unchanged", c.unchanged),
        ("stale", c.stale),
        ("failed", c.failed),
        ("missing", c.missing),
    ] {
        metrics::counter!(metric::RECORDS, "jamf_instance" => i(), "kind" => kind, "outcome" => outcome)
            .increment(n.max(0) as u64);
    }
    metrics::counter!(metric::RUNS, "jamf_instance" => i(), "kind" => kind, "result" => s.status.as_str())
        .increment(1);
    metrics::histogram!(metric::RUN_DURATION, "jamf_instance" => i(), "kind" => kind)
        .record(s.elapsed.as_secs_f64());
    if s.succeeded() {
        metrics::gauge!(metric::LAST_SUCCESS, "jamf_instance" => i(), "kind" => kind)
            .set(Utc::now().timestamp() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_in_jamfs_clock_and_never_late() {
        let ours = Utc::now();
        let m = chrono::Duration::minutes;
        assert_eq!(jamf_time(ours, None, None), ours);
        assert_eq!(jamf_time(ours, Some(m(-120)), None), ours - m(120));
        assert_eq!(jamf_time(ours, None, Some(m(5))), ours + m(5));
        // Two readings: the earlier moment.
        assert_eq!(jamf_time(ours, Some(m(5)), Some(m(-1))), ours - m(1));
        // Within what a Date header can tell, the clocks agree: this host's time.
        let ms = chrono::Duration::milliseconds;
        assert_eq!(jamf_time(ours, Some(ms(-1900)), Some(ms(300))), ours);
    }
}
