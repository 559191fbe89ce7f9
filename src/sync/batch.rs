//! What travels from a source to the writer: a [`Batch`] of records with the failures met on
//! the way, and [`Fetched`], what a request for some ids brought back. A record that does not
//! decode is logged with its id, counted `failed` and recorded for the next run, never
//! dropped silently.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::domain::text::shown;
use crate::domain::{Kind, Record};
use crate::jamf::models::InventoryPage;
use crate::jamf::{JamfError, RecordError};

/// Devices a run may isolate before failures outnumbering successes fail it instead.
pub(crate) const MAX_ISOLATED: usize = 10;

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

    pub(crate) fn size(&self) -> i64 {
        self.records.len() as i64 + self.failed + self.missing
    }

    pub(crate) fn merge(&mut self, more: Batch<R>) {
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
