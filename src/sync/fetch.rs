//! The worker pool: one request per listed id, as wide as the connection limit (the limiter
//! decides how many are actually on the wire). On shutdown or at the run deadline the id
//! stream ends: requests on the wire finish, nothing new starts. A 404 is `missing`; a failure
//! of one device alone is isolated and recorded; anything else stops the run.

use std::collections::VecDeque;
use std::future::Future;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::batch::{log_bad_record, log_isolated, Batch, FetchOne, Fetched, MAX_ISOLATED};
use super::error::RunError;
use super::run::Run;
use crate::domain::Record;
use crate::jamf::JamfError;

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
