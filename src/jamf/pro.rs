//! The Jamf Pro API calls inventory needs: server version and API version detection,
//! `computers-inventory` pages (v1/v3/v4), `computers-inventory-detail/{id}`, and
//! `/api/v2/mobile-devices/detail` pages.
//!
//! List calls always sort by id and use page 0: callers page with a keyset in the filter.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::models::{InventoryPage, JamfProVersion};
use super::{Call, JamfClient, JamfError};
use crate::config::ApiVersion;
use crate::domain::ServerVersion;

/// The computers-inventory version picked for a server version, and when it was asked.
#[derive(Debug, Clone)]
pub(super) struct Detected {
    api: ApiVersion,
    server: Option<String>,
    at: Instant,
}

/// One keyset page request.
#[derive(Debug, Clone, Copy)]
pub struct PageQuery<'a> {
    pub sections: &'a [String],
    pub page_size: u32,
    pub filter: Option<&'a str>,
    /// A timeout or 504 comes back at once (the caller asks again smaller) instead of being
    /// retried at the same size.
    pub shrinkable: bool,
    /// Highest ids first.
    pub descending: bool,
}

impl JamfClient {
    /// `GET /api/v1/jamf-pro-version`, e.g. `11.30.1-t1784555528405`.
    pub async fn server_version(&self) -> Result<Option<String>, JamfError> {
        let v: JamfProVersion = self
            .get_json(
                "/api/v1/jamf-pro-version",
                "api/v1/jamf-pro-version".into(),
                &[],
            )
            .await?;
        Ok(v.version)
    }

    /// The computers-inventory version to use: configured, or detected from the server version.
    ///
    /// A detected choice is used for [`JamfSettings::version_ttl`]; then the server version is
    /// asked again, and only a different answer (an upgrade) replaces the choice, so a version
    /// stepped down after a 404 stays stepped down on the same server.
    ///
    /// [`JamfSettings::version_ttl`]: crate::config::JamfSettings::version_ttl
    pub async fn inventory_version(&self) -> Result<ApiVersion, JamfError> {
        if self.settings.api_version != ApiVersion::Auto {
            return Ok(self.settings.api_version);
        }
        let mut cached = self.inventory_version.lock().await;
        if let Some(d) = cached
            .as_ref()
            .filter(|d| d.at.elapsed() < self.settings.version_ttl)
        {
            return Ok(d.api);
        }
        let server = self.server_version().await?;
        let api = match cached.as_ref() {
            Some(d) if d.server == server => d.api,
            previous => {
                let picked = version_for(server.as_deref());
                match previous {
                    None => {
                        tracing::info!(server_version = ?server, api = ?picked, "detected Jamf Pro version")
                    }
                    Some(d) => {
                        tracing::info!(was = ?d.server, server_version = ?server, api = ?picked, "Jamf Pro version changed")
                    }
                }
                picked
            }
        };
        *cached = Some(Detected {
            api,
            server,
            at: Instant::now(),
        });
        Ok(api)
    }

    /// The server version detected, when it was asked (none yet, or a configured API version).
    pub(super) async fn detected_server_version(&self) -> Option<ServerVersion> {
        let cached = self.inventory_version.lock().await;
        let d = cached.as_ref()?;
        let age = chrono::Duration::from_std(d.at.elapsed()).ok()?;
        Some(ServerVersion {
            version: d.server.clone()?,
            checked_at: Utc::now() - age,
        })
    }

    /// Takes a server version an earlier process asked for as detected, while it is younger
    /// than [`JamfSettings::version_ttl`] and nothing was detected here (saves a request per
    /// process); the re-check then comes when it would have come for that process.
    ///
    /// [`JamfSettings::version_ttl`]: crate::config::JamfSettings::version_ttl
    pub(super) async fn assume_server_version(&self, v: &ServerVersion) {
        // Stored values come from a row anyone with database access can edit.
        if self.settings.api_version != ApiVersion::Auto || v.version.len() > 64 {
            return;
        }
        let Ok(age) = (Utc::now() - v.checked_at).to_std() else {
            return; // asked "in the future": a clock that moved; ask again
        };
        let Some(at) = Instant::now().checked_sub(age) else {
            return;
        };
        let mut cached = self.inventory_version.lock().await;
        if cached.is_some() || age >= self.settings.version_ttl {
            return;
        }
        let api = version_for(Some(&v.version));
        tracing::debug!(server_version = %v.version, api = ?api, "Jamf Pro version as the last run saw it");
        *cached = Some(Detected {
            api,
            server: Some(v.version.clone()),
            at,
        });
    }

