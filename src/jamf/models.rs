//! Wire models of the Jamf Pro API and their mapping to our normalized records.
//!
//! Field names follow Jamf's OpenAPI document (`ComputerInventoryV4`, `ComputerGeneral`, ...);
//! `tests/it/openapi.rs` checks them against it. Invariants:
//! - a page is decoded into raw records first, so one malformed record never fails its page;
//! - `raw` is the record exactly as Jamf sent it; the typed fields are a projection of it;
//! - v4 `general.lastContact` and v1/v3 `general.lastContactTime` map to the same column.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `GET …/computers-inventory` answer, records kept raw until decoded one by one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryPage {
    pub total_count: i64,
    #[serde(default)]
    pub results: Vec<Box<RawValue>>,
}

/// The part of a computer record jamf-sync projects into columns.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerRecord {
    pub id: String,
    pub udid: Option<String>,
    pub general: Option<ComputerGeneral>,
    pub hardware: Option<ComputerHardware>,
    pub operating_system: Option<ComputerOperatingSystem>,
    pub user_and_location: Option<ComputerUserAndLocation>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerGeneral {
    pub name: Option<String>,
    pub report_date: Option<String>,
    /// v4 name.
    pub last_contact: Option<String>,
    /// v1/v3 name.
    pub last_contact_time: Option<String>,
    pub remote_management: Option<RemoteManagement>,
    pub supervised: Option<bool>,
    pub asset_tag: Option<String>,
    pub platform: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteManagement {
    pub managed: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerHardware {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_identifier: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerOperatingSystem {
    pub name: Option<String>,
    pub version: Option<String>,
    pub build: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerUserAndLocation {
    pub username: Option<String>,
    pub realname: Option<String>,
    pub email: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

/// `ComputerExtensionAttribute`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionAttribute {
    pub definition_id: Option<String>,
    pub name: Option<String>,
    pub values: Option<Vec<String>>,
    pub data_type: Option<String>,
}

/// `OAuthTokenResponse`.
#[derive(Debug, Deserialize, Serialize)]
pub struct OAuthTokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// `AuthTokenV1`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AuthTokenV1 {
    pub token: String,
    pub expires: Option<String>,
}

/// `JamfProVersion`.
#[derive(Debug, Deserialize, Serialize)]
pub struct JamfProVersion {
    pub version: Option<String>,
}

/// An extension attribute flattened for the `extension_attributes` table.
#[derive(Debug, Clone, PartialEq)]
pub struct EaValue {
    pub definition_id: String,
    pub name: String,
    /// Values joined with ", " (most EAs have one value).
    pub value: Option<String>,
    pub data_type: Option<String>,
}

/// A computer ready for the store.
#[derive(Debug, Clone)]
pub struct Computer {
    pub jamf_id: i64,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub os_build: Option<String>,
    pub report_date: Option<DateTime<Utc>>,
    pub last_contact: Option<DateTime<Utc>>,
    pub managed: Option<bool>,
    pub supervised: Option<bool>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub extension_attributes: Vec<EaValue>,
    /// The record as Jamf sent it (JSON text).
    pub raw: String,
    /// xxh3 of `raw`, to tell changed records from unchanged ones without comparing JSON.
    pub raw_hash: i64,
}

/// A record that could not be decoded; the run logs, counts and skips it.
#[derive(Debug, thiserror::Error)]
#[error("computer {id}: {message}")]
pub struct RecordError {
    /// The record's id when it could be read, else `?`.
    pub id: String,
    pub message: String,
}

/// Parses Jamf's ISO-8601 timestamps (with or without milliseconds, `Z` or offset).
pub fn parse_jamf_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        // Classic-style `+0000` offsets without a colon.
        .or_else(|| {
            DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
                .ok()
                .map(|d| d.with_timezone(&Utc))
        })
}

fn time_field(
    id: &str,
    field: &str,
    v: Option<&str>,
) -> Result<Option<DateTime<Utc>>, RecordError> {
    match v {
        None => Ok(None),
        Some("") => Ok(None),
        Some(s) => parse_jamf_time(s).map(Some).ok_or_else(|| RecordError {
            id: id.to_string(),
            message: format!("{field} {s:?} is not an ISO-8601 timestamp"),
        }),
    }
}

impl Computer {
    /// Decodes one raw record. Never panics; any problem is a [`RecordError`] naming the id.
    pub fn from_raw(raw: &RawValue) -> Result<Computer, RecordError> {
        let text = raw.get();
        let rec: ComputerRecord = serde_json::from_str(text).map_err(|e| RecordError {
            id: sniff_id(text).unwrap_or_else(|| "?".into()),
            message: e.to_string(),
        })?;
        let jamf_id: i64 = rec.id.trim().parse().map_err(|_| RecordError {
            id: rec.id.clone(),
            message: "id is not a number".into(),
        })?;
        let id = rec.id.as_str();
        let general = rec.general.unwrap_or_default();
        let hardware = rec.hardware.unwrap_or_default();
        let os = rec.operating_system.unwrap_or_default();
        let user = rec.user_and_location.unwrap_or_default();
        let report_date = time_field(id, "general.reportDate", general.report_date.as_deref())?;
        let last_contact = time_field(
            id,
            "general.lastContact",
            general
                .last_contact
                .as_deref()
                .or(general.last_contact_time.as_deref()),
        )?;
        let lists = [
            rec.extension_attributes,
            general.extension_attributes,
            hardware.extension_attributes,
            os.extension_attributes,
            user.extension_attributes,
        ];
        let eas = first_per_definition(lists.into_iter().flatten().flatten().map(|ea| EaValue {
            definition_id: ea.definition_id.unwrap_or_default(),
            name: ea.name.unwrap_or_default(),
            value: ea.values.map(|v| v.join(", ")),
            data_type: ea.data_type,
        }));
        Ok(Computer {
            jamf_id,
            udid: rec.udid,
            serial_number: hardware.serial_number,
            name: general.name,
            model: hardware.model,
            os_version: os.version,
            os_build: os.build,
            report_date,
            last_contact,
            managed: general.remote_management.and_then(|r| r.managed),
            supervised: general.supervised,
            username: user.username,
            email: user.email,
            extension_attributes: eas,
            raw_hash: hash_raw(text),
            raw: text.to_string(),
        })
    }
}

/// Extension attributes appear in their own section and, on older servers, inside the
/// sections they belong to: keep the first occurrence of each definition, drop ones without an
/// id.
pub fn first_per_definition(eas: impl Iterator<Item = EaValue>) -> Vec<EaValue> {
    let mut out: Vec<EaValue> = Vec::new();
    for ea in eas {
        if ea.definition_id.is_empty() || out.iter().any(|e| e.definition_id == ea.definition_id) {
            continue;
        }
        out.push(ea);
    }
    out
}

/// Stable 64-bit hash of a raw record (xxh3 is stable across versions and platforms).
pub fn hash_raw(text: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
}

/// Best-effort id of a record that failed to decode, for the log line.
/// The numeric id of a raw record (`{"id":"7",…}`), without decoding the rest.
pub fn numeric_id(text: &str) -> Option<i64> {
    sniff_id(text)?.trim().parse().ok()
}

fn sniff_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: serde_json::Value,
    }
    let v: IdOnly = serde_json::from_str(text).ok()?;
    match v.id {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        match RawValue::from_string(s.to_string()) {
            Ok(r) => r,
            Err(e) => panic!("bad test json: {e}"),
        }
    }

    #[test]
    fn v4_and_v1_last_contact_map_alike() {
        let v4 = Computer::from_raw(&raw(
            r#"{"id":"7","general":{"reportDate":"2025-02-15T13:46:35Z","lastContact":"2025-02-16T00:00:00.123Z"}}"#,
        ));
        let v1 = Computer::from_raw(&raw(
            r#"{"id":"7","general":{"reportDate":"2025-02-15T13:46:35Z","lastContactTime":"2025-02-16T00:00:00.123Z"}}"#,
        ));
        let (v4, v1) = match (v4, v1) {
            (Ok(a), Ok(b)) => (a, b),
            other => panic!("decode failed: {other:?}"),
        };
        assert_eq!(v4.last_contact, v1.last_contact);
        assert!(v4.last_contact.is_some());
        assert_eq!(v4.jamf_id, 7);
    }

    #[test]
    fn malformed_record_names_its_id() {
        let e = Computer::from_raw(&raw(r#"{"id":"12","general":{"name":42}}"#));
        match e {
            Err(e) => assert_eq!(e.id, "12"),
            Ok(_) => panic!("should fail"),
        }
        let e = Computer::from_raw(&raw(r#"{"id":"x1"}"#));
        assert!(matches!(e, Err(RecordError { ref id, .. }) if id == "x1"));
    }

    #[test]
    fn extension_attributes_deduplicated_by_definition() {
        let c = Computer::from_raw(&raw(
            r#"{"id":"1","extensionAttributes":[{"definitionId":"3","name":"Owner","values":["a","b"]}],
               "general":{"extensionAttributes":[{"definitionId":"3","name":"Owner","values":["c"]}]}}"#,
        ));
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.extension_attributes.len(), 1);
        assert_eq!(c.extension_attributes[0].value.as_deref(), Some("a, b"));
    }
}
