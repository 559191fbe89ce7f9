//! The writer task: fetching and writing overlap, the writer committing each batch (records
//! plus run progress in one transaction) while the next requests are on the wire; batches
//! that queue up are merged into one transaction. Within a run each device is written once.
//! Up to `Store::concurrent_writes` batches are in flight (two on PostgreSQL), so they may
//! commit in any order: each adds its own counts to the run's row, and the counts the writer
//! returns are those of the writes that committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::batch::{Batch, MAX_ISOLATED};
use super::error::RunError;
use super::run::Run;
use crate::config::HistoryConfig;
use crate::domain::{Record, RunCounts};
use crate::store::{Progress, Store, StoreError, Write};

/// Records the writer commits together at most when batches are queued.
const MERGE_UP_TO: usize = 1000;

/// Raw JSON the writer commits together at most when batches are queued: records with heavy
/// sections (a Mac's applications are ~10 KB) stop merging long before `MERGE_UP_TO`, so
/// memory does not follow the section's size.
const MERGE_UP_TO_BYTES: usize = 4 << 20;

/// How often a long run logs a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
