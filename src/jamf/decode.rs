//! Decoding Jamf's records into the domain's: computers from the Jamf Pro API's JSON, mobile
//! devices from Classic XML or the Jamf Pro API's JSON.
//!
//! Invariants:
//! - decoding never panics; any problem is a [`RecordError`] naming the record's id when it
//!   can be read, so one bad record is logged and skipped, never its page;
//! - `raw` is the record as Jamf sent it (Classic XML as its faithful JSON form); the typed
//!   fields are a projection of it;
//! - v4 `general.lastContact` and v1/v3 `general.lastContactTime` map to the same column;
//!   Classic's `last_inventory_update_epoch` (ms) is authoritative over its text forms.

use super::escapes::storable;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use super::models::{
    ComputerApplication, ComputerCertificate, ComputerConfigurationProfile,
    ComputerLocalUserAccount, ComputerRecord, GroupMembership, MobileDeviceXml, ProMobileDevice,
};
use super::xml::xml_to_json;
use crate::domain::children::{self, Children, Val};
use crate::domain::{Computer, DeviceInfo, EaValue, MobileDevice};

/// A record that could not be decoded; the run logs, counts and skips it.
#[derive(Debug, thiserror::Error)]
#[error("record {id}: {message}")]
pub struct RecordError {
    /// The record's id when it could be read, else `?`.
    pub id: String,
    pub message: String,
}

impl RecordError {
    fn new(id: impl Into<String>, message: impl Into<String>) -> Self {
        RecordError {
            id: id.into(),
            message: message.into(),
        }
    }

    /// The numeric id, when the record had a readable one.
    pub fn jamf_id(&self) -> Option<i64> {
        self.id.trim().parse().ok()
    }
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

/// Jamf's Classic timestamps: `2021-03-29T12:44:12.595+0000`, RFC 3339, or epoch milliseconds.
pub fn parse_classic_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Utc.timestamp_millis_opt(ms).single();
    }
    parse_jamf_time(s).or_else(|| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|n| n.and_utc())
    })
}

/// Stable 64-bit hash of a raw record (xxh3 is stable across versions and platforms).
pub fn hash_raw(text: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
}

/// The numeric value of a record's id field (`{"id":"7",…}`), without decoding the rest.
pub fn numeric_id(text: &str, field: &str) -> Option<i64> {
    sniff_id(text, field)?.trim().parse().ok()
}

/// The id field of a record as text (string or number), reading only the top level: the
/// other fields stay raw, so listing thousands of ids allocates their keys, not their values.
fn sniff_id(text: &str, field: &str) -> Option<String> {
    let top: std::collections::HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    match serde_json::from_str(top.get(field)?.get()).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time_field(
    id: &str,
    field: &str,
    v: Option<&str>,
) -> Result<Option<DateTime<Utc>>, RecordError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => parse_jamf_time(s).map(Some).ok_or_else(|| {
            RecordError::new(id, format!("{field} {s:?} is not an ISO-8601 timestamp"))
        }),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Extension attributes appear in their own section and, on older servers, inside the
/// sections they belong to: keep the first occurrence of each definition, drop ones without an
/// id.
fn first_per_definition(eas: impl Iterator<Item = EaValue>) -> Vec<EaValue> {
    let mut out: Vec<EaValue> = Vec::new();
    for ea in eas {
        if ea.definition_id.is_empty() || out.iter().any(|e| e.definition_id == ea.definition_id) {
            continue;
        }
        out.push(ea);
    }
    out
}

/// Decodes one `computers-inventory` record (a list page's or a detail record).
pub fn computer(raw: &RawValue, fetched_at: DateTime<Utc>) -> Result<Computer, RecordError> {
    let text = storable(raw.get());
    let text = text.as_ref();
    let rec: ComputerRecord = serde_json::from_str(text).map_err(|e| {
        RecordError::new(
            sniff_id(text, "id").unwrap_or_else(|| "?".into()),
            e.to_string(),
        )
    })?;
    let jamf_id: i64 = rec
        .id
        .trim()
        .parse()
        .map_err(|_| RecordError::new(rec.id.clone(), "id is not a number"))?;
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
        info: DeviceInfo {
            udid: rec.udid,
            serial_number: hardware.serial_number,
            name: general.name,
            model: hardware.model,
            os_version: os.version,
            managed: general.remote_management.and_then(|r| r.managed),
            supervised: general.supervised,
            username: user.username,
            email: user.email,
        },
        os_build: os.build,
        report_date,
        last_contact,
        extension_attributes: eas,
        children: computer_children(ChildSections {
            apps: rec.applications,
            groups: rec.group_memberships,
            profiles: rec.configuration_profiles,
            accounts: rec.local_user_accounts,
            certificates: rec.certificates,
        }),
        raw_hash: hash_raw(text),
        raw: text.to_string(),
        fetched_at,
    })
}

