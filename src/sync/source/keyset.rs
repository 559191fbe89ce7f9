//! The Jamf Pro API list endpoints both kinds read (`computers-inventory`,
//! `mobile-devices/detail`): a run's changed devices in keyset pages, every id, and chosen
//! devices by an `id=in=(…)` filter, all in the same shape.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::DeviceRecord;
use crate::jamf::models::InventoryPage;
use crate::jamf::JamfError;
use crate::sync::pipeline::{
    decode_page, fetched_from_page, id_in_filter, keyset_filter, keyset_pages, page_ids, Batch,
    Fetched, Sizing,
};
use crate::sync::run::Run;
use crate::sync::RunError;

/// One request to a keyset-paged list endpoint.
#[derive(Debug)]
pub(crate) struct ListRequest<'a> {
    pub sections: &'a [String],
    pub filter: Option<String>,
    pub page_size: u32,
    /// A timeout comes back at once so the page can be asked for smaller.
    pub shrinkable: bool,
    /// The first request of a listing (API version detection may step down on a 404).
    pub first: bool,
}

/// A Jamf Pro API list endpoint read by keyset.
pub(crate) trait KeysetList: Sync {
    type Record: DeviceRecord;
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
}

/// Sends the records of every device changed since `since` to the writer, page by page.
pub(crate) async fn read_pages<L: KeysetList>(
    list: &L,
    run: &Run,
    sections: &[String],
    since: Option<DateTime<Utc>>,
    tx: &mpsc::Sender<Batch<L::Record>>,
) -> Result<(), RunError> {
    let decode = |page: &InventoryPage| decode_page(page, L::DECODE);
    read_keyset(list, run, sections, since, Sizing::Adaptive, decode, tx).await
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
    let ids = |page: &InventoryPage| page_ids(page, L::ID_FIELD);
    read_keyset(list, run, sections, since, sizing, ids, &tx).await
}

/// Keyset pages of the devices changed since `since`, each turned into what `tx` takes.
async fn read_keyset<L, T, C>(
    list: &L,
    run: &Run,
    sections: &[String],
    since: Option<DateTime<Utc>>,
    sizing: Sizing,
    convert: C,
    tx: &mpsc::Sender<T>,
) -> Result<(), RunError>
where
    L: KeysetList,
    C: Fn(&InventoryPage) -> (T, Option<i64>),
{
    keyset_pages(
        run,
        sizing,
        |after, page_size, shrinkable| {
            list.list(ListRequest {
                sections,
                filter: keyset_filter(L::DATE_FIELD, L::ID_FIELD, since, after),
                page_size,
                shrinkable,
                first: after.is_none(),
            })
        },
        convert,
        tx,
    )
    .await
}

/// These devices' records, `chunk` ids per filtered request; ids Jamf leaves out are missing.
pub(crate) async fn fetch_listed<L: KeysetList>(
    list: &L,
    sections: &[String],
    ids: &[i64],
    chunk: usize,
) -> Result<Fetched<L::Record>, JamfError> {
    let mut got = Fetched::default();
    for chunk in ids.chunks(chunk.max(1)) {
        let page = list
            .list(ListRequest {
                sections,
                filter: Some(id_in_filter(L::ID_FIELD, chunk)),
                page_size: chunk.len() as u32,
                shrinkable: false,
                first: true,
            })
            .await?;
        got.merge(fetched_from_page(chunk, &page, L::DECODE));
    }
    Ok(got)
}
