//! The worker pool: one request per listed id, as wide as the connection limit (the limiter
//! decides how many are actually on the wire). On shutdown or at the run deadline the id
//! stream ends: requests on the wire finish, nothing new starts. A 404 is `missing`; a failure
//! of one device alone is isolated and recorded; anything else stops the run. While a full
//! batch waits for the writer, the requests on the wire are still polled and one more batch
//! fills: a slow commit does not idle the connections, and at most two batches wait.

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
    // A full batch waiting for the writer: the requests on the wire are still polled (and
    // new ones started until a second batch is full), so a slow commit does not leave the
    // connections idle.
    let mut ready: Option<Batch<R>> = None;
    loop {
        let room = ready.is_none() || (batch.size() as usize) < batch_size;
        while room && in_flight.len() < workers {
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
                permit = tx.reserve(), if ready.is_some() => {
                    let permit = permit.map_err(|_| RunError::Other("writer stopped".into()))?;
                    if let Some(full) = ready.take() {
                        permit.send(full);
                    }
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
        if done {
            let last = (batch.size() > 0 || listed > sent_listed).then(|| {
                batch.listed = listed - sent_listed;
                batch
            });
            for full in ready.into_iter().chain(last) {
                tx.send(full)
                    .await
                    .map_err(|_| RunError::Other("writer stopped".into()))?;
            }
            return run.check();
        }
        if ready.is_none() && batch.size() as usize >= batch_size {
            batch.listed = listed - sent_listed;
            sent_listed = listed;
            ready = Some(std::mem::replace(&mut batch, Batch::new(batch_size)));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::domain::{Computer, Kind, RunKind};
    use crate::sync::run::{ListingHint, PageSizes, StopSignal};

    fn computer(id: i64) -> FetchOne<Computer> {
        let raw = format!(
            r#"{{"id":"{id}","general":{{"name":"mac-{id}","reportDate":"2026-12-01T10:00:00Z"}}}}"#
        );
        match serde_json::value::RawValue::from_string(raw) {
            Ok(raw) => Ok(crate::jamf::decode::computer(&raw, chrono::Utc::now())),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn requests_go_on_while_a_full_batch_waits_for_the_writer() {
        let run = Run::new(
            Some(1),
            RunKind::Sync(Kind::Computers),
            "test",
            60,
            PageSizes { max: 100, min: 10 },
            Arc::new(StopSignal::default()),
            ListingHint::default(),
        );
        let (ids_tx, ids_rx) = mpsc::channel(64);
        for id in 1..=60 {
            if ids_tx.send(vec![id]).await.is_err() {
                panic!("the id channel closed");
            }
        }
        drop(ids_tx);
        let fetched = Arc::new(AtomicUsize::new(0));
        let fetch = |id: i64| {
            let fetched = fetched.clone();
            async move {
                fetched.fetch_add(1, Ordering::SeqCst);
                computer(id)
            }
        };
        // The writer's queue holds one batch and nobody reads it yet.
        let (tx, mut rx) = mpsc::channel(1);
        let fetcher = fetch_each(&run, 5, 10, ids_rx, fetch, &tx);
        tokio::pin!(fetcher);
        tokio::select! {
            r = &mut fetcher => panic!("finished with the writer stalled: {:?}", r.err()),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        // One batch queued, one waiting, a third filling: 30 records, not the 20 a fetcher
        // blocked on the queue reads (measured: 20).
        let stalled = fetched.load(Ordering::SeqCst);
        assert!(
            stalled >= 30,
            "only {stalled} fetched while the writer stalled"
        );
        assert!(stalled < 60, "at most two batches wait: {stalled}");
        let drain = async {
            let mut records = 0;
            while records < 60 {
                match rx.recv().await {
                    Some(batch) => records += batch.records.len(),
                    None => break,
                }
            }
            records
        };
        let (done, records) = tokio::join!(&mut fetcher, drain);
        assert!(done.is_ok(), "{:?}", done.err());
        assert_eq!(records, 60, "every record reached the writer");
        assert!(rx.try_recv().is_err(), "and none twice");
    }
}