/// The list sections of a computer record that have child tables.
struct ChildSections {
    apps: Option<Vec<ComputerApplication>>,
    groups: Option<Vec<GroupMembership>>,
    profiles: Option<Vec<ComputerConfigurationProfile>>,
    accounts: Option<Vec<ComputerLocalUserAccount>>,
    certificates: Option<Vec<ComputerCertificate>>,
}

/// A child row's timestamp: one Jamf sends malformed is stored as NULL (the row is kept).
fn child_time(v: Option<String>) -> Val {
    Val::Time(v.as_deref().and_then(parse_jamf_time))
}

/// The child rows of the list sections present in a computer record.
fn computer_children(sections: ChildSections) -> Vec<Children> {
    let mut lists = Lists::default();
    lists.add(
        &children::COMPUTER_CONFIGURATION_PROFILES,
        sections.profiles,
        |p| {
            vec![
                Val::Text(p.id),
                Val::Text(p.display_name),
                Val::Text(p.profile_identifier),
                Val::Text(p.uuid),
                Val::Text(p.username),
                Val::Bool(p.removable),
                child_time(p.last_installed),
            ]
        },
    );
    lists.add(
        &children::COMPUTER_LOCAL_USER_ACCOUNTS,
        sections.accounts,
        |a| {
            vec![
                Val::Text(a.uid),
                Val::Text(a.user_guid),
                Val::Text(a.username),
                Val::Text(a.full_name),
                Val::Bool(a.admin),
                Val::Text(a.home_directory),
                Val::Bool(a.file_vault2_enabled),
                Val::Text(a.user_account_type),
            ]
        },
    );
    lists.add(
        &children::COMPUTER_CERTIFICATES,
        sections.certificates,
        |c| {
            vec![
                Val::Text(c.common_name),
                Val::Text(c.subject_name),
                Val::Text(c.serial_number),
                Val::Text(c.sha1_fingerprint),
                Val::Bool(c.identity),
                Val::Text(c.username),
                Val::Text(c.lifecycle_status),
                Val::Text(c.certificate_status),
                child_time(c.issued_date),
                child_time(c.expiration_date),
            ]
        },
    );
    lists.add(&children::COMPUTER_APPLICATIONS, sections.apps, |a| {
        let major = children::version_major(a.version.as_deref());
        vec![
            Val::Text(a.name),
            Val::Text(a.path),
            Val::Text(a.version),
            Val::Text(a.bundle_id),
            Val::Bool(a.mac_app_store),
            Val::Int(a.size_megabytes),
            Val::Bool(a.update_available),
            Val::Int(major),
        ]
    });
    lists.add(
        &children::COMPUTER_GROUP_MEMBERSHIPS,
        sections.groups,
        |g| {
            vec![
                Val::Text(g.group_id),
                Val::Text(g.group_name),
                Val::Bool(g.smart_group),
            ]
        },
    );
    lists.0
}

/// The child tables of one record, built from the list sections present in it: a list that
/// is absent (section not in the answer) adds no entry, so its table is left alone.
#[derive(Default)]
struct Lists(Vec<Children>);

impl Lists {
    fn add<T>(
        &mut self,
        table: &'static children::ChildTable,
        list: Option<Vec<T>>,
        row: impl Fn(T) -> Vec<Val>,
    ) {
        if let Some(list) = list {
            self.0.push(Children {
                table,
                rows: list.into_iter().map(row).collect(),
            });
        }
    }
}

/// A mobile app's row: the short version is what people search by (older records lack it, and
/// then the build stands in); the build stays beside it.
fn mobile_app_row(
    name: Option<String>,
    identifier: Option<String>,
    short_version: Option<String>,
    build: Option<String>,
) -> Vec<Val> {
    let version = non_empty(short_version).or(build.clone());
    let major = children::version_major(version.as_deref());
    vec![
        Val::Text(name),
        Val::Text(identifier),
        Val::Text(version),
        Val::Text(build),
        Val::Int(major),
    ]
}

