//! Computers from the Jamf Pro API's `computers-inventory`: the configured sections inline in
//! keyset pages (`inline`, the fewest requests), or ids listed with GENERAL and one
//! `computers-inventory-detail/{id}` per device (`detail`, every section). Whichever the
//! strategy, refreshes and reconcile fetch the same shape: `inline` by one filtered list
//! request per chunk (`id=in=(…)`), `detail` by the detail endpoint.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::keyset::{fetch_listed, read_ids, read_pages, KeysetList, ListRequest};
use super::{collect_ids, Decode, DeviceSource, Reading};
use crate::config::{FetchStrategy, SyncConfig};
use crate::domain::facts::JAMF_MAX_PAGE_SIZE;
use crate::domain::Computer;
use crate::jamf::models::InventoryPage;
use crate::jamf::pro::PageQuery;
use crate::jamf::{decode, JamfClient, JamfError};
use crate::sync::batch::{FetchOne, Fetched};
use crate::sync::error::RunError;
use crate::sync::fetch::{fetch_by_id, fetch_each, gone_ids};
use crate::sync::ranges::Sizing;
use crate::sync::run::Run;

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

    /// Lists the ids of computers reported since `since` (GENERAL only) into `tx`.
    async fn list_ids_into(
        &self,
        run: &Run,
        since: Option<DateTime<Utc>>,
        sizing: Sizing,
        tx: mpsc::Sender<Vec<i64>>,
    ) -> Result<(), RunError> {
        read_ids(self, run, &self.general, since, sizing, tx).await
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

impl KeysetList for ComputerSource {
    type Record = Computer;
    const DATE_FIELD: &'static str = "general.reportDate";
    const ID_FIELD: &'static str = "id";
    const DECODE: Decode<Computer> = decode::computer;

    /// One page, stepping down the API version on a 404 (a list endpoint answers 404 only
    /// when the server does not have it; a listing's pages in flight at once step down once).
    async fn list(&self, req: ListRequest<'_>) -> Result<InventoryPage, JamfError> {
        loop {
            let version = self.client.inventory_version().await?;
            let q = PageQuery {
                sections: req.sections,
                page_size: req.page_size,
                filter: req.filter.as_deref(),
                shrinkable: req.shrinkable,
                descending: req.descending,
            };
            match self.client.computers_page(version, q).await {
                Err(e) if e.is_not_found() => {
                    if self
                        .client
                        .step_down_inventory_version(version)
                        .await
                        .is_none()
                    {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    fn width(&self) -> usize {
        self.workers()
    }

    fn ramping(&self) -> bool {
        self.client.ramping()
    }
}

impl DeviceSource for ComputerSource {
    type Record = Computer;

    async fn read_changed(&self, reading: Reading<'_, Computer>) -> Result<(), RunError> {
        let Reading { run, since, tx } = reading;
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
        read_pages(self, run, &self.sections, &self.general, since, &tx).await
    }

    async fn list_ids(&self, run: &Run) -> Result<Vec<i64>, RunError> {
        collect_ids(|tx| self.list_ids_into(run, None, Sizing::Fixed(JAMF_MAX_PAGE_SIZE), tx)).await
    }

    async fn fetch(&self, ids: &[i64]) -> Result<Fetched<Computer>, JamfError> {
        if self.detail {
            return fetch_by_id(ids, self.workers(), |id| self.detail_one(id)).await;
        }
        fetch_listed(self, &self.sections, ids, self.chunk, false).await
    }

    async fn confirm_gone(&self, ids: &[i64]) -> Result<Vec<i64>, JamfError> {
        gone_ids(ids, self.workers(), |id| self.probe(id)).await
    }
}
