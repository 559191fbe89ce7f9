//! The moving parts every device source is built from: keyset paging with page shrinking, a
//! worker pool fetching one record per id, and the writer task that commits batches.
//!
//! # Design
//! - **Keyset paging.** Pages are requested with the source's id sort, page 0 and `id>"<last
//!   id>"` in the filter. Devices entering or leaving the filtered set while we page cannot
//!   shift later pages, so nothing is skipped. Paging stops at an empty page or once a page
//!   holds every remaining match (`totalCount`), never on "fewer than asked for" (Jamf clamps
//!   page sizes silently). A listing is read in several id spans at once (`sync::ranges`).
//! - **Shrinking.** A page that times out (or answers 504) is asked for again at half the size
//!   from the same position, down to `sync.min_page_size`; good pages grow the size back.
//! - **Pool.** Per-device fetches run as wide as the connection limit; the limiter decides how
//!   many are actually on the wire. On shutdown or at the run deadline the id stream ends:
//!   requests on the wire finish, nothing new starts.
//! - **Writer.** Fetching and writing overlap: the writer commits each batch (records plus run
//!   progress in one transaction) while the next requests are on the wire; batches that queue
//!   up are merged into one transaction. Within a run each device is written once. Up to
//!   `Store::concurrent_writes` batches are in flight (two on PostgreSQL), so they may commit
//!   in any order: each adds its own counts to the run's row, and the counts the writer returns
//!   are those of the writes that committed.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::error::RunError;
use super::ranges::Span;
use super::run::Run;
use crate::config::HistoryConfig;
use crate::domain::text::shown;
use crate::domain::{Kind, Record, RunCounts};
use crate::jamf::models::InventoryPage;
use crate::jamf::{JamfError, RecordError};
use crate::store::{Progress, Store, StoreError, Write};

/// Records the writer commits together at most when batches are queued.
const MERGE_UP_TO: usize = 1000;

/// Raw JSON the writer commits together at most when batches are queued: records with heavy
/// sections (a Mac's applications are ~10 KB) stop merging long before `MERGE_UP_TO`, so
/// memory does not follow the section's size.
const MERGE_UP_TO_BYTES: usize = 4 << 20;

/// Devices a run may isolate before failures outnumbering successes fail it instead.
const MAX_ISOLATED: usize = 10;

/// How often a long run logs a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One batch for the writer task.
#[derive(Debug)]
pub(crate) struct Batch<R> {
    pub records: Vec<R>,
    pub last_id: Option<i64>,
    pub listed: i64,
    pub failed: i64,
    pub missing: i64,
    /// Of `failed`, those with a known id (and why): recorded in `sync_failures`.
    pub failures: Vec<(i64, String)>,
}

impl<R> Batch<R> {
    pub fn new(capacity: usize) -> Self {
        Batch {
            records: Vec::with_capacity(capacity),
            last_id: None,
            listed: 0,
            failed: 0,
            missing: 0,
            failures: Vec::new(),
        }
    }

    /// A failed device: counted, and recorded when its id is known.
    pub fn fail(&mut self, id: Option<i64>, why: String) {
        self.failed += 1;
        if let Some(id) = id {
            self.failures.push((id, why));
        }
    }

    /// What a fetch by id produced, as a batch for the writer.
    pub fn from_fetched(got: Fetched<R>) -> Self {
        let mut batch = Batch::new(got.records.len());
        batch.listed =
            (got.records.len() + got.missing.len() + got.gone.len() + got.failed.len()) as i64;
        batch.missing = (got.missing.len() + got.gone.len()) as i64;
        batch.failed = got.failed.len() as i64;
        batch.failures = got.errors;
        batch.records = got.records;
        batch
    }

    fn size(&self) -> i64 {
        self.records.len() as i64 + self.failed + self.missing
    }

    fn merge(&mut self, more: Batch<R>) {
        self.records.extend(more.records);
        self.failures.extend(more.failures);
        self.listed += more.listed;
        self.failed += more.failed;
        self.missing += more.missing;
        self.last_id = self.last_id.max(more.last_id);
    }
}

/// What one fetch of a record produced.
pub(crate) type FetchOne<R> = Result<Result<R, RecordError>, JamfError>;

