//! The sync engine: one run of a device kind's delta sync, from cursor to committed pages.
//! `computers` and `mobile` hold what differs per kind; this module owns run bookkeeping, the
//! cursor, the fetch pipeline and the writer.
//!
//! # Design
//! - **Cursor.** A delta run asks Jamf for `general.reportDate >= cursor - overlap`, where the
//!   cursor is the *start* time of the last successful run. Starting from the start (not the
//!   newest report date seen) means inventory that arrives while a run pages is picked up by the
//!   next run; the overlap covers clock skew between us and Jamf.
//! - **Keyset paging.** Pages are requested with `sort=id:asc`, `page=0` and `id>"<last id>"` in
//!   the filter. Devices entering or leaving the filtered set while we page cannot shift later
//!   pages, so nothing is skipped; ids are also de-duplicated within a run.
//! - **Mobile devices** come from a Classic advanced search (see [`mobile`]) or the Jamf Pro
//!   API; the same cursor rules apply with `last_inventory_update` as the change date.
//! - **Strategies.** `inline` reads the configured sections inside the list pages (one request
//!   per page: the fewest requests). `detail` lists ids with GENERAL only and fetches
//!   `computers-inventory-detail/{id}` per device through a worker pool as wide as the
//!   connection limit (one request per device, every section). `auto` picks `inline`.
//! - **Pipeline.** Fetching and writing overlap: a writer task commits each batch (records plus
//!   run progress in one transaction) while the next requests are on the wire.
//! - **Failure.** A record that does not decode is logged with its id, counted and skipped. A
//!   device that 404s between listing and fetching was deleted: counted as `missing`. Any other
//!   read that fails after retries fails the run: pages already written stay (they are correct
//!   and idempotent), the run is marked `failed` and the cursor does not move, so the next run
//!   redoes the whole window.

mod computers;
mod mobile;
pub mod reconcile;
pub mod refresh;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{MobileDevicesConfig, SyncConfig};
use crate::jamf::classic::MobileDevice;
use crate::jamf::models::{Computer, InventoryPage, RecordError};
use crate::jamf::{JamfClient, JamfError};
use crate::store::{
    DeviceRow, Kind, NewRun, PageOutcome, RunCounts, RunEnd, RunStatus, Store, StoreError,
};
use crate::telemetry::metric;
use serde_json::value::RawValue;

/// What asked for a run, stored in `sync_runs.trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Cli,
    Demo,
    Schedule,
    /// Start-up catch-up of the daemon.
    Startup,
    /// `POST /sync`.
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Demo => "demo",
            Trigger::Schedule => "schedule",
            Trigger::Startup => "startup",
            Trigger::Api => "api",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Ignore the cursor and read every device.
    pub full: bool,
    pub trigger: Trigger,
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
            "{} {} sync {} (run {}): listed {}, fetched {}, upserted {}, unchanged {}, failed {}, missing {} in {:.1}s",
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
            self.elapsed.as_secs_f64()
        )?;
        if let Some(since) = self.since {
            write!(f, "; since {}", since.to_rfc3339())?;
        }
        if let Some(e) = &self.error {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Jamf(#[from] JamfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
    #[error("interrupted by shutdown")]
    Interrupted,
}

/// Runs syncs for one Jamf instance into one store.
pub struct Engine<S: Store> {
    store: Arc<S>,
    client: Arc<JamfClient>,
    cfg: SyncConfig,
    mobile: MobileDevicesConfig,
    reconcile_cfg: crate::config::ReconcileConfig,
    stop: Arc<StopSignal>,
    /// Records the current run expects in all, when known (for the progress line's ETA).
    expected: Arc<AtomicI64>,
    /// Current list page size: shrinks after page timeouts, grows back slowly.
    page_size: std::sync::atomic::AtomicU32,
    /// When the current run must give up (`sync.run_deadline_secs`).
    deadline: std::sync::Mutex<Option<Instant>>,
    /// `mobile_devices.source = auto` resolved from the server version, and when: webhook
    /// refreshes ask often, the answer changes only with a Jamf upgrade.
    mobile_source: std::sync::Mutex<Option<(crate::config::MobileSource, Instant)>>,
}

/// Records the writer commits together at most when batches are queued.
const MERGE_UP_TO: usize = 1000;

/// How often a long run logs a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Asks a running sync to stop taking new work (graceful shutdown).
#[derive(Debug, Default)]
struct StopSignal {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    fn stopping(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }
}

/// One batch for the writer task.
struct Batch<R> {
    records: Vec<R>,
    last_id: Option<i64>,
    listed: i64,
    failed: i64,
    missing: i64,
}

impl<R> Batch<R> {
    fn new(capacity: usize) -> Self {
        Batch {
            records: Vec::with_capacity(capacity),
            last_id: None,
            listed: 0,
            failed: 0,
            missing: 0,
        }
    }

    fn size(&self) -> i64 {
        self.records.len() as i64 + self.failed + self.missing
    }
}

/// A record kind the writer can persist.
trait Persist: DeviceRow + Sized + Send + Sync + 'static {
    fn persist<'a, S: Store>(
        store: &'a S,
        instance: &'a str,
        run_id: i64,
        records: &'a [Self],
        counts: &'a RunCounts,
        last_id: Option<i64>,
    ) -> impl Future<Output = Result<PageOutcome, StoreError>> + Send + 'a;
}

