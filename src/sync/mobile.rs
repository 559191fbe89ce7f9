//! Mobile devices: a Classic API advanced mobile device search (Jamf's recommended path) or the
//! Jamf Pro API's `/api/v2/mobile-devices/detail`.
//!
//! # The saved search
//! jamf-sync owns one advanced search per installation (`mobile_devices.search_name`). Each run
//! finds it in the search list (listing does not evaluate searches), updates its criterion to
//! the window the run needs (`Last Inventory Update` `less than x days ago`, see
//! [`search_window_days`]) or creates it when missing; a full run uses no criterion. A
//! configured `search_id` is used as is. Reading the search evaluates it on the server, which
//! can take minutes, so that one call has its own timeout. Right after a create, another
//! cluster node may not know the search yet: the sticky-session cookie pins us to the node that
//! created it, and a few 404s are retried.
//!
//! The search's "Last Inventory Update" display value lets the run skip devices that are older
//! than the cursor before fetching them; the value may be in the server's time zone, so only
//! devices older by more than `prefilter_tolerance_secs` are skipped, and a value that does not
//! parse never causes a skip.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{keyset_filter_on, Batch, Engine, RunError};
use crate::config::MobileSource;
use crate::jamf::classic::{search_window_days, search_xml, MobileDevice, SearchHit};
use crate::jamf::JamfError;
use crate::store::{Kind, Store};

/// 404s tolerated right after creating the search (cluster replication lag).
const LAG_RETRIES: u32 = 6;

/// How long a detected `mobile_devices.source = auto` choice is reused.
const SOURCE_TTL: Duration = Duration::from_secs(3600);

impl<S: Store> Engine<S> {
    pub(super) async fn fetch_mobile_devices(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<MobileDevice>>,
    ) -> Result<(), RunError> {
        match self.mobile_source().await? {
            MobileSource::ProApi => self.fetch_mobile_pro(since, tx).await,
            MobileSource::AdvancedSearch | MobileSource::Auto => {
                self.fetch_mobile_search(since, tx).await
            }
        }
    }

    pub(super) async fn mobile_source(&self) -> Result<MobileSource, JamfError> {
        if self.mobile.source != MobileSource::Auto {
            return Ok(self.mobile.source);
        }
        let cached = *self.mobile_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((source, _)) = cached.filter(|(_, at)| at.elapsed() < SOURCE_TTL) {
            return Ok(source);
        }
        let version = self.client.server_version().await?;
        let source = if supports_pro_mobile_detail(version.as_deref()) {
            MobileSource::ProApi
        } else {
            MobileSource::AdvancedSearch
        };
        *self.mobile_source.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((source, std::time::Instant::now()));
        Ok(source)
    }

    async fn fetch_mobile_pro(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<MobileDevice>>,
    ) -> Result<(), RunError> {
        let sections: Vec<&str> = self.mobile.sections.iter().map(String::as_str).collect();
        let sections = &sections;
        self.fetch_pages(
            |after| {
                let filter =
                    keyset_filter_on("lastInventoryUpdateDate", "mobileDeviceId", since, after);
                async move {
                    self.list_with_shrink(Kind::MobileDevices, |size, shrinkable| {
                        self.client.mobile_devices_page(
                            sections,
                            size,
                            filter.as_deref(),
                            shrinkable,
                        )
                    })
                    .await
                }
            },
            MobileDevice::from_pro_json,
            tx,
        )
        .await
    }

