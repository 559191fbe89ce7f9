//! The sync engine: one run of the computers delta sync, from cursor to committed pages.
//!
//! # Design
//! - **Cursor.** A delta run asks Jamf for `general.reportDate >= cursor - overlap`, where the
//!   cursor is the *start* time of the last successful run. Starting from the start (not the
//!   newest report date seen) means inventory that arrives while a run pages is picked up by the
//!   next run; the overlap covers clock skew between us and Jamf.
//! - **Keyset paging.** Pages are requested with `sort=id:asc`, `page=0` and `id>"<last id>"` in
//!   the filter. Devices entering or leaving the filtered set while we page cannot shift later
//!   pages, so nothing is skipped; ids are also de-duplicated within a run.
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

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{ApiVersion, FetchStrategy, SyncConfig};
use crate::jamf::models::{Computer, RecordError};
use crate::jamf::{JamfClient, JamfError};
use crate::store::{Kind, NewRun, RunCounts, RunEnd, RunStatus, Store, StoreError};
use crate::telemetry::metric;

/// What asked for a run, stored in `sync_runs.trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Cli,
    Demo,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Demo => "demo",
            Trigger::Schedule => "schedule",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Ignore the cursor and read every computer.
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
enum RunError {
    #[error(transparent)]
    Jamf(#[from] JamfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// Runs syncs for one Jamf instance into one store.
pub struct Engine<S: Store> {
    store: Arc<S>,
    client: Arc<JamfClient>,
    cfg: SyncConfig,
}

/// One batch for the writer task.
struct Batch {
    records: Vec<Computer>,
    last_id: Option<i64>,
    listed: i64,
    failed: i64,
    missing: i64,
}

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, client: Arc<JamfClient>, cfg: SyncConfig) -> Self {
        Self { store, client, cfg }
    }

    pub fn client(&self) -> &Arc<JamfClient> {
        &self.client
    }

    fn strategy(&self) -> FetchStrategy {
        match self.cfg.strategy {
            FetchStrategy::Auto => FetchStrategy::Inline,
            s => s,
        }
    }

