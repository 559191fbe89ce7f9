//! Computers from the Jamf Pro API's `computers-inventory`: the configured sections inline in
//! keyset pages (`inline`, the fewest requests), or ids listed with GENERAL and one
//! `computers-inventory-detail/{id}` per device (`detail`, every section). Whichever the
//! strategy, refreshes and reconcile fetch the same shape: `inline` by one filtered list
//! request per chunk (`id=in=(…)`), `detail` by the detail endpoint.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{collect_ids, DeviceSource};
use crate::config::{FetchStrategy, SyncConfig};
use crate::domain::facts::JAMF_MAX_PAGE_SIZE;
use crate::domain::Computer;
use crate::jamf::models::InventoryPage;
use crate::jamf::pro::PageQuery;
use crate::jamf::{decode, JamfClient, JamfError};
use crate::sync::pipeline::{
    decode_page, fetch_by_id, fetch_each, fetched_from_page, gone_ids, id_in_filter, keyset_filter,
    keyset_pages, page_ids, Batch, FetchOne, Fetched, Sizing,
};
use crate::sync::run::Run;
use crate::sync::RunError;

const DATE_FIELD: &str = "general.reportDate";
const ID_FIELD: &str = "id";

pub(crate) struct ComputerSource {
    client: Arc<JamfClient>,
    detail: bool,
    sections: Vec<String>,
    general: Vec<String>,
    /// Devices per detail batch and per refresh request (`sync.page_size`).
    chunk: usize,
}

impl ComputerSource {
    pub fn new(client: Arc<JamfClient>, cfg: &SyncConfig) -> Self {
        ComputerSource {
            client,
            detail: cfg.strategy == FetchStrategy::Detail,
            sections: cfg.sections.clone(),
            general: vec!["GENERAL".to_string()],
            chunk: cfg.page_size.clamp(1, JAMF_MAX_PAGE_SIZE) as usize,
        }
    }

    /// One page, stepping down the API version on a 404 of a listing's first request.
    async fn page(
        &self,
        sections: &[String],
        filter: Option<String>,
        page_size: u32,
        shrinkable: bool,
        first: bool,
    ) -> Result<InventoryPage, JamfError> {
        loop {
            let version = self.client.inventory_version().await?;
            let q = PageQuery {
                sections,
                page_size,
                filter: filter.as_deref(),
                shrinkable,
            };
            match self.client.computers_page(version, q).await {
                Err(e) if e.is_not_found() && first => {
                    if self.client.step_down_inventory_version().await.is_none() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Lists the ids of computers reported since `since` (GENERAL only) into `tx`.
    async fn list_ids_into(
        &self,
        run: &Run,
        since: Option<DateTime<Utc>>,
        sizing: Sizing,
        tx: mpsc::Sender<Vec<i64>>,
    ) -> Result<(), RunError> {
        keyset_pages(
            run,
            sizing,
            |after, size, shrinkable| {
                let filter = keyset_filter(DATE_FIELD, ID_FIELD, since, after);
                self.page(&self.general, filter, size, shrinkable, after.is_none())
            },
            |page| page_ids(page, ID_FIELD),
            &tx,
        )
        .await
    }

    async fn detail_one(&self, id: i64) -> FetchOne<Computer> {
        let version = self.client.inventory_version().await?;
        let (raw, requested_at) = self.client.computer_detail(version, id).await?;
        Ok(decode::computer(&raw, requested_at))
    }

    async fn probe(&self, id: i64) -> Result<(), JamfError> {
        let version = self.client.inventory_version().await?;
        self.client.computer_detail(version, id).await.map(|_| ())
    }

    fn workers(&self) -> usize {
        self.client.max_concurrency() as usize
    }
}

impl DeviceSource for ComputerSource {
    type Record = Computer;

    async fn read_changed(
        &self,
        run: &Run,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<Computer>>,
    ) -> Result<(), RunError> {
        if self.detail {
            // The lister owns the id sender: when it finishes (or fails) the channel closes
            // and the fetcher drains the ids already listed.
            let (id_tx, id_rx) = mpsc::channel::<Vec<i64>>(2);
            let lister = self.list_ids_into(run, since, Sizing::Adaptive, id_tx);
            let fetcher = fetch_each(
                run,
                self.workers(),
                self.chunk,
                id_rx,
                |id| self.detail_one(id),
                &tx,
            );
            let (listed, fetched) = tokio::join!(lister, fetcher);
            // A fetcher that stopped (error, shutdown, deadline) leaves the lister facing a
            // closed channel: the fetcher's reason is the one to report.
            return fetched.and(listed);
        }
        keyset_pages(
            run,
            Sizing::Adaptive,
            |after, size, shrinkable| {
                let filter = keyset_filter(DATE_FIELD, ID_FIELD, since, after);
                self.page(&self.sections, filter, size, shrinkable, after.is_none())
            },
            |page| decode_page(page, decode::computer),
            &tx,
        )
        .await
    }

    async fn list_ids(&self, run: &Run) -> Result<Vec<i64>, RunError> {
        collect_ids(|tx| self.list_ids_into(run, None, Sizing::Fixed(JAMF_MAX_PAGE_SIZE), tx)).await
    }

    async fn fetch(&self, ids: &[i64]) -> Result<Fetched<Computer>, JamfError> {
        if self.detail {
            return fetch_by_id(ids, self.workers(), |id| self.detail_one(id)).await;
        }
        let mut got = Fetched::default();
        for chunk in ids.chunks(self.chunk) {
            let filter = Some(id_in_filter(ID_FIELD, chunk));
            let page = self
                .page(&self.sections, filter, chunk.len() as u32, false, true)
                .await?;
            got.merge(fetched_from_page(chunk, &page, decode::computer));
        }
        Ok(got)
    }

    async fn confirm_gone(&self, ids: &[i64]) -> Result<Vec<i64>, JamfError> {
        gone_ids(ids, self.workers(), |id| self.probe(id)).await
    }
}