impl Persist for Computer {
    fn persist<'a, S: Store>(
        store: &'a S,
        instance: &'a str,
        run_id: i64,
        records: &'a [Self],
        counts: &'a RunCounts,
        last_id: Option<i64>,
    ) -> impl Future<Output = Result<PageOutcome, StoreError>> + Send + 'a {
        store.write_computers(instance, run_id, records, counts, last_id, Utc::now())
    }
}

impl Persist for MobileDevice {
    fn persist<'a, S: Store>(
        store: &'a S,
        instance: &'a str,
        run_id: i64,
        records: &'a [Self],
        counts: &'a RunCounts,
        last_id: Option<i64>,
    ) -> impl Future<Output = Result<PageOutcome, StoreError>> + Send + 'a {
        store.write_mobile_devices(instance, run_id, records, counts, last_id, Utc::now())
    }
}

/// What one fetch of a record produced.
type Fetched<R> = Result<Result<R, RecordError>, JamfError>;

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, client: Arc<JamfClient>, cfg: SyncConfig) -> Self {
        Self {
            store,
            client,
            cfg,
            mobile: MobileDevicesConfig::default(),
            reconcile_cfg: crate::config::ReconcileConfig::default(),
            stop: Arc::new(StopSignal::default()),
            expected: Arc::new(AtomicI64::new(0)),
            page_size: std::sync::atomic::AtomicU32::new(0),
            deadline: std::sync::Mutex::new(None),
            mobile_source: std::sync::Mutex::new(None),
        }
    }

    /// Stops taking new work: requests on the wire finish, completed pages are committed, and
    /// the run ends `interrupted` with its cursor untouched.
    pub fn stop(&self) {
        self.stop.flag.store(true, Ordering::SeqCst);
        self.stop.notify.notify_waiters();
    }

    pub fn stopping(&self) -> bool {
        self.stop.stopping()
    }

    /// Resolves once [`Engine::stop`] was called.
    pub async fn stopped(&self) {
        self.stop.stopped().await
    }

    /// Announces how many records the current run expects (progress ETA).
    fn expect(&self, n: i64) {
        self.expected.store(n, Ordering::Relaxed);
    }

    fn check_stop(&self) -> Result<(), RunError> {
        if self.stopping() {
            return Err(RunError::Interrupted);
        }
        let deadline = *self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RunError::Other(format!(
                "run deadline of {} s exceeded (sync.run_deadline_secs); the next run starts over",
                self.cfg.run_deadline_secs
            )));
        }
        Ok(())
    }

    /// Reads one list page at the current page size; a page that times out (or answers 504)
    /// is asked for again at half the size from the same position, down to
    /// `sync.min_page_size`; good pages let the size grow back by a quarter.
    async fn list_with_shrink<L, Fut>(
        &self,
        kind: Kind,
        list: L,
    ) -> Result<InventoryPage, JamfError>
    where
        L: Fn(u32, bool) -> Fut,
        Fut: Future<Output = Result<InventoryPage, JamfError>>,
    {
        loop {
            let size = self.page_size.load(Ordering::Relaxed);
            let shrinkable = size > self.cfg.min_page_size;
            match list(size, shrinkable).await {
                Err(e) if shrinkable && e.asks_for_smaller_pages() => {
                    let smaller = (size / 2).max(self.cfg.min_page_size);
                    tracing::warn!(size, smaller, error = %e, "list page too heavy; asking for a smaller one");
                    self.page_size.store(smaller, Ordering::Relaxed);
                    metrics::gauge!(metric::PAGE_SIZE, "kind" => kind.as_str())
                        .set(f64::from(smaller));
                }
                Ok(page) => {
                    if size < self.cfg.page_size {
                        let bigger = (size + (size / 4).max(1)).min(self.cfg.page_size);
                        self.page_size.store(bigger, Ordering::Relaxed);
                        metrics::gauge!(metric::PAGE_SIZE, "kind" => kind.as_str())
                            .set(f64::from(bigger));
                    }
                    return Ok(page);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Updates the stored-devices and cursor-lag gauges of a kind from the database.
    pub async fn refresh_gauges(&self, kind: Kind) {
        let instance = self.client.instance();
        if let Ok(n) = self.store.count_devices(instance, kind).await {
            metrics::gauge!(metric::DEVICES_STORED, "kind" => kind.as_str()).set(n as f64);
        }
        if let Ok(Some(cursor)) = self.store.cursor(instance, kind).await {
            let lag = (Utc::now() - cursor).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!(metric::CURSOR_LAG, "kind" => kind.as_str()).set(lag);
        }
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Uses this mobile device configuration (the default one otherwise).
    pub fn with_mobile(mut self, mobile: MobileDevicesConfig) -> Self {
        self.mobile = mobile;
        self
    }

    /// Uses this reconcile configuration (the default one otherwise).
    pub fn with_reconcile(mut self, cfg: crate::config::ReconcileConfig) -> Self {
        self.reconcile_cfg = cfg;
        self
    }

    pub fn client(&self) -> &Arc<JamfClient> {
        &self.client
    }

    /// Devices one refresh request covers (the configured page size, at most Jamf's 2000).
    pub(crate) fn refresh_chunk(&self) -> usize {
        self.cfg
            .page_size
            .clamp(1, crate::config::JAMF_MAX_PAGE_SIZE) as usize
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
        let instance = self.client.instance().to_string();
        let started_at = Utc::now();
        let t0 = Instant::now();
        let cursor = if opts.full {
            None
        } else {
            self.store.cursor(&instance, kind).await?
        };
        let since = cursor.map(|c| c - chrono::Duration::seconds(self.cfg.overlap_secs as i64));
        let mode = if since.is_some() { "delta" } else { "full" };
        let run_id = self
            .store
            .start_run(&NewRun {
                instance: &instance,
                kind: kind.as_str(),
                trigger: opts.trigger.as_str(),
                mode,
                started_at,
                cursor_before: cursor,
            })
            .await?;
        self.page_size.store(self.cfg.page_size, Ordering::Relaxed);
        metrics::gauge!(metric::PAGE_SIZE, "kind" => kind.as_str())
            .set(f64::from(self.cfg.page_size));
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_secs(self.cfg.run_deadline_secs));
        let span =
            tracing::info_span!("sync", run_id, instance = %instance, kind = kind.as_str(), mode);
        let run = async {
            match kind {
                Kind::Computers => {
                    self.pipeline(run_id, |tx| self.fetch_computers(since, tx))
                        .await
                }
                Kind::MobileDevices => {
                    self.pipeline(run_id, |tx| self.fetch_mobile_devices(since, tx))
                        .await
                }
            }
        };
        let (result, counts) = run.instrument(span.clone()).await;
        let (status, error) = match &result {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(RunError::Interrupted) => (
                RunStatus::Interrupted,
                Some("stopped by shutdown; completed pages were kept".into()),
            ),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let cursor_after = (status == RunStatus::Succeeded).then_some(started_at);
        self.store
            .finish_run(&RunEnd {
                run_id,
                instance: &instance,
                kind: kind.as_str(),
                status,
                counts,
                error: error.clone(),
                cursor_after,
                finished_at: Utc::now(),
            })
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
        record_run_metrics(&summary);
        span.in_scope(|| {
            if summary.succeeded() {
                tracing::info!("{summary}");
            } else {
                tracing::error!("{summary}");
            }
        });
        Ok(summary)
    }

    /// Runs a fetcher against a writer task; returns the first error and the committed counts.
    async fn pipeline<R, F, Fut>(&self, run_id: i64, fetch: F) -> (Result<(), RunError>, RunCounts)
    where
        R: Persist,
        F: FnOnce(mpsc::Sender<Batch<R>>) -> Fut,
        Fut: Future<Output = Result<(), RunError>>,
    {
        let (tx, rx) = mpsc::channel::<Batch<R>>(8);
        self.expected.store(0, Ordering::Relaxed);
        let writer = tokio::spawn(write_batches(
            self.store.clone(),
            self.client.instance().to_string(),
            run_id,
            rx,
            self.expected.clone(),
        ));
        let fetched = fetch(tx).await;
        // The sender is dropped by now, so the writer drains what it has and stops.
        let (written, counts) = match writer.await {
            Ok((r, c)) => (r.map_err(RunError::from), c),
            Err(e) => (
                Err(RunError::Other(format!("writer task failed: {e}"))),
                RunCounts::default(),
            ),
        };
        // A write error is the root cause when both failed (the fetcher saw a closed channel).
        (written.and(fetched), counts)
    }

    /// Reads keyset pages (`list(after)`) with records inline, decodes and sends each page to
    /// the writer. Stops when a page holds every remaining match or is empty.
    async fn fetch_pages<R, L, LFut, D>(
        &self,
        list: L,
        decode: D,
        tx: mpsc::Sender<Batch<R>>,
    ) -> Result<(), RunError>
    where
        R: Persist,
        L: Fn(Option<i64>) -> LFut,
        LFut: Future<Output = Result<InventoryPage, JamfError>>,
        D: Fn(&RawValue) -> Result<R, RecordError>,
    {
        let mut after: Option<i64> = None;
        loop {
            self.check_stop()?;
            let page = list(after).await?;
            if after.is_none() {
                self.expected.store(page.total_count, Ordering::Relaxed);
            }
            if page.results.is_empty() {
                return Ok(());
            }
            let n = page.results.len() as i64;
            let mut batch = Batch::new(page.results.len());
            let mut max_id = after;
            for raw in &page.results {
                match decode(raw) {
                    Ok(r) => {
                        max_id = max_id.max(Some(r.jamf_id()));
                        batch.records.push(r);
                    }
                    Err(e) => {
                        // Keep paging past a bad record when its id is readable.
                        max_id = max_id.max(e.id.trim().parse().ok());
                        batch.failed += 1;
                        log_bad_record(R::KIND, &e);
                    }
                }
            }
            if max_id == after {
                return Err(RunError::Other(format!(
                    "cannot page past id {after:?}: no record on the page has a readable id"
                )));
            }
            batch.listed = n;
            batch.last_id = max_id;
            tx.send(batch)
                .await
                .map_err(|_| RunError::Other("writer stopped".into()))?;
            tracing::debug!(
                page_records = n,
                remaining = page.total_count - n,
                "page done"
            );
            if n >= page.total_count {
                return Ok(());
            }
            after = max_id;
        }
    }

    /// Fetches one record per id from `ids` through the worker pool (as wide as the connection
    /// limit) and sends them to the writer in batches. A 404 counts as `missing`; a record that
    /// does not decode is logged and counted; any other error stops the run.
    async fn fetch_each<R, F, Fut>(
        &self,
        ids: mpsc::Receiver<i64>,
        listed: &AtomicI64,
        fetch: F,
        tx: &mpsc::Sender<Batch<R>>,
    ) -> Result<(), RunError>
    where
        R: Persist,
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Fetched<R>>,
    {
        let workers = self.client.max_concurrency() as usize;
        let batch_size = self.cfg.page_size as usize;
        let stop = self.stop.clone();
        let deadline = self
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(self.cfg.run_deadline_secs));
        // On shutdown or at the run deadline the id stream ends: requests on the wire finish,
        // nothing new starts.
        let ids = futures_util::stream::unfold(ids, move |mut rx| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    biased;
                    _ = stop.stopped() => None,
                    _ = tokio::time::sleep_until(deadline.into()) => None,
                    id = rx.recv() => id.map(|id| (id, rx)),
                }
            }
        });
        let mut results = std::pin::pin!(ids
            .map(|id| {
                let f = fetch(id);
                async move { (id, f.await) }
            })
            .buffer_unordered(workers));
        let mut batch = Batch::new(batch_size);
        let mut sent_listed = 0;
        loop {
            let next = results.next().await;
            let done = next.is_none();
            if let Some((id, result)) = next {
                match result {
                    Ok(Ok(record)) => batch.records.push(record),
                    Ok(Err(e)) => {
                        batch.failed += 1;
                        log_bad_record(R::KIND, &e);
                    }
                    Err(e) if e.is_not_found() => {
                        tracing::info!(id, "device deleted between listing and fetching");
                        batch.missing += 1;
                    }
                    Err(e) => return Err(RunError::from(e)),
                }
            }
            let now_listed = listed.load(Ordering::Relaxed);
            if batch.size() as usize >= batch_size
                || (done && (batch.size() > 0 || now_listed > sent_listed))
            {
                batch.listed = now_listed - sent_listed;
                sent_listed = now_listed;
                let full = std::mem::replace(&mut batch, Batch::new(batch_size));
                tx.send(full)
                    .await
                    .map_err(|_| RunError::Other("writer stopped".into()))?;
            }
            if done {
                return self.check_stop();
            }
        }
    }
}