    /// One computers sync. `Err` only when the database itself fails before or after the run;
    /// a failed Jamf read is a summary with status `failed`.
    pub async fn sync_computers(&self, opts: SyncOptions) -> Result<RunSummary, StoreError> {
        let instance = self.client.instance().to_string();
        let started_at = Utc::now();
        let t0 = Instant::now();
        let cursor = if opts.full {
            None
        } else {
            self.store.cursor(&instance, Kind::Computers).await?
        };
        let since = cursor.map(|c| c - chrono::Duration::seconds(self.cfg.overlap_secs as i64));
        let mode = if since.is_some() { "delta" } else { "full" };
        let run_id = self
            .store
            .start_run(&NewRun {
                instance: &instance,
                kind: Kind::Computers,
                trigger: opts.trigger.as_str(),
                mode,
                started_at,
                cursor_before: cursor,
            })
            .await?;
        let span =
            tracing::info_span!("sync", run_id, instance = %instance, kind = "computers", mode);
        let (result, counts) = self
            .run_computers(run_id, since)
            .instrument(span.clone())
            .await;
        let (status, error) = match &result {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let cursor_after = (status == RunStatus::Succeeded).then_some(started_at);
        self.store
            .finish_run(&RunEnd {
                run_id,
                instance: &instance,
                kind: Kind::Computers,
                status,
                counts,
                error: error.clone(),
                cursor_after,
                finished_at: Utc::now(),
            })
            .await?;
        let summary = RunSummary {
            run_id,
            kind: Kind::Computers,
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

    async fn run_computers(
        &self,
        run_id: i64,
        since: Option<DateTime<Utc>>,
    ) -> (Result<(), RunError>, RunCounts) {
        let (tx, rx) = mpsc::channel::<Batch>(2);
        let writer = tokio::spawn(write_batches(
            self.store.clone(),
            self.client.instance().to_string(),
            run_id,
            rx,
        ));
        let fetched = match self.strategy() {
            FetchStrategy::Detail => self.fetch_detail(since, tx).await,
            _ => self.fetch_inline(since, tx).await,
        };
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

    async fn inventory_version(&self) -> Result<ApiVersion, JamfError> {
        self.client.inventory_version().await
    }

    /// Lists one keyset page, stepping down the API version on a 404 of the first request.
    async fn list_page(
        &self,
        sections: &[String],
        since: Option<DateTime<Utc>>,
        after: Option<i64>,
    ) -> Result<crate::jamf::models::InventoryPage, JamfError> {
        let filter = keyset_filter(since, after);
        loop {
            let version = self.inventory_version().await?;
            match self
                .client
                .computers_page(version, sections, self.cfg.page_size, filter.as_deref())
                .await
            {
                Err(e) if e.is_not_found() && after.is_none() => {
                    if self.client.step_down_inventory_version().await.is_none() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    async fn fetch_inline(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch>,
    ) -> Result<(), RunError> {
        let mut after: Option<i64> = None;
        loop {
            let page = self.list_page(&self.cfg.sections, since, after).await?;
            if page.results.is_empty() {
                return Ok(());
            }
            let n = page.results.len() as i64;
            let mut records = Vec::with_capacity(page.results.len());
            let mut failed = 0;
            let mut max_id = after;
            for raw in &page.results {
                match decode(raw) {
                    Ok(c) => {
                        max_id = max_id.max(Some(c.jamf_id));
                        records.push(c);
                    }
                    Err((id, e)) => {
                        max_id = max_id.max(id);
                        failed += 1;
                        log_bad_record(&e);
                    }
                }
            }
            if max_id == after {
                return Err(RunError::Other(format!(
                    "cannot page past id {after:?}: no record on the page has a readable id"
                )));
            }
            tx.send(Batch {
                records,
                last_id: max_id,
                listed: n,
                failed,
                missing: 0,
            })
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

    async fn fetch_detail(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch>,
    ) -> Result<(), RunError> {
        let general = &["GENERAL".to_string()];
        let (id_tx, id_rx) = mpsc::channel::<i64>(self.cfg.page_size as usize * 2);
        let listed = &AtomicI64::new(0);
        // The lister owns the id sender: when it finishes (or fails) the channel closes and the
        // fetcher drains the ids already listed.
        let lister = async move {
            let mut after = None;
            loop {
                let page = self.list_page(general, since, after).await?;
                let n = page.results.len() as i64;
                let mut max_id = after;
                for raw in &page.results {
                    match sniff_numeric_id(raw) {
                        Some(id) => {
                            max_id = max_id.max(Some(id));
                            if id_tx.send(id).await.is_err() {
                                return Ok(());
                            }
                        }
                        None => {
                            tracing::warn!(record = %truncate(raw.get(), 120), "listed record without a numeric id skipped")
                        }
                    }
                }
                listed.fetch_add(n, Ordering::Relaxed);
                if n == 0 || n >= page.total_count || max_id == after {
                    return Ok::<(), RunError>(());
                }
                after = max_id;
            }
        };
        let version = self.inventory_version().await?;
        let workers = self.client.max_concurrency() as usize;
        let batch_size = self.cfg.page_size as usize;
        let ids = futures_util::stream::unfold(id_rx, |mut rx| async move {
            rx.recv().await.map(|id| (id, rx))
        });
        let fetcher = async {
            let mut results = std::pin::pin!(ids
                .map(|id| {
                    let client = self.client.clone();
                    async move { (id, client.computer_detail(version, id).await) }
                })
                .buffer_unordered(workers));
            let mut batch = Batch {
                records: Vec::with_capacity(batch_size),
                last_id: None,
                listed: 0,
                failed: 0,
                missing: 0,
            };
            let mut sent_listed = 0;
            loop {
                let next = results.next().await;
                let done = next.is_none();
                if let Some((id, result)) = next {
                    match result {
                        Ok(raw) => match decode(&raw) {
                            Ok(c) => batch.records.push(c),
                            Err((_, e)) => {
                                batch.failed += 1;
                                log_bad_record(&e);
                            }
                        },
                        Err(e) if e.is_not_found() => {
                            tracing::info!(id, "computer deleted between listing and fetching");
                            batch.missing += 1;
                        }
                        Err(e) => return Err(RunError::from(e)),
                    }
                }
                let size = batch.records.len() as i64 + batch.failed + batch.missing;
                if size as usize >= batch_size || (done && size > 0) {
                    let now_listed = listed.load(Ordering::Relaxed);
                    batch.listed = now_listed - sent_listed;
                    sent_listed = now_listed;
                    let full = std::mem::replace(
                        &mut batch,
                        Batch {
                            records: Vec::with_capacity(batch_size),
                            last_id: None,
                            listed: 0,
                            failed: 0,
                            missing: 0,
                        },
                    );
                    tx.send(full)
                        .await
                        .map_err(|_| RunError::Other("writer stopped".into()))?;
                }
                if done {
                    let rest = listed.load(Ordering::Relaxed) - sent_listed;
                    if rest > 0 {
                        let _ = tx
                            .send(Batch {
                                records: Vec::new(),
                                last_id: None,
                                listed: rest,
                                failed: 0,
                                missing: 0,
                            })
                            .await;
                    }
                    return Ok(());
                }
            }
        };
        let (l, f) = tokio::join!(lister, fetcher);
        l.and(f)
    }
}

/// Writes batches as they come; returns the first error and the counts committed so far.
async fn write_batches<S: Store>(
    store: Arc<S>,
    instance: String,
    run_id: i64,
    mut rx: mpsc::Receiver<Batch>,
) -> (Result<(), StoreError>, RunCounts) {
    let mut counts = RunCounts::default();
    let mut seen: HashSet<i64> = HashSet::new();
    let mut last_progress = Instant::now();
    while let Some(mut batch) = rx.recv().await {
        // Within a run each device is written once, whatever the server sent twice.
        batch.records.retain(|c| seen.insert(c.jamf_id));
        let mut next = counts;
        next.listed += batch.listed;
        next.fetched += batch.records.len() as i64;
        next.failed += batch.failed;
        next.missing += batch.missing;
        match store
            .write_computers(
                &instance,
                run_id,
                &batch.records,
                &next,
                batch.last_id,
                Utc::now(),
            )
            .await
        {
            Ok(outcome) => {
                next.upserted += outcome.upserted;
                next.unchanged += outcome.unchanged;
                counts = next;
                if last_progress.elapsed() >= Duration::from_secs(5) {
                    last_progress = Instant::now();
                    tracing::info!(
                        listed = counts.listed,
                        fetched = counts.fetched,
                        upserted = counts.upserted,
                        failed = counts.failed,
                        "progress"
                    );
                }
            }
            Err(e) => return (Err(e), counts),
        }
    }
    (Ok(()), counts)
}

fn decode(raw: &RawValue) -> Result<Computer, (Option<i64>, RecordError)> {
    Computer::from_raw(raw).map_err(|e| (e.id.trim().parse().ok(), e))
}

fn log_bad_record(e: &RecordError) {
    metrics::counter!(metric::RECORDS, "kind" => "computers", "outcome" => "failed").increment(1);
    tracing::warn!(id = %e.id, error = %e.message, "skipping a computer record that does not decode");
}

fn sniff_numeric_id(raw: &RawValue) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(raw.get())
        .ok()?
        .id
        .trim()
        .parse()
        .ok()
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// RSQL for one keyset page: `general.reportDate>="…";id>"…"`.
pub fn keyset_filter(since: Option<DateTime<Utc>>, after: Option<i64>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(s) = since {
        parts.push(format!(
            "general.reportDate>=\"{}\"",
            s.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ));
    }
    if let Some(id) = after {
        parts.push(format!("id>\"{id}\""));
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
