//! Mobile devices: a Classic API advanced mobile device search and XML records (Jamf's
//! recommended path, `advanced-search`), or the Jamf Pro API's `/api/v2/mobile-devices/detail`
//! in keyset pages (`pro-api`); `auto` picks `pro-api` on Jamf Pro 11.4 and later, checked at
//! most once an hour.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::keyset::{fetch_listed, read_ids, read_pages, KeysetList, ListRequest};
use super::{collect_ids, Decode, DeviceSource, Reading};
use crate::config::{MobileDevicesConfig, MobileSource, SyncConfig};
use crate::domain::facts::JAMF_MAX_PAGE_SIZE;
use crate::domain::MobileDevice;
use crate::jamf::classic::{search_window_days, search_xml, Criterion, SearchHit, SearchResult};
use crate::jamf::models::InventoryPage;
use crate::jamf::pro::{supports_pro_mobile_detail, PageQuery};
use crate::jamf::{decode, JamfClient, JamfError};
use crate::sync::batch::{Batch, FetchOne, Fetched};
use crate::sync::error::RunError;
use crate::sync::fetch::{fetch_by_id, fetch_each, gone_ids};
use crate::sync::ranges::Sizing;
use crate::sync::run::Run;

/// 404s tolerated right after creating the search (cluster replication lag).
const LAG_RETRIES: u32 = 6;

/// How long a detected `mobile_devices.source = auto` choice is reused: webhook refreshes ask
/// often, the answer changes only with a Jamf upgrade.
const SOURCE_TTL: Duration = Duration::from_secs(3600);

/// Ten years: more prefilter tolerance than this means "never skip".
const MAX_TOLERANCE_SECS: u64 = 10 * 365 * 86_400;

/// The two ways mobile devices are read, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ProApi,
    AdvancedSearch,
}

pub(crate) struct MobileDeviceSource {
    client: Arc<JamfClient>,
    cfg: MobileDevicesConfig,
    general: Vec<String>,
    /// Devices per fetch batch and per refresh request (`sync.page_size`).
    chunk: usize,
    resolved: std::sync::Mutex<Option<(Mode, Instant)>>,
}

impl MobileDeviceSource {
    pub fn new(client: Arc<JamfClient>, cfg: &MobileDevicesConfig, sync: &SyncConfig) -> Self {
        MobileDeviceSource {
            client,
            cfg: cfg.clone(),
            general: vec!["GENERAL".to_string()],
            chunk: sync.page_size.clamp(1, JAMF_MAX_PAGE_SIZE) as usize,
            resolved: std::sync::Mutex::new(None),
        }
    }

    async fn mode(&self) -> Result<Mode, JamfError> {
        match self.cfg.source {
            MobileSource::ProApi => return Ok(Mode::ProApi),
            MobileSource::AdvancedSearch => return Ok(Mode::AdvancedSearch),
            MobileSource::Auto => {}
        }
        let cached = *self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((mode, _)) = cached.filter(|(_, at)| at.elapsed() < SOURCE_TTL) {
            return Ok(mode);
        }
        let version = self.client.server_version().await?;
        let mode = if supports_pro_mobile_detail(version.as_deref()) {
            Mode::ProApi
        } else {
            Mode::AdvancedSearch
        };
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = Some((mode, Instant::now()));
        Ok(mode)
    }

    async fn xml_one(&self, id: i64) -> FetchOne<MobileDevice> {
        let (xml, requested_at) = self.client.mobile_device_xml(id).await?;
        Ok(decode::mobile_xml(&xml, requested_at))
    }

    fn workers(&self) -> usize {
        self.client.max_concurrency() as usize
    }

    async fn read_search(
        &self,
        run: &Run,
        since: Option<DateTime<Utc>>,
        tx: mpsc::Sender<Batch<MobileDevice>>,
    ) -> Result<(), RunError> {
        let window = since.map(|s| search_window_days(Utc::now(), s));
        let (search_id, created) = self.ensure_search(window).await?;
        run.check()?;
        let result = self.evaluate_search(search_id, created).await?;
        run.check()?;
        check_criteria(
            search_id,
            self.cfg.search_id.is_some(),
            window,
            &result.criteria,
        )?;
        let hits = result.hits;
        // Bounded so that no configured value can overflow the date arithmetic below.
        let tolerance = chrono::Duration::seconds(
            self.cfg.prefilter_tolerance_secs.min(MAX_TOLERANCE_SECS) as i64,
        );
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
        run.expect(ids.len() as i64);
        let (id_tx, id_rx) = mpsc::channel::<Vec<i64>>(1);
        // The channel has room for the one chunk, so this never waits or fails.
        let _ = id_tx.try_send(ids);
        drop(id_tx);
        fetch_each(
            run,
            self.workers(),
            self.chunk,
            id_rx,
            |id| self.xml_one(id),
            &tx,
        )
        .await
    }