/// Writes batches as they come; returns the first error and the counts committed so far.
async fn write_batches<S: Store, R: Persist>(
    store: Arc<S>,
    instance: String,
    run_id: i64,
    mut rx: mpsc::Receiver<Batch<R>>,
    expected: Arc<AtomicI64>,
) -> (Result<(), StoreError>, RunCounts) {
    let mut counts = RunCounts::default();
    let mut seen: HashSet<i64> = HashSet::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut pages = 0u64;
    while let Some(mut batch) = rx.recv().await {
        pages += 1;
        // When writing is the bottleneck, batches queue up: commit them together (one
        // transaction and one fsync instead of several), up to a bound.
        while batch.records.len() < MERGE_UP_TO {
            match rx.try_recv() {
                Ok(more) => {
                    pages += 1;
                    batch.records.extend(more.records);
                    batch.listed += more.listed;
                    batch.failed += more.failed;
                    batch.missing += more.missing;
                    batch.last_id = batch.last_id.max(more.last_id);
                }
                Err(_) => break,
            }
        }
        // Within a run each device is written once, whatever the server sent twice.
        batch.records.retain(|c| seen.insert(c.jamf_id()));
        let mut next = counts;
        next.listed += batch.listed;
        next.fetched += batch.records.len() as i64;
        next.failed += batch.failed;
        next.missing += batch.missing;
        match R::persist(
            &*store,
            &instance,
            run_id,
            &batch.records,
            &next,
            batch.last_id,
        )
        .await
        {
            Ok(outcome) => {
                next.upserted += outcome.upserted;
                next.unchanged += outcome.unchanged;
                counts = next;
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    let done = counts.fetched + counts.failed + counts.missing;
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                    let total = expected.load(Ordering::Relaxed);
                    let eta = (total > done && rate > 0.0)
                        .then(|| format!("{:.0}s", (total - done) as f64 / rate));
                    tracing::info!(
                        pages,
                        records = done,
                        of = total,
                        upserted = counts.upserted,
                        failed = counts.failed,
                        rate = format!("{rate:.0}/s"),
                        eta = eta.as_deref().unwrap_or("?"),
                        "progress"
                    );
                }
            }
            Err(e) => return (Err(e), counts),
        }
    }
    (Ok(()), counts)
}

