//! The Classic API (`/JSSResource`) as mobile-device sync needs it: advanced mobile device
//! searches and mobile device records, both XML, parsed with quick-xml.
//!
//! Invariants:
//! - parsing never panics, whatever the input; a malformed or truncated document is an error
//!   naming the problem;
//! - `raw` is a faithful JSON form of the whole record: elements become objects, text becomes
//!   strings exactly as sent (entities resolved), repeated elements and list containers (an
//!   element with a `<size>` child, or a known plural container) become arrays;
//! - `last_inventory_update_epoch` (ms) is the authoritative inventory time.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::models::{first_per_definition, hash_raw, EaValue, RecordError};

/// Containers that hold lists even when Jamf omits their `<size>` child.
const LIST_CONTAINERS: &[&str] = &[
    "applications",
    "certificates",
    "configuration_profiles",
    "provisioning_profiles",
    "mobile_device_groups",
    "extension_attributes",
    "ebooks",
    "mobile_devices",
    "display_fields",
    "advanced_mobile_device_searches",
];

/// An open element: its name, the children collected so far (name, value), and its text.
type Open = (String, Vec<(String, Value)>, String);

/// Converts an XML document into JSON; the root element's content becomes the result.
pub fn xml_to_json(xml: &str) -> Result<(String, Value), String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                let name = e.local_name().as_ref().to_string();
                let mut children = Vec::new();
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
                    let key = format!("@{}", attr.key.local_name().as_ref());
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| format!("bad attribute value: {e}"))?;
                    children.push((key, Value::String(value.into_owned())));
                }
                stack.push((name, children, String::new()));
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_string();
                let value = if LIST_CONTAINERS.contains(&name.as_str()) {
                    Value::Array(Vec::new())
                } else {
                    Value::String(String::new())
                };
                match stack.last_mut() {
                    Some((_, children, _)) => children.push((name, value)),
                    None if root.is_none() => root = Some((name, value)),
                    None => return Err("content after the root element".into()),
                }
            }
            Event::Text(t) => {
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| format!("bad character reference: {e}"))?
                        .map(String::from)
                } else {
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .map(String::from)
                };
                let resolved =
                    resolved.ok_or_else(|| format!("unknown entity &{};", r.xml10_content()))?;
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let Some((name, children, text)) = stack.pop() else {
                    return Err("unexpected closing tag".into());
                };
                let value = element_value(&name, children, text);
                match stack.last_mut() {
                    Some((_, siblings, _)) => siblings.push((name, value)),
                    None => root = Some((name, value)),
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some((name, _, _)) = stack.last() {
        return Err(format!("truncated document: <{name}> is not closed"));
    }
    root.ok_or_else(|| "empty document".to_string())
}