    /// After a 404 on the inventory endpoint of version `failed`, step down to the next older
    /// version (auto only). When another request already stepped down from `failed`, the
    /// current choice is returned as it is: requests in flight at once step down one version.
    pub async fn step_down_inventory_version(&self, failed: ApiVersion) -> Option<ApiVersion> {
        if self.settings.api_version != ApiVersion::Auto {
            return None;
        }
        let mut cached = self.inventory_version.lock().await;
        let detected = cached.as_mut()?;
        if detected.api != failed {
            return Some(detected.api);
        }
        let next = match detected.api {
            ApiVersion::V4 => ApiVersion::V3,
            ApiVersion::V3 => ApiVersion::V1,
            _ => return None,
        };
        tracing::warn!(?next, "inventory endpoint not found; stepping down");
        detected.api = next;
        Some(next)
    }

    /// One page of `computers-inventory` with sections inline.
    pub async fn computers_page(
        &self,
        version: ApiVersion,
        q: PageQuery<'_>,
    ) -> Result<InventoryPage, JamfError> {
        let (endpoint, path) = match version {
            ApiVersion::V1 => ("/api/v1/computers-inventory", "api/v1/computers-inventory"),
            ApiVersion::V3 => ("/api/v3/computers-inventory", "api/v3/computers-inventory"),
            ApiVersion::V4 | ApiVersion::Auto => {
                ("/api/v4/computers-inventory", "api/v4/computers-inventory")
            }
        };
        let sort = if q.descending { "id:desc" } else { "id:asc" };
        self.page(endpoint, path, sort, q, &[]).await
    }

    /// One page of `/api/v2/mobile-devices/detail`.
    ///
    /// Asked with `exception-handling=LENIENT`: Jamf then answers a device whose data it cannot
    /// process with that section `null` instead of a 500 for the whole page. Sections asked
    /// for that came back `null` are logged and counted (`outcome="partial"`); the record is
    /// stored as Jamf gave it.
    pub async fn mobile_devices_page(&self, q: PageQuery<'_>) -> Result<InventoryPage, JamfError> {
        let sections = q.sections;
        let page = self
            .page(
                "/api/v2/mobile-devices/detail",
                "api/v2/mobile-devices/detail",
                if q.descending {
                    "mobileDeviceId:desc"
                } else {
                    "mobileDeviceId:asc"
                },
                q,
                &[("exception-handling", "LENIENT")],
            )
            .await?;
        for raw in &page.results {
            let empty = null_sections(raw.get(), sections);
            if !empty.is_empty() {
                metrics::counter!(crate::telemetry::metric::RECORDS, "jamf_instance" => self.instance().to_string(), "kind" => "mobile_devices", "outcome" => "partial")
                    .increment(1);
                tracing::warn!(
                    id = ?super::decode::numeric_id(raw.get(), "mobileDeviceId"),
                    sections = ?empty,
                    "Jamf could not process these sections of a mobile device (they came back empty)"
                );
            }
        }
        Ok(page)
    }