fn log_bad_record(kind: Kind, e: &RecordError) {
    metrics::counter!(metric::RECORDS, "kind" => kind.as_str(), "outcome" => "failed").increment(1);
    tracing::warn!(kind = kind.as_str(), id = %e.id, error = %e.message, "skipping a record that does not decode");
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// RSQL for one keyset page: `general.reportDate>="…";id>"…"`.
pub fn keyset_filter(since: Option<DateTime<Utc>>, after: Option<i64>) -> Option<String> {
    keyset_filter_on("general.reportDate", "id", since, after)
}

/// RSQL for one keyset page over any date and id field.
pub fn keyset_filter_on(
    date_field: &str,
    id_field: &str,
    since: Option<DateTime<Utc>>,
    after: Option<i64>,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(s) = since {
        parts.push(format!(
            "{date_field}>=\"{}\"",
            s.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ));
    }
    if let Some(id) = after {
        parts.push(format!("{id_field}>\"{id}\""));
    }
    (!parts.is_empty()).then(|| parts.join(";"))
}

fn record_run_metrics(s: &RunSummary) {
    let kind = s.kind.as_str();
    let c = &s.counts;
    for (outcome, n) in [
        ("upserted", c.upserted),
        ("unchanged", c.unchanged),
        ("missing", c.missing),
    ] {
        metrics::counter!(metric::RECORDS, "kind" => kind, "outcome" => outcome)
            .increment(n.max(0) as u64);
    }
    metrics::counter!(metric::RUNS, "kind" => kind, "result" => s.status.as_str()).increment(1);
    metrics::histogram!(metric::RUN_DURATION, "kind" => kind).record(s.elapsed.as_secs_f64());
    if s.succeeded() {
        metrics::gauge!(metric::LAST_SUCCESS, "kind" => kind).set(Utc::now().timestamp() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_filter_forms() {
        assert_eq!(keyset_filter(None, None), None);
        assert_eq!(keyset_filter(None, Some(5)).as_deref(), Some("id>\"5\""));
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .ok();
        assert_eq!(
            keyset_filter(t, Some(9)).as_deref(),
            Some("general.reportDate>=\"2026-11-22T00:00:00.000Z\";id>\"9\"")
        );
    }
}