/// A mobile profile's row; the Classic record lacks `removable` and `last_installed`.
fn mobile_profile_row(
    name: Option<String>,
    identifier: Option<String>,
    uuid: Option<String>,
    version: Option<String>,
    removable: Option<bool>,
    last_installed: Option<String>,
) -> Vec<Val> {
    vec![
        Val::Text(name),
        Val::Text(identifier),
        Val::Text(uuid),
        Val::Text(version),
        Val::Bool(removable),
        child_time(last_installed),
    ]
}

fn parse_bool(v: Option<String>) -> Option<bool> {
    match v.as_deref().map(str::trim) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

fn sniff_xml_id(xml: &str) -> String {
    let found = (|| {
        let start = xml.find("<id>")? + 4;
        let end = xml[start..].find("</id>")? + start;
        let id = xml[start..end].trim();
        (!id.is_empty() && id.len() < 20).then(|| id.to_string())
    })();
    found.unwrap_or_else(|| "?".into())
}

/// Decodes one Classic `<mobile_device>` XML record.
pub fn mobile_xml(xml: &str, fetched_at: DateTime<Utc>) -> Result<MobileDevice, RecordError> {
    // A NUL is no XML character, but a server's writer may pass one through from a device:
    // replaced here, so the typed columns store as the raw JSON does.
    let xml = &*if xml.contains('\0') {
        std::borrow::Cow::Owned(xml.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(xml)
    };
    let (root, json) = xml_to_json(xml).map_err(|m| RecordError::new(sniff_xml_id(xml), m))?;
    if root != "mobile_device" {
        return Err(RecordError::new(
            "?",
            format!("expected <mobile_device>, got <{root}>"),
        ));
    }
    let typed: MobileDeviceXml = quick_xml::de::from_str(xml)
        .map_err(|e| RecordError::new(sniff_xml_id(xml), e.to_string()))?;
    let g = typed.general;
    let id_text = g.id.clone().unwrap_or_default();
    let jamf_id: i64 = id_text.trim().parse().map_err(|_| {
        RecordError::new(
            if id_text.is_empty() { "?" } else { &id_text },
            "general/id is missing or not a number",
        )
    })?;
    let last_inventory_update = match non_empty(g.last_inventory_update_epoch) {
        Some(ms) => Some(parse_classic_time(&ms).ok_or_else(|| {
            RecordError::new(
                jamf_id.to_string(),
                format!("last_inventory_update_epoch {ms:?} is not a number"),
            )
        })?),
        None => non_empty(g.last_inventory_update_utc).and_then(|s| parse_classic_time(&s)),
    };
    let extension_attributes = typed
        .extension_attributes
        .extension_attribute
        .into_iter()
        .filter_map(|ea| {
            Some(EaValue {
                definition_id: non_empty(ea.id)?,
                name: ea.name.unwrap_or_default(),
                value: ea.value,
                data_type: ea.data_type,
            })
        })
        .collect();
    let mut lists = Lists::default();
    lists.add(
        &children::MOBILE_DEVICE_APPLICATIONS,
        typed.applications.map(|a| a.application),
        |a| {
            mobile_app_row(
                a.application_name,
                a.identifier,
                a.application_short_version,
                a.application_version,
            )
        },
    );
    lists.add(
        &children::MOBILE_DEVICE_GROUP_MEMBERSHIPS,
        typed.mobile_device_groups.map(|g| g.mobile_device_group),
        |g| vec![Val::Text(g.id), Val::Text(g.name), Val::Bool(None)],
    );
    lists.add(
        &children::MOBILE_DEVICE_CONFIGURATION_PROFILES,
        typed
            .configuration_profiles
            .map(|p| p.configuration_profile),
        |p| mobile_profile_row(p.display_name, p.identifier, p.uuid, p.version, None, None),
    );
    lists.add(
        &children::MOBILE_DEVICE_CERTIFICATES,
        typed.certificates.map(|c| c.certificate),
        |c| {
            let expires = non_empty(c.expires_epoch)
                .or(non_empty(c.expires_utc))
                .and_then(|t| parse_classic_time(&t));
            vec![
                Val::Text(c.common_name),
                Val::Bool(parse_bool(c.identity)),
                Val::Time(expires),
            ]
        },
    );
    let raw = json.to_string();
    Ok(MobileDevice {
        children: lists.0,
        jamf_id,
        info: DeviceInfo {
            udid: non_empty(g.udid),
            serial_number: non_empty(g.serial_number),
            name: non_empty(g.display_name)
                .or(non_empty(g.name))
                .or(non_empty(g.device_name)),
            model: non_empty(g.model),
            os_version: non_empty(g.os_version),
            managed: parse_bool(g.managed),
            supervised: parse_bool(g.supervised),
            username: non_empty(typed.location.username),
            email: non_empty(typed.location.email_address),
        },
        os_type: non_empty(g.os_type),
        last_inventory_update,
        extension_attributes,
        raw_hash: hash_raw(&raw),
        raw: storable(&raw).into_owned(),
        fetched_at,
    })
}

/// Decodes one `/api/v2/mobile-devices/detail` record; fills the same columns as XML.
pub fn mobile_pro(raw: &RawValue, fetched_at: DateTime<Utc>) -> Result<MobileDevice, RecordError> {
    let text = storable(raw.get());
    let text = text.as_ref();
    let rec: ProMobileDevice = serde_json::from_str(text).map_err(|e| {
        RecordError::new(
            sniff_id(text, "mobileDeviceId").unwrap_or_else(|| "?".into()),
            e.to_string(),
        )
    })?;
    let jamf_id: i64 = rec.mobile_device_id.trim().parse().map_err(|_| {
        RecordError::new(
            rec.mobile_device_id.clone(),
            "mobileDeviceId is not a number",
        )
    })?;
    let general = rec.general.unwrap_or_default();
    let hardware = rec.hardware.unwrap_or_default();
    let user = rec.user_and_location.unwrap_or_default();
    let last_inventory_update = match non_empty(general.last_inventory_update_date) {
        Some(s) => Some(parse_classic_time(&s).ok_or_else(|| {
            RecordError::new(
                jamf_id.to_string(),
                format!("lastInventoryUpdateDate {s:?} is not a timestamp"),
            )
        })?),
        None => None,
    };
    let lists = [
        rec.extension_attributes,
        general.extension_attributes,
        hardware.extension_attributes,
        user.extension_attributes,
    ];
    let extension_attributes =
        first_per_definition(lists.into_iter().flatten().flatten().map(|ea| EaValue {
            definition_id: non_empty(ea.id).unwrap_or_default(),
            name: ea.name.unwrap_or_default(),
            value: ea.value.map(|v| v.join(", ")),
            data_type: ea.data_type,
        }));
    let mut lists = Lists::default();
    lists.add(
        &children::MOBILE_DEVICE_APPLICATIONS,
        rec.applications,
        |a| mobile_app_row(a.name, a.identifier, a.short_version, a.version),
    );
    lists.add(
        &children::MOBILE_DEVICE_GROUP_MEMBERSHIPS,
        rec.groups,
        |g| {
            vec![
                Val::Text(g.group_id),
                Val::Text(g.group_name),
                Val::Bool(g.smart),
            ]
        },
    );
    lists.add(
        &children::MOBILE_DEVICE_CONFIGURATION_PROFILES,
        rec.profiles,
        |p| {
            mobile_profile_row(
                p.display_name,
                p.identifier,
                p.uuid,
                p.version,
                p.removable,
                p.last_installed,
            )
        },
    );
    lists.add(
        &children::MOBILE_DEVICE_CERTIFICATES,
        rec.certificates,
        |c| {
            vec![
                Val::Text(c.common_name),
                Val::Bool(c.identity),
                child_time(c.expiration_date),
            ]
        },
    );
    Ok(MobileDevice {
        children: lists.0,
        jamf_id,
        info: DeviceInfo {
            udid: non_empty(general.udid),
            serial_number: non_empty(hardware.serial_number),
            name: non_empty(general.display_name),
            model: non_empty(hardware.model),
            os_version: non_empty(general.os_version),
            managed: general.managed,
            supervised: general.supervised,
            username: non_empty(user.username),
            email: non_empty(user.email_address),
        },
        os_type: non_empty(rec.device_type),
        last_inventory_update,
        extension_attributes,
        raw_hash: hash_raw(text),
        raw: text.to_string(),
        fetched_at,
    })
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
        let now = Utc::now();
        let v4 = computer(
            &raw(
                r#"{"id":"7","general":{"reportDate":"2025-02-15T13:46:35Z","lastContact":"2025-02-16T00:00:00.123Z"}}"#,
            ),
            now,
        );
        let v1 = computer(
            &raw(
                r#"{"id":"7","general":{"reportDate":"2025-02-15T13:46:35Z","lastContactTime":"2025-02-16T00:00:00.123Z"}}"#,
            ),
            now,
        );
        let (v4, v1) = match (v4, v1) {
            (Ok(a), Ok(b)) => (a, b),
            other => panic!("decode failed: {other:?}"),
        };
        assert_eq!(v4.last_contact, v1.last_contact);
        assert!(v4.last_contact.is_some());
        assert_eq!(v4.jamf_id, 7);
        assert_eq!(v4.fetched_at, now);
    }

    #[test]
    fn ids_are_read_from_the_top_level_only() {
        assert_eq!(
            numeric_id(r#"{"general":{"id":"9"},"id":"7"}"#, "id"),
            Some(7)
        );
        assert_eq!(
            numeric_id(r#"{"mobileDeviceId":12,"x":[1,{"a":2}]}"#, "mobileDeviceId"),
            Some(12)
        );
        assert_eq!(numeric_id(r#"{"general":{"id":"9"}}"#, "id"), None);
        assert_eq!(numeric_id(r#"{"id":"x7"}"#, "id"), None);
        assert_eq!(numeric_id("not json", "id"), None);
    }

    #[test]
    fn malformed_record_names_its_id() {
        let e = computer(&raw(r#"{"id":"12","general":{"name":42}}"#), Utc::now());
        match e {
            Err(e) => assert_eq!(e.jamf_id(), Some(12)),
            Ok(_) => panic!("should fail"),
        }
        let e = computer(&raw(r#"{"id":"x1"}"#), Utc::now());
        assert!(matches!(e, Err(RecordError { ref id, .. }) if id == "x1"));
        let e = mobile_pro(&raw(r#"{"mobileDeviceId":"9","general":7}"#), Utc::now());
        assert!(matches!(e, Err(ref e) if e.jamf_id() == Some(9)), "{e:?}");
    }

    #[test]
    fn extension_attributes_deduplicated_by_definition() {
        let c = computer(
            &raw(
                r#"{"id":"1","extensionAttributes":[{"definitionId":"3","name":"Owner","values":["a","b"]}],
               "general":{"extensionAttributes":[{"definitionId":"3","name":"Owner","values":["c"]}]}}"#,
            ),
            Utc::now(),
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.extension_attributes.len(), 1);
        assert_eq!(c.extension_attributes[0].value.as_deref(), Some("a, b"));
    }

    #[test]
    fn mobile_device_projection() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><mobile_device><general><id>42</id>\
            <display_name>Zoë’s iPad</display_name><device_name>x</device_name><name>x</name><asset_tag/>\
            <last_inventory_update>Monday, March 29 2021 at 12:44 PM</last_inventory_update>\
            <last_inventory_update_epoch>1617021852595</last_inventory_update_epoch>\
            <last_inventory_update_utc>2021-03-29T12:44:12.595+0000</last_inventory_update_utc>\
            <os_type>iOS</os_type><os_version>17.5</os_version><serial_number>DMP1</serial_number>\
            <udid>abc</udid><model>iPad Pro</model><managed>true</managed><supervised>false</supervised>\
            <new_field_from_a_future_release>1</new_field_from_a_future_release></general>\
            <location><username>zoe</username><email_address>z@example.com</email_address></location>\
            <extension_attributes><extension_attribute><id>3</id><name>Cart</name><type>String</type>\
            <multi_value>false</multi_value><value>B&amp;W</value></extension_attribute></extension_attributes>\
            </mobile_device>";
        let d = mobile_xml(xml, Utc::now()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.jamf_id, 42);
        assert_eq!(d.info.name.as_deref(), Some("Zoë’s iPad"));
        assert_eq!(d.info.managed, Some(true));
        assert_eq!(d.info.supervised, Some(false));
        assert_eq!(
            d.last_inventory_update.map(|t| t.timestamp_millis()),
            Some(1_617_021_852_595)
        );
        assert_eq!(d.info.email.as_deref(), Some("z@example.com"));
        assert_eq!(d.extension_attributes.len(), 1);
        assert_eq!(d.extension_attributes[0].value.as_deref(), Some("B&W"));
        let raw: serde_json::Value = serde_json::from_str(&d.raw).unwrap_or_default();
        assert_eq!(raw["general"]["new_field_from_a_future_release"], "1");
        assert_eq!(raw["extension_attributes"][0]["name"], "Cart");
    }

    #[test]
    fn classic_lists_become_child_rows() {
        let xml = "<mobile_device><general><id>8</id></general>\
            <certificates><size>1</size><certificate><common_name>MDM &amp; CA</common_name>\
            <identity>true</identity><expires_utc>2030-01-02T03:04:05.000+0000</expires_utc>\
            <expires_epoch>1893553445000</expires_epoch></certificate></certificates>\
            <configuration_profiles><size>1</size><configuration_profile>\
            <display_name>Wi-Fi</display_name><version>2</version>\
            <identifier>com.example.wifi</identifier><uuid>U-1</uuid>\
            </configuration_profile></configuration_profiles>\
            <applications><size>1</size><application><application_name>Old</application_name>\
            <application_version>12.1</application_version><identifier>com.x</identifier>\
            </application></applications></mobile_device>";
        let d = mobile_xml(xml, Utc::now()).unwrap_or_else(|e| panic!("{e}"));
        let rows = |name: &str| {
            d.children
                .iter()
                .find(|c| c.table.name == name)
                .map(|c| {
                    c.rows
                        .iter()
                        .map(|r| r.iter().map(Val::as_text).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            rows("mobile_device_certificates"),
            vec![vec![s("MDM & CA"), s("true"), s("2030-01-02T03:04:05Z")]]
        );
        assert_eq!(
            rows("mobile_device_configuration_profiles"),
            vec![vec![
                s("Wi-Fi"),
                s("com.example.wifi"),
                s("U-1"),
                s("2"),
                None,
                None
            ]]
        );
        // No short version: the build stands in for it.
        assert_eq!(
            rows("mobile_device_applications"),
            vec![vec![s("Old"), s("com.x"), s("12.1"), s("12.1"), s("12")]]
        );
        // No <mobile_device_groups>: that table is not touched.
        assert!(d
            .children
            .iter()
            .all(|c| c.table.name != "mobile_device_group_memberships"));
    }

    #[test]
    fn missing_optional_sections_are_fine() {
        let d = mobile_xml(
            "<mobile_device><general><id>5</id><last_inventory_update_epoch>0</last_inventory_update_epoch></general></mobile_device>",
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.jamf_id, 5);
        assert!(d.info.username.is_none());
        assert!(d.extension_attributes.is_empty());
    }

    #[test]
    fn truncated_and_garbage_mobile_records_are_errors() {
        // Documents that are not XML at all are the XML reader's tests; these are records.
        for bad in [
            "<mobile_device><general><id>1</id>",
            "<computer><general><id>1</id></general></computer>",
            "<mobile_device><general><name>no id</name></general></mobile_device>",
            "<mobile_device><general><id>x</id></general></mobile_device>",
        ] {
            assert!(mobile_xml(bad, Utc::now()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_input() {
        let seed = "<mobile_device><general><id>1</id><name>a &amp; b</name><asset_tag/></general>\
                    <applications><size>1</size><application><x>1</x></application></applications></mobile_device>";
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"<>/&;#x0123456789abcdefgh \"'=?!-[]CDATA\n\xc3\xa9";
        for _ in 0..20_000 {
            let mut bytes = seed.as_bytes().to_vec();
            match rng.u8(0..4) {
                0 => bytes.truncate(rng.usize(0..=bytes.len())),
                1 => {
                    for _ in 0..rng.usize(1..8) {
                        let i = rng.usize(0..bytes.len());
                        bytes[i] = alphabet[rng.usize(0..alphabet.len())];
                    }
                }
                2 => {
                    let i = rng.usize(0..bytes.len());
                    let junk: Vec<u8> = (0..rng.usize(1..30))
                        .map(|_| alphabet[rng.usize(0..alphabet.len())])
                        .collect();
                    bytes.splice(i..i, junk);
                }
                _ => {
                    bytes = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = mobile_xml(&text, Utc::now());
            let _ = super::super::classic::parse_search_results(&text);
            let _ = super::super::classic::parse_named_list(&text, "advanced_mobile_device_search");
        }
    }
}
