//! The Jamf Pro API list endpoints both kinds read (`computers-inventory`,
//! `mobile-devices/detail`): a run's changed devices in keyset pages, every id, and chosen
//! devices by an `id=in=(…)` filter, all in the same shape.
//!
//! Pages are requested with the source's id sort, page 0 and `id>"<last id>"` in the filter
//! ([`keyset_filter`]). Devices entering or leaving the filtered set while we page cannot
//! shift later pages, so nothing is skipped. Paging stops at an empty page or once a page
//! holds every remaining match (`totalCount`), never on "fewer than asked for" (Jamf clamps
//! page sizes silently). A listing is read in several id spans at once (`sync::ranges`).
//!
//! Jamf answers 500 for a whole page when one device's data is broken. Such a page is shrunk
//! down to `sync.min_page_size`; if it still fails, the stretch's ids are listed with the
//! cheapest section and fetched in halves down to the one device that fails, which is
//! recorded (`sync_failures`) and skipped; the run goes on. If even the id listing fails, the
//! run fails as before.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::Record;
use crate::jamf::models::InventoryPage;
use crate::jamf::JamfError;
use crate::sync::batch::{decode_page, fetched_from_page, log_isolated, page_ids, Batch, Fetched};
use crate::sync::error::RunError;
use crate::sync::ranges::{read_ranges, Pager, Probe, Recovered, Sizing, Span};
use crate::sync::run::Run;

/// One request to a keyset-paged list endpoint.
#[derive(Debug)]
pub(crate) struct ListRequest<'a> {
    pub sections: &'a [String],
    pub filter: Option<String>,
    pub page_size: u32,
    /// A timeout comes back at once so the page can be asked for smaller.
    pub shrinkable: bool,
    /// Highest ids first (the probe for the highest id).
    pub descending: bool,
}

/// A Jamf Pro API list endpoint read by keyset.
pub(crate) trait KeysetList: Sync {
    type Record: Record;
    /// The inventory date a delta filters on.
    const DATE_FIELD: &'static str;
    /// The id pages are keyed and sorted on.
    const ID_FIELD: &'static str;
    /// Decodes one listed record.
    const DECODE: super::Decode<Self::Record>;

    fn list(
        &self,
        req: ListRequest<'_>,
    ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send;

    /// How many spans of a listing may be read at once: the connections allowed.
    fn width(&self) -> usize;

    /// Whether pacing is still finding the server's pace (see [`Pager::ramping`]).
    fn ramping(&self) -> bool;
}

/// Sends the records of every device changed since `since` to the writer, page by page;
/// `id_sections` is the cheapest listing, used to probe the highest id and to isolate a device
/// that breaks its page.
pub(crate) async fn read_pages<L: KeysetList>(
    list: &L,
    run: &Run,
    sections: &[String],
    id_sections: &[String],
    since: Option<DateTime<Utc>>,
    tx: &mpsc::Sender<Batch<L::Record>>,
) -> Result<(), RunError> {
    let pager = Changed(Keyset {
        list,
        sections,
        id_sections,
        since,
    });
    read_ranges(run, Sizing::Adaptive, list.width(), &pager, tx).await
}

/// Sends the ids of every device changed since `since` (all with `None`) to `tx`, a page at a
/// time; `sections` is the cheapest the endpoint takes.
pub(crate) async fn read_ids<L: KeysetList>(
    list: &L,
    run: &Run,
    sections: &[String],
    since: Option<DateTime<Utc>>,
    sizing: Sizing,
    tx: mpsc::Sender<Vec<i64>>,
) -> Result<(), RunError> {
    let pager = Ids(Keyset {
        list,
        sections,
        id_sections: sections,
        since,
    });
    read_ranges(run, sizing, list.width(), &pager, &tx).await
}

/// The keyset pages of the devices changed since `since`: a span's page, and the probe for the
/// highest id.
struct Keyset<'a, L> {
    list: &'a L,
    sections: &'a [String],
    /// The cheapest sections (the probe's).
    id_sections: &'a [String],
    since: Option<DateTime<Utc>>,
}

impl<L: KeysetList> Keyset<'_, L> {
    fn page(
        &self,
        span: Span,
        page_size: u32,
        shrinkable: bool,
    ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send + '_ {
        self.list.list(ListRequest {
            sections: self.sections,
            filter: keyset_filter(L::DATE_FIELD, L::ID_FIELD, self.since, span),
            page_size,
            shrinkable,
            descending: false,
        })
    }

    async fn probe(&self) -> Result<Probe, JamfError> {
        let page = self
            .list
            .list(ListRequest {
                sections: self.id_sections,
                filter: keyset_filter(L::DATE_FIELD, L::ID_FIELD, self.since, Span::default()),
                page_size: 1,
                shrinkable: false,
                descending: true,
            })
            .await?;
        Ok(Probe {
            top: page_ids(&page, L::ID_FIELD).1,
            total: page.total_count.max(0),
        })
    }
}