    async fn fetch_mobile_search(
        &self,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<MobileDevice>>,
    ) -> Result<(), RunError> {
        let window = since.map(|s| search_window_days(Utc::now(), s));
        let (search_id, created) = self.ensure_search(window).await?;
        self.check_stop()?;
        let hits = self.evaluate_search(search_id, created).await?;
        self.check_stop()?;
        let tolerance = chrono::Duration::seconds(self.mobile.prefilter_tolerance_secs as i64);
        let total = hits.len();
        let ids: Vec<i64> = hits
            .into_iter()
            .filter(|h| keep(h, since, tolerance))
            .map(|h| h.id)
            .collect();
        tracing::info!(
            search_id,
            window_days = ?window,
            found = total,
            to_fetch = ids.len(),
            "advanced mobile device search evaluated"
        );
        self.expect(ids.len() as i64);
        let listed = AtomicI64::new(ids.len() as i64);
        let (id_tx, id_rx) = mpsc::channel::<i64>(ids.len().max(1));
        for id in ids {
            // The channel holds every id, so this never waits or fails.
            let _ = id_tx.try_send(id);
        }
        drop(id_tx);
        self.fetch_each(
            id_rx,
            &listed,
            |id| {
                let client = self.client.clone();
                async move {
                    let xml = client.mobile_device_xml(id).await?;
                    Ok(MobileDevice::from_xml(&xml))
                }
            },
            &tx,
        )
        .await
    }

    /// The id of the search to read, creating or updating it; `true` when just created.
    async fn ensure_search(&self, window: Option<u32>) -> Result<(i64, bool), RunError> {
        if let Some(id) = self.mobile.search_id {
            return Ok((id, false));
        }
        let name = self.mobile.search_name.as_str();
        let xml = search_xml(name, window);
        let find = || async {
            Ok::<_, JamfError>(
                self.client
                    .advanced_searches()
                    .await?
                    .into_iter()
                    .find(|(_, n)| n == name)
                    .map(|(id, _)| id),
            )
        };
        if let Some(id) = find().await? {
            self.client.update_search(id, &xml).await?;
            return Ok((id, false));
        }
        match self.client.create_search(&xml).await {
            Ok(id) => {
                tracing::info!(id, name, "created the advanced mobile device search");
                Ok((id, true))
            }
            // Created meanwhile (another run, or a retried create that had succeeded).
            Err(JamfError::Conflict { .. }) => match find().await? {
                Some(id) => {
                    self.client.update_search(id, &xml).await?;
                    Ok((id, false))
                }
                None => Err(RunError::Other(format!(
                    "Jamf says an advanced search named {name:?} exists but does not list it"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn evaluate_search(&self, id: i64, created: bool) -> Result<Vec<SearchHit>, RunError> {
        let timeout = Duration::from_secs(self.mobile.search_timeout_secs);
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.client.evaluate_search(id, timeout).await {
                Err(e) if e.is_not_found() && created && tries < LAG_RETRIES => {
                    tracing::debug!(id, ?delay, "new search not visible yet; retrying");
                    tries += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other.map_err(RunError::from),
            }
        }
    }
}

/// Whether a search hit may have changed since `since` (see the module docs).
fn keep(hit: &SearchHit, since: Option<DateTime<Utc>>, tolerance: chrono::Duration) -> bool {
    match (since, hit.last_inventory_update) {
        (Some(s), Some(t)) => t + tolerance >= s,
        _ => true,
    }
}

/// `/api/v2/mobile-devices/detail` exists from Jamf Pro 11.4.
pub fn supports_pro_mobile_detail(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let (major, minor) = crate::jamf::major_minor(v);
    major > 11 || (major == 11 && minor >= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_detail_from_11_4() {
        assert!(supports_pro_mobile_detail(Some("11.30.1-t1")));
        assert!(supports_pro_mobile_detail(Some("11.4.0")));
        assert!(!supports_pro_mobile_detail(Some("11.3.2")));
        assert!(!supports_pro_mobile_detail(Some("10.49.0")));
        assert!(!supports_pro_mobile_detail(None));
    }

    #[test]
    fn prefilter_never_drops_unparsed_or_recent() {
        let since = Utc::now();
        let tol = chrono::Duration::hours(15);
        let hit = |t: Option<DateTime<Utc>>| SearchHit {
            id: 1,
            last_inventory_update: t,
        };
        assert!(keep(&hit(None), Some(since), tol));
        assert!(keep(
            &hit(Some(since - chrono::Duration::hours(14))),
            Some(since),
            tol
        ));
        assert!(!keep(
            &hit(Some(since - chrono::Duration::hours(16))),
            Some(since),
            tol
        ));
        assert!(keep(
            &hit(Some(since - chrono::Duration::days(30))),
            None,
            tol
        ));
    }
}