/// Records fetched by id, and the ids that were not.
#[derive(Debug)]
pub(crate) struct Fetched<R> {
    pub records: Vec<R>,
    /// A list answer left them out: gone, or hidden by a listing glitch (unconfirmed).
    pub missing: Vec<i64>,
    /// A direct request for them answered 404: Jamf does not have them (any more).
    pub gone: Vec<i64>,
    /// Jamf would not give them: a record that does not decode, or a failure of that device
    /// alone (logged and counted).
    pub failed: Vec<i64>,
    /// Why each of `failed` failed.
    pub errors: Vec<(i64, String)>,
}

impl<R> Fetched<R> {
    pub fn merge(&mut self, more: Fetched<R>) {
        self.records.extend(more.records);
        self.missing.extend(more.missing);
        self.gone.extend(more.gone);
        self.failed.extend(more.failed);
        self.errors.extend(more.errors);
    }

    /// A device Jamf would not give.
    pub fn fail(&mut self, id: i64, why: String) {
        self.failed.push(id);
        self.errors.push((id, why));
    }
}

impl<R> Default for Fetched<R> {
    fn default() -> Self {
        Fetched {
            records: Vec::new(),
            missing: Vec::new(),
            gone: Vec::new(),
            failed: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// How a keyset listing sizes its pages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sizing {
    /// The run's adaptive size: shrinks after a page timed out.
    Adaptive,
    /// Always this size (id listings at Jamf's maximum).
    Fixed(u32),
}

/// What to do with a page Jamf would not give: `recover(span, size, error)` reads that
/// stretch some other way and returns what goes to the receiver, the highest id it covers and
/// whether it was the span's last (`Ok(None)`: it cannot, the run fails with the error).
pub(crate) type Recovered<T> = Option<(T, Option<i64>, bool)>;

/// One list page at the run's current size; a page that times out, answers 504 or a plain 500
/// is asked for again at half the size from the same position. At the smallest size a 500
/// comes back (the caller isolates the device behind it); timeouts and 504s are retried
/// within the request's budget.
pub(crate) async fn list_with_shrink<L, Fut>(run: &Run, list: L) -> Result<InventoryPage, JamfError>
where
    L: Fn(u32, bool) -> Fut,
    Fut: Future<Output = Result<InventoryPage, JamfError>>,
{
    loop {
        let size = run.page_size();
        match list(size, true).await {
            Ok(page) => {
                run.grow();
                return Ok(page);
            }
            Err(e) if e.asks_for_smaller_pages() && size > run.min_page_size() => {
                let smaller = run.shrink();
                tracing::warn!(size, smaller, error = %e, "list page failed; asking for a smaller one");
            }
            Err(e) if e.asks_for_smaller_pages() && !e.is_record_specific() => {
                return list(size, false).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A page of full records decoded into a batch; the highest readable id it covers.
pub(crate) fn decode_page<R: Record>(
    page: &InventoryPage,
    decode: fn(&RawValue, DateTime<Utc>) -> Result<R, RecordError>,
) -> (Batch<R>, Option<i64>) {
    let mut batch = Batch::new(page.results.len());
    let mut max_id = None;
    for raw in &page.results {
        match decode(raw, page.requested_at) {
            Ok(r) => {
                max_id = max_id.max(Some(r.jamf_id()));
                batch.records.push(r);
            }
            Err(e) => {
                // Keep paging past a bad record when its id is readable.
                max_id = max_id.max(e.jamf_id());
                log_bad_record(R::KIND, &e);
                batch.fail(e.jamf_id(), e.message.clone());
            }
        }
    }
    batch.listed = page.results.len() as i64;
    batch.last_id = max_id;
    (batch, max_id)
}

/// The ids of a page (field `field` of each record); the highest of them.
pub(crate) fn page_ids(page: &InventoryPage, field: &str) -> (Vec<i64>, Option<i64>) {
    let ids: Vec<i64> = page
        .results
        .iter()
        .filter_map(|raw| {
            let id = crate::jamf::decode::numeric_id(raw.get(), field);
            if id.is_none() {
                tracing::warn!(
                    record = %raw.get().chars().take(120).collect::<String>(),
                    "listed record without a numeric id skipped"
                );
            }
            id
        })
        .collect();
    let max = ids.iter().copied().max();
    (ids, max)
}

/// Fetches one record per listed id through the worker pool and sends them to the writer in
/// batches of `batch_size`. A 404 counts as `missing`; a record that does not decode, or a
/// failure of that device alone ([`JamfError::is_record_specific`]), is logged, counted and
/// recorded for the next run; any other error stops the run, and so does a run where such
/// failures outnumber the records read (the server is broken, not a few records).
pub(crate) async fn fetch_each<R, F, Fut>(
    run: &Run,
    workers: usize,
    batch_size: usize,
    mut ids: mpsc::Receiver<Vec<i64>>,
    fetch: F,
    tx: &mpsc::Sender<Batch<R>>,
) -> Result<(), RunError>
where
    R: Record,
    F: Fn(i64) -> Fut,
    Fut: Future<Output = FetchOne<R>>,
{
    let workers = workers.max(1);
    let mut pending: VecDeque<i64> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut listing = true;
    let mut listed = 0;
    let mut sent_listed = 0;
    let mut batch = Batch::new(batch_size);
    let (mut isolated, mut read) = (0usize, 0usize);
    let ended = run.ended();
    tokio::pin!(ended);
    loop {
        while in_flight.len() < workers {
            let Some(id) = pending.pop_front() else { break };
            in_flight.push(fetch(id).map(move |result| (id, result)));
        }
        let done = in_flight.is_empty() && pending.is_empty() && !listing;
        if !done {
            tokio::select! {
                biased;
                // Shutdown or deadline: requests on the wire finish, nothing new starts.
                _ = &mut ended, if listing || !pending.is_empty() => {
                    listing = false;
                    pending.clear();
                }
                Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(Ok(record)) => {
                            read += 1;
                            batch.records.push(record);
                        }
                        Ok(Err(e)) => {
                            log_bad_record(R::KIND, &e);
                            batch.fail(Some(id), e.message);
                        }
                        Err(e) if e.is_not_found() => {
                            tracing::info!(id, "device deleted between listing and fetching");
                            batch.missing += 1;
                        }
                        Err(e) if e.is_record_specific() => {
                            isolated += 1;
                            if isolated > MAX_ISOLATED && isolated > read {
                                return Err(RunError::Other(format!(
                                    "Jamf failed {isolated} records and gave {read}: a server-wide problem, not a few bad records; last error: {e}"
                                )));
                            }
                            log_isolated(R::KIND, id, &e);
                            batch.fail(Some(id), e.to_string());
                        }
                        Err(e) => return Err(RunError::from(e)),
                    }
                }
                chunk = ids.recv(), if listing && pending.len() < workers => match chunk {
                    Some(chunk) => {
                        listed += chunk.len() as i64;
                        pending.extend(chunk);
                    }
                    None => listing = false,
                },
            }
        }
        if batch.size() as usize >= batch_size
            || (done && (batch.size() > 0 || listed > sent_listed))
        {
            batch.listed = listed - sent_listed;
            sent_listed = listed;
            let full = std::mem::replace(&mut batch, Batch::new(batch_size));
            tx.send(full)
                .await
                .map_err(|_| RunError::Other("writer stopped".into()))?;
        }
        if done {
            return run.check();
        }
    }
}

/// Fetches these ids through the worker pool (no run: a refresh or a confirmation). A 404 is
/// `gone`; a failure of that device alone is `failed` (with its error); any other failure
/// fails the whole call.
pub(crate) async fn fetch_by_id<R, F, Fut>(
    ids: &[i64],
    workers: usize,
    fetch: F,
) -> Result<Fetched<R>, JamfError>
where
    R: Record,
    F: Fn(i64) -> Fut,
    Fut: Future<Output = FetchOne<R>>,
{
    let results: Vec<(i64, FetchOne<R>)> = futures_util::stream::iter(ids.iter().copied())
        .map(|id| {
            let f = fetch(id);
            async move { (id, f.await) }
        })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    let mut got = Fetched::default();
    for (id, result) in results {
        match result {
            Ok(Ok(record)) => got.records.push(record),
            Ok(Err(e)) => {
                log_bad_record(R::KIND, &e);
                got.fail(id, e.message);
            }
            Err(e) if e.is_not_found() => got.gone.push(id),
            Err(e) if e.is_record_specific() => {
                log_isolated(R::KIND, id, &e);
                got.fail(id, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Of these ids, those a direct request for the device answers 404 (`probe`), through the
/// worker pool; a device Jamf fails on alone is not gone; any other failure fails the call.
pub(crate) async fn gone_ids<F, Fut>(
    ids: &[i64],
    workers: usize,
    probe: F,
) -> Result<Vec<i64>, JamfError>
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<(), JamfError>>,
{
    let results: Vec<(i64, Result<(), JamfError>)> =
        futures_util::stream::iter(ids.iter().copied())
            .map(|id| probe(id).map(move |r| (id, r)))
            .buffer_unordered(workers.max(1))
            .collect()
            .await;
    let mut gone = Vec::new();
    for (id, result) in results {
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() => gone.push(id),
            // Jamf has it but cannot give it: not gone.
            Err(e) if e.is_record_specific() => {}
            Err(e) => return Err(e),
        }
    }
    gone.sort_unstable();
    Ok(gone)
}

/// The records of one filtered list answer for `ids`; ids not in the answer are missing.
pub(crate) fn fetched_from_page<R: Record>(
    ids: &[i64],
    page: &InventoryPage,
    decode: fn(&RawValue, DateTime<Utc>) -> Result<R, RecordError>,
) -> Fetched<R> {
    let mut got = Fetched::default();
    let mut answered = HashSet::new();
    for raw in &page.results {
        match decode(raw, page.requested_at) {
            Ok(r) => {
                answered.insert(r.jamf_id());
                got.records.push(r);
            }
            Err(e) => {
                log_bad_record(R::KIND, &e);
                if let Some(id) = e.jamf_id() {
                    answered.insert(id);
                    got.fail(id, e.message);
                }
            }
        }
    }
    got.missing = ids
        .iter()
        .copied()
        .filter(|id| !answered.contains(id))
        .collect();
    got
}

/// Writes batches as they come, up to `Store::concurrent_writes` at once; returns the first
/// error and the counts committed so far. After an error nothing new starts, and the writes
/// in flight are awaited so the counts are what was committed. A run whose isolated records
/// outnumber the ones written stops the same way ([`too_many_isolated`]).
pub(crate) async fn write_batches<S: Store, R: Record>(
    store: Arc<S>,
    instance: String,
    run: Arc<Run>,
    history: Arc<HistoryConfig>,
    mut rx: mpsc::Receiver<Batch<R>>,
) -> (Result<(), RunError>, RunCounts) {
    let parallel = store.concurrent_writes().max(1);
    let mut counts = RunCounts::default();
    let mut seen: HashSet<i64> = HashSet::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut pages = 0u64;
    let mut first_error: Option<RunError> = None;
    let mut open = true;
    let mut in_flight = FuturesUnordered::new();
    let write = |batch: Batch<R>| {
        // This write's own counts; the store adds what it finds and adds it all to the run.
        let mine = RunCounts {
            listed: batch.listed,
            fetched: batch.records.len() as i64,
            failed: batch.failed,
            missing: batch.missing,
            ..RunCounts::default()
        };
        let progress = run.id.map(|run_id| Progress {
            run_id,
            counts: mine,
            last_id: batch.last_id,
        });
        let (store, instance, history, overwrite) = (&store, &instance, &history, run.overwrite);
        async move {
            let outcome = store
                .write_devices(Write {
                    instance,
                    records: &batch.records,
                    failures: &batch.failures,
                    progress: progress.as_ref(),
                    overwrite,
                    history,
                    now: Utc::now(),
                })
                .await;
            (mine, outcome)
        }
    };
    loop {
        let take = open && first_error.is_none() && in_flight.len() < parallel;
        tokio::select! {
            next = rx.recv(), if take => {
                let Some(mut batch) = next else {
                    open = false;
                    continue;
                };
                pages += 1;
                // When writing is the bottleneck, batches queue up: commit them together (one
                // transaction and one fsync instead of several), up to a bound.
                let mut bytes: usize = batch.records.iter().map(|r| r.raw().len()).sum();
                while batch.records.len() < MERGE_UP_TO && bytes < MERGE_UP_TO_BYTES {
                    match rx.try_recv() {
                        Ok(more) => {
                            pages += 1;
                            bytes += more.records.iter().map(|r| r.raw().len()).sum::<usize>();
                            batch.merge(more);
                        }
                        Err(_) => break,
                    }
                }
                batch.records.retain(|r| seen.insert(r.jamf_id()));
                // A batch with failures inserts `sync_failures` rows an earlier write may be
                // clearing: it starts once the writes before it committed, so two writes
                // never lock the same failure rows in opposite order (a later write only
                // clears rows of devices it answered, which this batch did not).
                if !batch.failures.is_empty() {
                    while let Some((mine, outcome)) = in_flight.next().await {
                        settle(&mut counts, &mut first_error, mine, outcome);
                    }
                    if first_error.is_some() {
                        continue;
                    }
                }
                in_flight.push(write(batch));
            }
            Some((mine, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&mut counts, &mut first_error, mine, outcome);
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    log_progress(&counts, pages, started, run.expected());
                }
            }
            else => break,
        }
    }
    match first_error {
        Some(e) => (Err(e), counts),
        None => (Ok(()), counts),
    }
}

/// Adds a finished write to the run's counts, or keeps its error if it is the first; past
/// the cap on isolated records, that is the error.
fn settle(
    counts: &mut RunCounts,
    first_error: &mut Option<RunError>,
    mine: RunCounts,
    outcome: Result<crate::store::PageOutcome, StoreError>,
) {
    match outcome {
        Ok(o) => {
            counts.add(&o.counts(mine));
            if let Some(e) = too_many_isolated(counts) {
                first_error.get_or_insert(e);
            }
        }
        Err(e) => {
            first_error.get_or_insert(e.into());
        }
    }
}

/// The run's error once more than [`MAX_ISOLATED`] records were isolated (they did not
/// decode, Jamf failed on them alone, the database refused them) and they outnumber the ones
/// written: that is a schema or server problem, not a few odd devices, and the cursor must
/// stay where it is. The same rule as [`fetch_each`]'s for Jamf's failures.
fn too_many_isolated(counts: &RunCounts) -> Option<RunError> {
    let (isolated, written) = (counts.failed, counts.fetched);
    (isolated > MAX_ISOLATED as i64 && isolated > written).then(|| {
        RunError::Other(format!(
            "{isolated} records isolated and {written} written: a schema or server-wide \
             problem, not a few odd records; stopped, the cursor stays (their errors are in \
             sync_failures)"
        ))
    })
}

fn log_progress(counts: &RunCounts, pages: u64, started: Instant, total: i64) {
    let done = counts.fetched + counts.failed + counts.missing;
    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
    let eta = (total > done && rate > 0.0).then(|| format!("{:.0}s", (total - done) as f64 / rate));
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

/// A failure of one device alone: logged, counted `failed` (in the run's counts, exported
/// when the run ends), recorded for the next run.
pub(crate) fn log_isolated(kind: Kind, id: i64, e: &JamfError) {
    // Jamf's error text and a record's come from outside: escaped, as every such text in a log.
    let error = shown(&e.to_string(), 300);
    tracing::warn!(kind = kind.as_str(), id, error = %error, "Jamf failed this device; recorded in sync_failures, retried next run");
}

pub(crate) fn log_bad_record(kind: Kind, e: &RecordError) {
    let (id, error) = (shown(&e.id, 40), shown(&e.message, 300));
    tracing::warn!(kind = kind.as_str(), id = %id, error = %error, "skipping a record that does not decode");
}

/// RSQL for one keyset page over a date and an id field:
/// `date>="…";id>"<after>";id<="<upto>"`.
pub fn keyset_filter(
    date_field: &str,
    id_field: &str,
    since: Option<DateTime<Utc>>,
    span: Span,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(s) = since {
        parts.push(format!(
            "{date_field}>=\"{}\"",
            s.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ));
    }
    if let Some(id) = span.after {
        parts.push(format!("{id_field}>\"{id}\""));
    }
    if let Some(id) = span.upto {
        parts.push(format!("{id_field}<=\"{id}\""));
    }
    (!parts.is_empty()).then(|| parts.join(";"))
}

/// RSQL selecting these ids: `id=in=(1,2,3)`.
pub fn id_in_filter(field: &str, ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("{field}=in=({})", list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_filter_forms() {
        let f = |since, after, upto| {
            keyset_filter("general.reportDate", "id", since, Span { after, upto })
        };
        assert_eq!(f(None, None, None), None);
        assert_eq!(f(None, Some(5), None).as_deref(), Some("id>\"5\""));
        assert_eq!(
            f(None, Some(5), Some(90)).as_deref(),
            Some("id>\"5\";id<=\"90\"")
        );
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .ok();
        assert_eq!(
            f(t, Some(9), None).as_deref(),
            Some("general.reportDate>=\"2026-11-22T00:00:00.000Z\";id>\"9\"")
        );
    }

    #[test]
    fn id_in_filter_lists_every_id() {
        assert_eq!(id_in_filter("id", &[3, 1, 20]), "id=in=(3,1,20)");
        assert_eq!(
            id_in_filter("mobileDeviceId", &[7]),
            "mobileDeviceId=in=(7)"
        );
    }
}
