//! Computers: Jamf Pro API `computers-inventory`, inline pages or list-then-detail.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{keyset_filter, truncate, Batch, Engine, RunError};
use crate::config::FetchStrategy;
use crate::jamf::models::{numeric_id, Computer, InventoryPage};
use crate::jamf::JamfError;
use crate::store::{Kind, Store};

impl<S: Store> Engine<S> {
    pub(super) async fn fetch_computers(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<Computer>>,
    ) -> Result<(), RunError> {
        match self.cfg.strategy {
            FetchStrategy::Detail => self.fetch_computer_details(since, tx).await,
            FetchStrategy::Inline | FetchStrategy::Auto => {
                let sections = &self.cfg.sections;
                self.fetch_pages(
                    |after| self.list_page(sections, since, after),
                    Computer::from_raw,
                    tx,
                )
                .await
            }
        }
    }

    /// Lists one keyset page, stepping down the API version on a 404 of the first request.
    async fn list_page(
        &self,
        sections: &[String],
        since: Option<DateTime<Utc>>,
        after: Option<i64>,
    ) -> Result<InventoryPage, JamfError> {
        let filter = keyset_filter(since, after);
        loop {
            let version = self.client.inventory_version().await?;
            let page = self
                .list_with_shrink(Kind::Computers, |size, shrinkable| {
                    self.client.computers_page(
                        version,
                        sections,
                        size,
                        filter.as_deref(),
                        shrinkable,
                    )
                })
                .await;
            match page {
                Err(e) if e.is_not_found() && after.is_none() => {
                    if self.client.step_down_inventory_version().await.is_none() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Lists ids (GENERAL only) and fetches every computer's detail record.
    async fn fetch_computer_details(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<Computer>>,
    ) -> Result<(), RunError> {
        let general = &["GENERAL".to_string()];
        let (id_tx, id_rx) = mpsc::channel::<i64>(self.cfg.page_size as usize * 2);
        let listed = &AtomicI64::new(0);
        // The lister owns the id sender: when it finishes (or fails) the channel closes and the
        // fetcher drains the ids already listed.
        let lister = async move {
            let mut after = None;
            loop {
                if self.stopping() {
                    return Ok(());
                }
                let page = self.list_page(general, since, after).await?;
                if after.is_none() {
                    self.expect(page.total_count);
                }
                let n = page.results.len() as i64;
                let mut max_id = after;
                for raw in &page.results {
                    match numeric_id(raw.get()) {
                        Some(id) => {
                            max_id = max_id.max(Some(id));
                            if id_tx.send(id).await.is_err() {
                                return Ok(());
                            }
                        }
                        None => tracing::warn!(
                            record = %truncate(raw.get(), 120),
                            "listed record without a numeric id skipped"
                        ),
                    }
                }
                listed.fetch_add(n, Ordering::Relaxed);
                if n == 0 || n >= page.total_count || max_id == after {
                    return Ok::<(), RunError>(());
                }
                after = max_id;
            }
        };
        let version = self.client.inventory_version().await?;
        let fetcher = self.fetch_each(
            id_rx,
            listed,
            |id| {
                let client = self.client.clone();
                async move {
                    let raw = client.computer_detail(version, id).await?;
                    Ok(Computer::from_raw(&raw))
                }
            },
            &tx,
        );
        let (l, f) = tokio::join!(lister, fetcher);
        l.and(f)
    }
}