/// A listing of changed records: each page a batch for the writer; a stretch Jamf keeps
/// failing on is listed by id and fetched in halves down to the device behind it.
struct Changed<'a, L>(Keyset<'a, L>);

impl<L: KeysetList> Pager for Changed<'_, L> {
    fn ramping(&self) -> bool {
        self.0.list.ramping()
    }

    type Item = Batch<L::Record>;

    fn page(
        &self,
        span: Span,
        size: u32,
        shrinkable: bool,
    ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send {
        self.0.page(span, size, shrinkable)
    }

    fn probe(&self) -> impl Future<Output = Result<Probe, JamfError>> + Send {
        self.0.probe()
    }

    fn convert(&self, page: &InventoryPage) -> (Batch<L::Record>, Option<i64>) {
        decode_page(page, L::DECODE)
    }

    async fn recover(
        &self,
        span: Span,
        size: u32,
        e: JamfError,
    ) -> Result<Recovered<Batch<L::Record>>, RunError> {
        let k = &self.0;
        tracing::warn!(error = %e, ?span, size, "a list page keeps failing; isolating the device behind it");
        let ids_page = k
            .list
            .list(ListRequest {
                sections: k.id_sections,
                filter: keyset_filter(L::DATE_FIELD, L::ID_FIELD, k.since, span),
                page_size: size,
                shrinkable: false,
                descending: false,
            })
            .await?;
        let (ids, max_id) = page_ids(&ids_page, L::ID_FIELD);
        let last = ids_page.results.len() as i64 >= ids_page.total_count;
        let mut batch =
            Batch::from_fetched(fetch_listed(k.list, k.sections, &ids, ids.len(), true).await?);
        batch.listed = ids_page.results.len() as i64;
        batch.last_id = max_id;
        Ok(Some((batch, max_id, last)))
    }
}

/// A listing of ids, each page's ids for the receiver; an id listing has nothing cheaper to
/// fall back to.
struct Ids<'a, L>(Keyset<'a, L>);

impl<L: KeysetList> Pager for Ids<'_, L> {
    fn ramping(&self) -> bool {
        self.0.list.ramping()
    }

    type Item = Vec<i64>;

    fn page(
        &self,
        span: Span,
        size: u32,
        shrinkable: bool,
    ) -> impl Future<Output = Result<InventoryPage, JamfError>> + Send {
        self.0.page(span, size, shrinkable)
    }

    fn probe(&self) -> impl Future<Output = Result<Probe, JamfError>> + Send {
        self.0.probe()
    }

    fn convert(&self, page: &InventoryPage) -> (Vec<i64>, Option<i64>) {
        page_ids(page, L::ID_FIELD)
    }
}

/// These devices' records, `chunk` ids per filtered request; ids Jamf leaves out are missing.
/// A request that fails for reasons of its records alone is split in halves down to the one
/// device that fails, which is `failed` (with its error); the others are read. `splitting`:
/// a 500 is already known here, so none is retried.
pub(crate) async fn fetch_listed<L: KeysetList>(
    list: &L,
    sections: &[String],
    ids: &[i64],
    chunk: usize,
    mut splitting: bool,
) -> Result<Fetched<L::Record>, JamfError> {
    let mut got = Fetched::default();
    let mut todo: Vec<&[i64]> = ids.chunks(chunk.max(1)).rev().collect();
    while let Some(part) = todo.pop() {
        let answer = list
            .list(ListRequest {
                sections,
                filter: Some(id_in_filter(L::ID_FIELD, part)),
                page_size: part.len() as u32,
                // While isolating, a 500 comes back at once instead of using up the budget.
                shrinkable: splitting,
                descending: false,
            })
            .await;
        match answer {
            Ok(page) => got.merge(fetched_from_page(part, &page, L::DECODE)),
            Err(e) if e.is_record_specific() && part.len() > 1 => {
                splitting = true;
                let (a, b) = part.split_at(part.len() / 2);
                todo.push(b);
                todo.push(a);
            }
            Err(e) if e.is_record_specific() => {
                log_isolated(<L::Record as Record>::KIND, part[0], &e);
                got.fail(part[0], e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
    use chrono::{DateTime, Utc};

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