fn element_value(name: &str, children: Vec<(String, Value)>, text: String) -> Value {
    if children.is_empty() {
        if LIST_CONTAINERS.contains(&name) {
            return Value::Array(Vec::new());
        }
        return Value::String(text);
    }
    let is_list = LIST_CONTAINERS.contains(&name) || children.iter().any(|(n, _)| n == "size");
    if is_list {
        return Value::Array(
            children
                .into_iter()
                .filter(|(n, _)| n != "size" && !n.starts_with('@'))
                .map(|(_, v)| v)
                .collect(),
        );
    }
    let mut map = Map::new();
    // Keys seen more than once: their values are collected into an array, in order.
    let mut repeated: Vec<String> = Vec::new();
    for (key, value) in children {
        if repeated.contains(&key) {
            if let Some(Value::Array(items)) = map.get_mut(&key) {
                items.push(value);
            }
            continue;
        }
        match map.get_mut(&key) {
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
                repeated.push(key);
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Value::Object(map)
}

/// The part of `<mobile_device>` projected into columns (quick-xml serde).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileDeviceXml {
    pub general: GeneralXml,
    pub location: LocationXml,
    pub extension_attributes: ExtensionAttributesXml,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GeneralXml {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub device_name: Option<String>,
    pub name: Option<String>,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub os_type: Option<String>,
    pub os_version: Option<String>,
    pub managed: Option<String>,
    pub supervised: Option<String>,
    pub last_inventory_update_epoch: Option<String>,
    pub last_inventory_update_utc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LocationXml {
    pub username: Option<String>,
    pub email_address: Option<String>,
    pub department: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionAttributesXml {
    pub extension_attribute: Vec<ExtensionAttributeXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionAttributeXml {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub value: Option<String>,
}

/// A mobile device ready for the store.
#[derive(Debug, Clone)]
pub struct MobileDevice {
    pub jamf_id: i64,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub os_type: Option<String>,
    pub last_inventory_update: Option<DateTime<Utc>>,
    pub managed: Option<bool>,
    pub supervised: Option<bool>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub extension_attributes: Vec<EaValue>,
    /// JSON form of the whole record.
    pub raw: String,
    pub raw_hash: i64,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn parse_bool(v: Option<String>) -> Option<bool> {
    match v.as_deref().map(str::trim) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
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
    super::models::parse_jamf_time(s).or_else(|| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|n| n.and_utc())
    })
}

impl MobileDevice {
    /// Decodes one `<mobile_device>` XML record.
    pub fn from_xml(xml: &str) -> Result<MobileDevice, RecordError> {
        let (root, json) = xml_to_json(xml).map_err(|message| RecordError {
            id: sniff_xml_id(xml).unwrap_or_else(|| "?".into()),
            message,
        })?;
        if root != "mobile_device" {
            return Err(RecordError {
                id: "?".into(),
                message: format!("expected <mobile_device>, got <{root}>"),
            });
        }
        let typed: MobileDeviceXml = quick_xml::de::from_str(xml).map_err(|e| RecordError {
            id: sniff_xml_id(xml).unwrap_or_else(|| "?".into()),
            message: e.to_string(),
        })?;
        let g = typed.general;
        let id_text = g.id.clone().unwrap_or_default();
        let jamf_id: i64 = id_text.trim().parse().map_err(|_| RecordError {
            id: if id_text.is_empty() {
                "?".into()
            } else {
                id_text.clone()
            },
            message: "general/id is missing or not a number".into(),
        })?;
        // The epoch is authoritative; fall back to the UTC text only when it is absent.
        let last_inventory_update = match non_empty(g.last_inventory_update_epoch) {
            Some(ms) => Some(parse_classic_time(&ms).ok_or_else(|| RecordError {
                id: jamf_id.to_string(),
                message: format!("last_inventory_update_epoch {ms:?} is not a number"),
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
        let raw = json.to_string();
        Ok(MobileDevice {
            jamf_id,
            udid: non_empty(g.udid),
            serial_number: non_empty(g.serial_number),
            name: non_empty(g.display_name)
                .or(non_empty(g.name))
                .or(non_empty(g.device_name)),
            model: non_empty(g.model),
            os_version: non_empty(g.os_version),
            os_type: non_empty(g.os_type),
            last_inventory_update,
            managed: parse_bool(g.managed),
            supervised: parse_bool(g.supervised),
            username: non_empty(typed.location.username),
            email: non_empty(typed.location.email_address),
            extension_attributes,
            raw_hash: hash_raw(&raw),
            raw,
        })
    }
}

/// `/api/v2/mobile-devices/detail` record (Jamf Pro API), for the `pro-api` source.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProMobileDevice {
    mobile_device_id: String,
    device_type: Option<String>,
    general: Option<ProGeneral>,
    hardware: Option<ProHardware>,
    user_and_location: Option<ProUserAndLocation>,
    extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProGeneral {
    udid: Option<String>,
    display_name: Option<String>,
    os_version: Option<String>,
    last_inventory_update_date: Option<String>,
    managed: Option<bool>,
    supervised: Option<bool>,
    extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProHardware {
    serial_number: Option<String>,
    model: Option<String>,
    extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProUserAndLocation {
    username: Option<String>,
    email_address: Option<String>,
    extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Deserialize)]
struct ProExtensionAttribute {
    id: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    data_type: Option<String>,
    value: Option<Vec<String>>,
}

impl MobileDevice {
    /// Decodes one `/api/v2/mobile-devices/detail` record; fills the same columns as XML.
    pub fn from_pro_json(raw: &serde_json::value::RawValue) -> Result<MobileDevice, RecordError> {
        let text = raw.get();
        let rec: ProMobileDevice = serde_json::from_str(text).map_err(|e| RecordError {
            id: "?".into(),
            message: e.to_string(),
        })?;
        let jamf_id: i64 = rec
            .mobile_device_id
            .trim()
            .parse()
            .map_err(|_| RecordError {
                id: rec.mobile_device_id.clone(),
                message: "mobileDeviceId is not a number".into(),
            })?;
        let general = rec.general.unwrap_or_default();
        let hardware = rec.hardware.unwrap_or_default();
        let user = rec.user_and_location.unwrap_or_default();
        let last_inventory_update = match non_empty(general.last_inventory_update_date) {
            Some(s) => Some(parse_classic_time(&s).ok_or_else(|| RecordError {
                id: jamf_id.to_string(),
                message: format!("lastInventoryUpdateDate {s:?} is not a timestamp"),
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
        Ok(MobileDevice {
            jamf_id,
            udid: non_empty(general.udid),
            serial_number: non_empty(hardware.serial_number),
            name: non_empty(general.display_name),
            model: non_empty(hardware.model),
            os_version: non_empty(general.os_version),
            os_type: non_empty(rec.device_type),
            last_inventory_update,
            managed: general.managed,
            supervised: general.supervised,
            username: non_empty(user.username),
            email: non_empty(user.email_address),
            extension_attributes,
            raw_hash: hash_raw(text),
            raw: text.to_string(),
        })
    }
}

fn sniff_xml_id(xml: &str) -> Option<String> {
    let start = xml.find("<id>")? + 4;
    let end = xml[start..].find("</id>")? + start;
    let id = xml[start..end].trim();
    (!id.is_empty() && id.len() < 20).then(|| id.to_string())
}

/// One row of an evaluated advanced search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: i64,
    /// The "Last Inventory Update" display field, when it parsed.
    pub last_inventory_update: Option<DateTime<Utc>>,
}

/// Reads the device list of an evaluated advanced mobile device search.
pub fn parse_search_results(xml: &str) -> Result<Vec<SearchHit>, String> {
    let (root, json) = xml_to_json(xml)?;
    if root != "advanced_mobile_device_search" {
        return Err(format!(
            "expected <advanced_mobile_device_search>, got <{root}>"
        ));
    }
    let devices = match json.get("mobile_devices") {
        Some(Value::Array(d)) => d.clone(),
        Some(_) | None => Vec::new(),
    };
    let mut hits = Vec::with_capacity(devices.len());
    for d in devices {
        let Some(id) = d
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse().ok())
        else {
            return Err("a listed device has no numeric <id>".into());
        };
        // Jamf turns the display name's spaces into underscores, not always consistently.
        let liu = d
            .as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("last_inventory_update"))
                    .map(|(_, v)| v)
            })
            .and_then(Value::as_str)
            .and_then(parse_classic_time);
        hits.push(SearchHit {
            id,
            last_inventory_update: liu,
        });
    }
    Ok(hits)
}

/// Ids of `GET /JSSResource/mobiledevices` (`<mobile_devices><size>…<mobile_device><id>…`).
pub fn parse_device_list(xml: &str) -> Result<Vec<i64>, String> {
    let (root, json) = xml_to_json(xml)?;
    if root != "mobile_devices" {
        return Err(format!("expected <mobile_devices>, got <{root}>"));
    }
    let Value::Array(items) = json else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|d| {
            d.get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| "a listed mobile device has no numeric <id>".to_string())
        })
        .collect()
}

/// `(id, name)` of every `<item>` in a Classic list, e.g. `advanced_mobile_device_search` (the
/// list does not evaluate searches) or `webhook`.
pub fn parse_named_list(xml: &str, item: &str) -> Result<Vec<(i64, String)>, String> {
    let (_, json) = xml_to_json(xml)?;
    let items = match json {
        Value::Array(items) => items,
        Value::Object(map) => map
            .into_iter()
            .find(|(k, _)| k == item)
            .map(|(_, v)| match v {
                Value::Array(a) => a,
                other => vec![other],
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.trim().parse().ok()?;
            let name = item.get("name")?.as_str()?.to_string();
            Some((id, name))
        })
        .collect())
}

/// The id in a create/update answer: `<advanced_mobile_device_search><id>123</id>…`.
pub fn parse_created_id(xml: &str) -> Result<i64, String> {
    let (_, json) = xml_to_json(xml)?;
    json.get("id")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "no <id> in the answer".to_string())
}

/// Whole days for `Last Inventory Update` `less than x days ago` covering everything since
/// `since`: rounded up, plus one day because Jamf may evaluate by calendar day in the server's
/// time zone. Devices older than `since` are dropped again on our side.
pub fn search_window_days(now: DateTime<Utc>, since: DateTime<Utc>) -> u32 {
    let secs = (now - since).num_seconds().max(0);
    let days = (secs + 86_399) / 86_400;
    (days.max(1) + 1).min(i64::from(u32::MAX)) as u32
}

/// The advanced search definition jamf-sync owns: one optional date criterion, and the
/// display fields the sync reads.
pub fn search_xml(name: &str, window_days: Option<u32>) -> String {
    let name = quick_xml::escape::escape(name);
    let criteria = match window_days {
        Some(days) => format!(
            "<criteria><size>1</size><criterion><name>Last Inventory Update</name>\
             <priority>0</priority><and_or>and</and_or><search_type>less than x days ago</search_type>\
             <value>{days}</value><opening_paren>false</opening_paren>\
             <closing_paren>false</closing_paren></criterion></criteria>"
        ),
        None => "<criteria><size>0</size></criteria>".to_string(),
    };
    format!(
        "<advanced_mobile_device_search><name>{name}</name>{criteria}\
         <display_fields><size>2</size><display_field><name>Last Inventory Update</name></display_field>\
         <display_field><name>UDID</name></display_field></display_fields>\
         </advanced_mobile_device_search>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn window_days_at_boundaries() {
        let now = t("2026-11-24T00:00:00Z");
        // Anything within the last day: 1 day, +1 for calendar-day evaluation.
        assert_eq!(search_window_days(now, now), 2);
        assert_eq!(search_window_days(now, t("2026-11-23T23:59:59Z")), 2);
        assert_eq!(search_window_days(now, t("2026-11-23T00:00:00Z")), 2);
        // One second past a whole day rounds up.
        assert_eq!(search_window_days(now, t("2026-11-22T23:59:59Z")), 3);
        assert_eq!(search_window_days(now, t("2026-11-17T00:00:00Z")), 8);
        // A cursor in the future (clock skew) still asks for at least a day.
        assert_eq!(search_window_days(now, t("2026-11-25T00:00:00Z")), 2);
    }

    #[test]
    fn xml_to_json_lists_and_entities() {
        let xml = "<mobile_device><general><id>7</id><name>Ana &amp; Bo&#39;s &lt;iPad&gt;</name><asset_tag/></general>\
                   <applications><size>1</size><application><application_name>Mail</application_name></application></applications>\
                   <certificates><size>0</size></certificates><extension_attributes/></mobile_device>";
        let (root, v) = xml_to_json(xml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(root, "mobile_device");
        assert_eq!(v["general"]["name"], "Ana & Bo's <iPad>");
        assert_eq!(v["general"]["asset_tag"], "");
        assert_eq!(v["applications"][0]["application_name"], "Mail");
        assert_eq!(v["certificates"], Value::Array(vec![]));
        assert_eq!(v["extension_attributes"], Value::Array(vec![]));
    }

    #[test]
    fn repeated_elements_become_arrays() {
        let (_, v) = xml_to_json("<a><b>1</b><b>2</b><b>3</b><c>x</c></a>").unwrap_or_default();
        assert_eq!(v["b"], serde_json::json!(["1", "2", "3"]));
        assert_eq!(v["c"], "x");
    }

    #[test]
    fn truncated_and_garbage_documents_are_errors() {
        for bad in [
            "<mobile_device><general><id>1</id>",
            "<mobile_device><general><id>1</general></mobile_device>",
            "",
            "not xml at all",
            "<a>&bogus;</a>",
            "<a></a><b></b>",
        ] {
            assert!(
                xml_to_json(bad).is_err() || MobileDevice::from_xml(bad).is_err(),
                "{bad:?}"
            );
            assert!(MobileDevice::from_xml(bad).is_err(), "{bad:?}");
        }
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
        let d = MobileDevice::from_xml(xml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.jamf_id, 42);
        assert_eq!(d.name.as_deref(), Some("Zoë’s iPad"));
        assert_eq!(d.managed, Some(true));
        assert_eq!(d.supervised, Some(false));
        assert_eq!(
            d.last_inventory_update.map(|t| t.timestamp_millis()),
            Some(1_617_021_852_595)
        );
        assert_eq!(d.email.as_deref(), Some("z@example.com"));
        assert_eq!(d.extension_attributes.len(), 1);
        assert_eq!(d.extension_attributes[0].value.as_deref(), Some("B&W"));
        let raw: Value = serde_json::from_str(&d.raw).unwrap_or_default();
        assert_eq!(raw["general"]["new_field_from_a_future_release"], "1");
        assert_eq!(raw["extension_attributes"][0]["name"], "Cart");
    }

    #[test]
    fn missing_optional_sections_are_fine() {
        let d = MobileDevice::from_xml(
            "<mobile_device><general><id>5</id><last_inventory_update_epoch>0</last_inventory_update_epoch></general></mobile_device>",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.jamf_id, 5);
        assert!(d.username.is_none());
        assert!(d.extension_attributes.is_empty());
    }

    #[test]
    fn search_results_and_list() {
        let xml = "<advanced_mobile_device_search><id>3</id><name>n</name><mobile_devices><size>2</size>\
                   <mobile_device><id>1</id><name>a</name><udid>u</udid><Last_Inventory_Update>2026-11-20 10:00:00</Last_Inventory_Update></mobile_device>\
                   <mobile_device><id>2</id><name>b</name><Last_Inventory_Update>gibberish</Last_Inventory_Update></mobile_device>\
                   </mobile_devices></advanced_mobile_device_search>";
        let hits = parse_search_results(xml).unwrap_or_default();
        assert_eq!(hits.len(), 2);
        assert_eq!(
            hits[0].last_inventory_update,
            Some(t("2026-11-20T10:00:00Z"))
        );
        assert_eq!(hits[1].last_inventory_update, None);
        let list = "<advanced_mobile_device_searches><size>2</size><advanced_mobile_device_search><id>1</id><name>x</name></advanced_mobile_device_search>\
                    <advanced_mobile_device_search><id>9</id><name>jamf-sync: a &amp; b</name></advanced_mobile_device_search></advanced_mobile_device_searches>";
        assert_eq!(
            parse_named_list(list, "advanced_mobile_device_search").unwrap_or_default(),
            vec![(1, "x".to_string()), (9, "jamf-sync: a & b".to_string())]
        );
        assert_eq!(
            parse_created_id(
                "<advanced_mobile_device_search><id>123</id></advanced_mobile_device_search>"
            ),
            Ok(123)
        );
    }

    #[test]
    fn parser_never_panics_on_arbitrary_input() {
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
            let _ = MobileDevice::from_xml(&text);
            let _ = parse_search_results(&text);
            let _ = parse_named_list(&text, "advanced_mobile_device_search");
        }
    }
}