    /// The id of the search to read, creating or updating it; `true` when just created.
    async fn ensure_search(&self, window: Option<u32>) -> Result<(i64, bool), RunError> {
        if let Some(id) = self.cfg.search_id {
            return Ok((id, false));
        }
        let name = self.cfg.search_name.as_str();
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

    async fn evaluate_search(&self, id: i64, created: bool) -> Result<SearchResult, RunError> {
        let timeout = Duration::from_secs(self.cfg.search_timeout_secs);
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

impl KeysetList for MobileDeviceSource {
    type Record = MobileDevice;
    const DATE_FIELD: &'static str = "lastInventoryUpdateDate";
    const ID_FIELD: &'static str = "mobileDeviceId";
    const DECODE: Decode<MobileDevice> = decode::mobile_pro;

    async fn list(&self, req: ListRequest<'_>) -> Result<InventoryPage, JamfError> {
        let q = PageQuery {
            sections: req.sections,
            page_size: req.page_size,
            filter: req.filter.as_deref(),
            shrinkable: req.shrinkable,
            descending: req.descending,
        };
        self.client.mobile_devices_page(q).await
    }

    fn width(&self) -> usize {
        self.workers()
    }

    fn ramping(&self) -> bool {
        self.client.ramping()
    }
}

impl DeviceSource for MobileDeviceSource {
    type Record = MobileDevice;

    async fn read_changed(&self, reading: Reading<'_, MobileDevice>) -> Result<(), RunError> {
        let Reading { run, since, tx } = reading;
        if self.mode().await? == Mode::AdvancedSearch {
            return self.read_search(run, since, tx).await;
        }
        read_pages(self, run, &self.cfg.sections, &self.general, since, &tx).await
    }

    async fn list_ids(&self, run: &Run) -> Result<Vec<i64>, RunError> {
        if self.mode().await? == Mode::AdvancedSearch {
            return Ok(self.client.mobile_device_ids().await?);
        }
        let sizing = Sizing::Fixed(JAMF_MAX_PAGE_SIZE);
        collect_ids(|tx| read_ids(self, run, &self.general, None, sizing, tx)).await
    }

    async fn fetch(&self, ids: &[i64]) -> Result<Fetched<MobileDevice>, JamfError> {
        if self.mode().await? == Mode::AdvancedSearch {
            return fetch_by_id(ids, self.workers(), |id| self.xml_one(id)).await;
        }
        fetch_listed(self, &self.cfg.sections, ids, self.chunk, false).await
    }

    async fn confirm_gone(&self, ids: &[i64]) -> Result<Vec<i64>, JamfError> {
        // The Classic record answers for every mobile device whichever source lists them.
        gone_ids(ids, self.workers(), |id| async move {
            self.client.mobile_device_xml(id).await.map(|_| ())
        })
        .await
    }
}

/// Whether a search hit may have changed since `since` (see the module docs).
/// Whether the evaluated search found what this run needs: our own search must hold exactly
/// the criterion this run set (another process editing it meanwhile would make a full run
/// store a subset and report success); a configured one may only narrow by inventory date to
/// no less than the run's window (a full run: not at all). Other criteria of a configured
/// search are the operator's choice of scope.
fn check_criteria(
    search_id: i64,
    configured: bool,
    window: Option<u32>,
    criteria: &[Criterion],
) -> Result<(), RunError> {
    let wanted = match window {
        Some(days) => format!("inventory updated less than {days} days ago"),
        None => "every device (full run)".to_string(),
    };
    if !configured {
        let expected: Vec<Criterion> = window.map(Criterion::window).into_iter().collect();
        let same = criteria.len() == expected.len()
            && criteria.iter().zip(&expected).all(|(a, b)| a.same(b));
        if same {
            return Ok(());
        }
        let found: Vec<String> = criteria.iter().map(ToString::to_string).collect();
        return Err(RunError::Other(format!(
            "advanced search {search_id} was evaluated with criteria [{}], not the ones this run \
             set ({wanted}): another process changed it meanwhile (another installation using \
             the same search?); nothing from it is trusted",
            found.join(", ")
        )));
    }
    for c in criteria
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("Last Inventory Update"))
    {
        let covers = window.is_some_and(|days| {
            c.search_type.eq_ignore_ascii_case("less than x days ago")
                && c.value.trim().parse::<u32>().is_ok_and(|v| v >= days)
        });
        if !covers {
            return Err(RunError::Other(format!(
                "mobile_devices.search_id {search_id}: its criterion {c} does not cover this \
                 run ({wanted}); remove or widen it, or let jamf-sync manage its own search"
            )));
        }
    }
    Ok(())
}

fn keep(hit: &SearchHit, since: Option<DateTime<Utc>>, tolerance: chrono::Duration) -> bool {
    match (since, hit.last_inventory_update) {
        (Some(s), Some(t)) => t.checked_add_signed(tolerance).is_none_or(|t| t >= s),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_trusted_only_with_the_criteria_the_run_needs() {
        let ours = |window, criteria: &[Criterion]| check_criteria(7, false, window, criteria);
        assert!(ours(Some(2), &[Criterion::window(2)]).is_ok());
        assert!(ours(None, &[]).is_ok());
        // A full run that finds someone's 2-day criterion in its search stores nothing.
        let e = ours(None, &[Criterion::window(2)])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("another process changed it")));
        assert!(ours(Some(2), &[Criterion::window(3)]).is_err());
        assert!(ours(Some(2), &[]).is_err());
        let configured = |window, criteria: &[Criterion]| check_criteria(7, true, window, criteria);
        assert!(configured(Some(2), &[Criterion::window(5)]).is_ok());
        assert!(configured(Some(9), &[Criterion::window(5)]).is_err());
        assert!(configured(None, &[Criterion::window(5)]).is_err());
        let scope = Criterion {
            name: "Managed".into(),
            search_type: "is".into(),
            value: "Managed".into(),
        };
        assert!(configured(None, std::slice::from_ref(&scope)).is_ok());
        let e = configured(Some(9), &[Criterion::window(5)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("mobile_devices.search_id 7"), "{e}");
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
