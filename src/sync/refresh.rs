//! Refreshing known devices by id (webhook events): fetch their current records and upsert
//! them outside any run.
//!
//! Records are fetched in the same shape a sync stores them, so a refreshed row and a synced
//! row of an unchanged device hash alike (no false `changed_at`): computers with the `inline`
//! strategy come from one list request per chunk (`id=in=(…)` with the configured sections),
//! with `detail` from `computers-inventory-detail/{id}`; mobile devices from the Jamf Pro API
//! list (`mobileDeviceId=in=(…)`) or the Classic record, as `mobile_devices.source` picks.
//! Every request goes through the client's limiter, so refreshes and a running sync share
//! Jamf's five connections.

use std::collections::BTreeSet;
use std::future::Future;

use futures_util::StreamExt;
use serde_json::value::RawValue;

use super::{log_bad_record, Engine, Fetched, Persist, RunError};
use crate::config::{FetchStrategy, MobileSource};
use crate::jamf::classic::MobileDevice;
use crate::jamf::models::{Computer, InventoryPage, RecordError};
use crate::jamf::JamfError;
use crate::store::{Kind, RunCounts, Store};

/// What a refresh did with each requested id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Fetched and written (changed or not).
    pub stored: Vec<i64>,
    /// Jamf does not have them (any more).
    pub missing: Vec<i64>,
    /// Answered with a record that does not decode (logged and counted).
    pub failed: Vec<i64>,
    /// Of `stored`: new or changed rows.
    pub upserted: i64,
}

impl<S: Store> Engine<S> {
    /// Fetches these devices now and upserts them (run id 0: no `sync_runs` row). A failed
    /// read fails the whole call and writes nothing; the caller retries later.
    pub(crate) async fn refresh(&self, kind: Kind, ids: &[i64]) -> Result<Refreshed, RunError> {
        let mut out = Refreshed::default();
        for ids in ids.chunks(self.refresh_chunk()) {
            match kind {
                Kind::Computers => {
                    let got = match self.cfg.strategy {
                        FetchStrategy::Detail => {
                            let version = self.client.inventory_version().await?;
                            self.fetch_by_id(ids, |id| {
                                let client = self.client.clone();
                                async move {
                                    let raw = client.computer_detail(version, id).await?;
                                    Ok(Computer::from_raw(&raw))
                                }
                            })
                            .await?
                        }
                        FetchStrategy::Inline | FetchStrategy::Auto => {
                            let version = self.client.inventory_version().await?;
                            let sections = &self.cfg.sections;
                            self.list_by_ids(
                                ids,
                                "id",
                                Computer::from_raw,
                                |filter, size| async move {
                                    self.client
                                        .computers_page(
                                            version,
                                            sections,
                                            size,
                                            Some(&filter),
                                            false,
                                        )
                                        .await
                                },
                            )
                            .await?
                        }
                    };
                    self.store_refreshed(got, &mut out).await?;
                }
                Kind::MobileDevices => {
                    let got = match self.mobile_source().await? {
                        MobileSource::ProApi => {
                            let sections: Vec<&str> =
                                self.mobile.sections.iter().map(String::as_str).collect();
                            let sections = &sections;
                            self.list_by_ids(
                                ids,
                                "mobileDeviceId",
                                MobileDevice::from_pro_json,
                                |filter, size| async move {
                                    self.client
                                        .mobile_devices_page(sections, size, Some(&filter), false)
                                        .await
                                },
                            )
                            .await?
                        }
                        MobileSource::AdvancedSearch | MobileSource::Auto => {
                            self.fetch_by_id(ids, |id| {
                                let client = self.client.clone();
                                async move {
                                    let xml = client.mobile_device_xml(id).await?;
                                    Ok(MobileDevice::from_xml(&xml))
                                }
                            })
                            .await?
                        }
                    };
                    self.store_refreshed(got, &mut out).await?;
                }
            }
        }
        Ok(out)
    }

    /// One request per device through the worker pool; a 404 means the device is gone.
    async fn fetch_by_id<R, F, Fut>(&self, ids: &[i64], fetch: F) -> Result<Got<R>, JamfError>
    where
        R: Persist,
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Fetched<R>>,
    {
        let workers = self.client.max_concurrency() as usize;
        let results: Vec<(i64, Fetched<R>)> = futures_util::stream::iter(ids.iter().copied())
            .map(|id| {
                let f = fetch(id);
                async move { (id, f.await) }
            })
            .buffer_unordered(workers)
            .collect()
            .await;
        let mut got = Got::default();
        for (id, result) in results {
            match result {
                Ok(Ok(record)) => got.records.push(record),
                Ok(Err(e)) => {
                    log_bad_record(R::KIND, &e);
                    got.failed.push(id);
                }
                Err(e) if e.is_not_found() => got.missing.push(id),
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// One list request for all `ids` (`field=in=(…)`); ids not in the answer are gone.
    async fn list_by_ids<R, D, L, Fut>(
        &self,
        ids: &[i64],
        field: &str,
        decode: D,
        list: L,
    ) -> Result<Got<R>, JamfError>
    where
        R: Persist,
        D: Fn(&RawValue) -> Result<R, RecordError>,
        L: Fn(String, u32) -> Fut,
        Fut: Future<Output = Result<InventoryPage, JamfError>>,
    {
        let filter = id_in_filter(field, ids);
        let page = list(filter, ids.len() as u32).await?;
        let mut got = Got::default();
        let mut answered = BTreeSet::new();
        for raw in &page.results {
            match decode(raw) {
                Ok(r) => {
                    answered.insert(r.jamf_id());
                    got.records.push(r);
                }
                Err(e) => {
                    log_bad_record(R::KIND, &e);
                    if let Ok(id) = e.id.trim().parse::<i64>() {
                        answered.insert(id);
                        got.failed.push(id);
                    }
                }
            }
        }
        got.missing = ids
            .iter()
            .copied()
            .filter(|id| !answered.contains(id))
            .collect();
        Ok(got)
    }

    async fn store_refreshed<R: Persist>(
        &self,
        got: Got<R>,
        out: &mut Refreshed,
    ) -> Result<(), RunError> {
        if !got.records.is_empty() {
            let outcome = R::persist(
                &*self.store,
                self.client.instance(),
                0,
                &got.records,
                &RunCounts::default(),
                None,
            )
            .await?;
            out.upserted += outcome.upserted;
        }
        out.stored.extend(got.records.iter().map(|r| r.jamf_id()));
        out.missing.extend(got.missing);
        out.failed.extend(got.failed);
        Ok(())
    }
}

/// What one chunk's fetch produced.
struct Got<R> {
    records: Vec<R>,
    missing: Vec<i64>,
    failed: Vec<i64>,
}

impl<R> Default for Got<R> {
    fn default() -> Self {
        Got {
            records: Vec::new(),
            missing: Vec::new(),
            failed: Vec::new(),
        }
    }
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
    fn id_in_filter_lists_every_id() {
        assert_eq!(id_in_filter("id", &[3, 1, 20]), "id=in=(3,1,20)");
        assert_eq!(
            id_in_filter("mobileDeviceId", &[7]),
            "mobileDeviceId=in=(7)"
        );
    }
}