    async fn page(
        &self,
        endpoint: &'static str,
        path: &str,
        sort: &str,
        q: PageQuery<'_>,
        extra: &[(&'static str, &str)],
    ) -> Result<InventoryPage, JamfError> {
        let mut query: Vec<(&str, String)> =
            q.sections.iter().map(|s| ("section", s.clone())).collect();
        query.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        // Keyset paging: always page 0, the filter's id bound moves forward.
        query.push(("page", "0".into()));
        query.push(("page-size", q.page_size.to_string()));
        query.push(("sort", sort.into()));
        if let Some(f) = q.filter {
            query.push(("filter", f.to_string()));
        }
        let mut call = Call::get(endpoint, path.into(), &query);
        call.shrinkable = q.shrinkable;
        let answer = self.call(call).await?;
        let mut page: InventoryPage =
            serde_json::from_slice(&answer.body).map_err(|e| JamfError::Decode {
                endpoint,
                message: e.to_string(),
            })?;
        page.requested_at = answer.requested_at;
        Ok(page)
    }

    /// `computers-inventory-detail/{id}`: every section of one computer, raw, and when it was
    /// requested.
    pub async fn computer_detail(
        &self,
        version: ApiVersion,
        id: i64,
    ) -> Result<(Box<RawValue>, DateTime<Utc>), JamfError> {
        let (endpoint, prefix) = match version {
            ApiVersion::V1 => ("/api/v1/computers-inventory-detail/{id}", "api/v1"),
            ApiVersion::V3 => ("/api/v3/computers-inventory-detail/{id}", "api/v3"),
            ApiVersion::V4 | ApiVersion::Auto => {
                ("/api/v4/computers-inventory-detail/{id}", "api/v4")
            }
        };
        let answer = self
            .call(Call::get(
                endpoint,
                format!("{prefix}/computers-inventory-detail/{id}"),
                &[],
            ))
            .await?;
        let decode = |message: String| JamfError::Decode { endpoint, message };
        let text = String::from_utf8(answer.body.to_vec()).map_err(|e| decode(e.to_string()))?;
        let raw = RawValue::from_string(text).map_err(|e| decode(e.to_string()))?;
        Ok((raw, answer.requested_at))
    }
}

/// v4 is current since 11.30.0; v3 on other 11.x servers (with a step down to v1 on 404).
pub fn version_for(version: Option<&str>) -> ApiVersion {
    let Some(v) = version else {
        return ApiVersion::V4;
    };
    match major_minor(v) {
        (m, _) if m > 11 => ApiVersion::V4,
        (11, n) if n >= 30 => ApiVersion::V4,
        (11, _) => ApiVersion::V3,
        _ => ApiVersion::V1,
    }
}

/// `/api/v2/mobile-devices/detail` exists from Jamf Pro 11.4.
pub fn supports_pro_mobile_detail(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let (major, minor) = major_minor(v);
    major > 11 || (major == 11 && minor >= 4)
}

/// `(major, minor)` of a Jamf Pro version string such as `11.30.1-t1784555528405`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut nums = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// Of the sections asked for (`USER_AND_LOCATION`), those whose key (`userAndLocation`) the
/// record holds as `null`. Reads only the record's top level.
fn null_sections(raw: &str, sections: &[String]) -> Vec<String> {
    let Ok(top) = serde_json::from_str::<std::collections::HashMap<&str, &RawValue>>(raw) else {
        return Vec::new();
    };
    sections
        .iter()
        .filter(|s| {
            let key = camel(s);
            top.get(key.as_str()).is_some_and(|v| v.get() == "null")
        })
        .cloned()
        .collect()
}

/// `USER_AND_LOCATION` → `userAndLocation`.
fn camel(section: &str) -> String {
    let mut out = String::new();
    for (i, part) in section.split('_').enumerate() {
        let lower = part.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_jamf_could_not_process_are_found() {
        let raw =
            r#"{"mobileDeviceId":"7","general":{"udid":"u"},"hardware":null,"userAndLocation":{}}"#;
        let asked: Vec<String> = ["GENERAL", "HARDWARE", "USER_AND_LOCATION"]
            .map(String::from)
            .to_vec();
        assert_eq!(null_sections(raw, &asked), vec!["HARDWARE".to_string()]);
        assert!(null_sections("not json", &asked).is_empty());
        assert_eq!(camel("EXTENSION_ATTRIBUTES"), "extensionAttributes");
    }

    #[test]
    fn version_detection() {
        assert_eq!(version_for(Some("11.30.1-t1784555528405")), ApiVersion::V4);
        assert_eq!(version_for(Some("12.0.0")), ApiVersion::V4);
        assert_eq!(version_for(Some("11.20.0")), ApiVersion::V3);
        assert_eq!(version_for(Some("10.49.0")), ApiVersion::V1);
    }

    #[test]
    fn pro_detail_from_11_4() {
        assert!(supports_pro_mobile_detail(Some("11.30.1-t1")));
        assert!(supports_pro_mobile_detail(Some("11.4.0")));
        assert!(!supports_pro_mobile_detail(Some("11.3.2")));
        assert!(!supports_pro_mobile_detail(Some("10.49.0")));
        assert!(!supports_pro_mobile_detail(None));
    }
}
