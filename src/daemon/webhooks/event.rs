//! Jamf's webhook envelopes, JSON or `<JSSEvent>` XML, read into what the queue needs: which
//! device (kind and Jamf id), what to do with it, and when Jamf says it happened.
//!
//! Invariants: parsing is pure and never panics on any input; an envelope without a
//! `webhook.webhookEvent` name, or an inventory event without a positive `jssID`, is malformed;
//! a well-formed event of a type we do not act on is [`Parsed::Other`], not an error; nesting
//! is bounded (XML by the reader's depth limit, JSON by serde_json's recursion limit); any
//! text taken from the body into a name or an error is [`shown`] (control characters escaped,
//! length bounded), so a hostile body cannot forge log lines.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{Kind, WebhookAction, INVENTORY_EVENTS};
use crate::jamf::xml::xml_to_json;

/// One inventory event for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    /// Canonical name from [`INVENTORY_EVENTS`], whatever capitalisation Jamf sent.
    pub event: &'static str,
    pub kind: Kind,
    pub action: WebhookAction,
    pub jamf_id: i64,
    /// `webhook.eventTimestamp` (epoch milliseconds), when present.
    pub event_at: Option<DateTime<Utc>>,
}

/// What an envelope holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Device(DeviceEvent),
    /// A well-formed event jamf-sync does not act on (acknowledged and counted).
    Other {
        name: String,
    },
}

/// Reads an envelope; XML when the content type says so or the body starts with `<`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if trimmed.is_empty() {
        return Err("empty body".into());
    }
    let xml = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("xml"))
        || trimmed.starts_with('<');
    let doc = if xml {
        let (root, value) = xml_to_json(trimmed)?;
        if !root.eq_ignore_ascii_case("JSSEvent") {
            return Err(format!(
                "XML root is <{}>, expected <JSSEvent>",
                shown(&root)
            ));
        }
        value
    } else {
        serde_json::from_str::<Value>(trimmed).map_err(|e| format!("invalid JSON: {e}"))?
    };
    from_document(&doc)
}

fn from_document(doc: &Value) -> Result<Parsed, String> {
    let webhook = doc
        .get("webhook")
        .filter(|w| w.is_object())
        .ok_or("no `webhook` object in the envelope")?;
    let name = webhook
        .get("webhookEvent")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or("no `webhook.webhookEvent` name")?;
    let Some((canonical, kind, action)) = INVENTORY_EVENTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .copied()
    else {
        return Ok(Parsed::Other { name: shown(name) });
    };
    let event = doc
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| format!("{canonical} without an `event` object"))?;
    // ComputerCheckIn nests its device under `event.computer`; accept the nesting on any event.
    let nested = ["computer", "mobileDevice", "mobile_device"]
        .iter()
        .find_map(|k| event.get(*k).filter(|d| d.get("jssID").is_some()));
    let device = match event.get("jssID") {
        Some(_) => event,
        None => nested.unwrap_or(event),
    };
    let jamf_id = device
        .get("jssID")
        .and_then(positive_id)
        .ok_or_else(|| format!("{canonical} without a positive `jssID`"))?;
    let event_at = webhook
        .get("eventTimestamp")
        .and_then(number)
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    Ok(Parsed::Device(DeviceEvent {
        event: canonical,
        kind,
        action,
        jamf_id,
        event_at,
    }))
}

/// Text from a request as it may appear in a log line or an answer: control characters
/// (newlines above all) escaped, at most 100 characters.
pub fn shown(s: &str) -> String {
    crate::domain::text::shown(s, 100)
}

/// An integer given as a JSON number or (XML, some proxies) a string.
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn positive_id(v: &Value) -> Option<i64> {
    number(v).filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::canonical;

    #[test]
    fn text_from_the_body_cannot_forge_log_lines() {
        let body =
            br#"{"webhook": {"webhookEvent": "Foo\nINFO forged line"}, "event": {"jssID": 1}}"#;
        match parse(body, None) {
            Ok(Parsed::Other { name }) => {
                assert!(!name.contains('\n'), "{name:?}");
                assert!(name.contains("forged"), "{name:?}");
            }
            other => panic!("{other:?}"),
        }
        let long = format!(
            r#"{{"webhook": {{"webhookEvent": "{}"}}}}"#,
            "x".repeat(10_000)
        );
        match parse(long.as_bytes(), None) {
            Ok(Parsed::Other { name }) => assert!(name.chars().count() <= 101),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deeply_nested_envelopes_are_refused_without_overflowing_the_stack() {
        let n = 20_000;
        let xml = format!("{}{}", "<JSSEvent>".repeat(n), "</JSSEvent>".repeat(n));
        assert!(parse(xml.as_bytes(), Some("text/xml")).is_err());
        let json = format!(
            r#"{{"webhook": {}{}}}"#,
            "{\"a\": ".repeat(n),
            "}".repeat(n)
        );
        assert!(parse(json.as_bytes(), None).is_err());
    }

    /// A Jamf-shaped JSON envelope (fields as in Jamf's webhook documentation).
    fn json_envelope(name: &str, event: &str) -> String {
        format!(
            r#"{{"event": {event}, "webhook": {{"eventTimestamp": 1553550275590, "id": 7,
                "name": "jamf-sync {name}", "webhookEvent": "{name}"}}}}"#
        )
    }

    const COMPUTER: &str = r#"{"alternateMacAddress": "72:00:01:DD:A0:B9", "building": "Block D",
        "department": "Information Technology", "deviceName": "John's MacBook Pro",
        "emailAddress": "john.smith@company.com", "ipAddress": "10.1.1.1", "jssID": 13,
        "macAddress": "60:03:08:A3:64:9D", "model": "13-inch Retina MacBook Pro (Late 2013)",
        "osBuild": "16G29", "osVersion": "10.12.6", "phone": "555-472-9829",
        "position": "Desktop Services Specialist", "realName": "John Smith",
        "reportedIpAddress": "10.1.1.1", "room": "487", "serialNumber": "C02M23PJFH50",
        "udid": "EBBFF74D-C6B7-5599-93A9-19E8BDDEFE32", "userDirectoryID": "-1",
        "username": "john.smith", "managementId": "5f2e1f0c-3a3a-4b5b-9c9c-1d1d1d1d1d1d"}"#;

    const MOBILE: &str = r#"{"bluetoothMacAddress": "58:40:4E:DD:AA:01", "deviceName": "Zoë’s iPad",
        "icciID": "", "imei": "35 445506 652132 5", "ipAddress": "10.1.1.2", "jssID": 42,
        "model": "iPad 7th Generation (Wi-Fi)", "modelDisplay": "iPad", "osBuild": "17E262",
        "osVersion": "13.4.1", "product": null, "room": "", "serialNumber": "DMPXK1ABCD12",
        "udid": "a0b1c2d3e4f5a0b1c2d3e4f5a0b1c2d3e4f5a0b1", "userDirectoryID": "-1",
        "username": "zoe", "version": "13.4.1", "wifiMacAddress": "58:40:4E:DD:AA:02"}"#;

    fn device(p: Result<Parsed, String>) -> DeviceEvent {
        match p {
            Ok(Parsed::Device(d)) => d,
            other => panic!("expected a device event, got {other:?}"),
        }
    }

    #[test]
    fn every_inventory_event_parses_from_json() {
        for (name, kind, action) in INVENTORY_EVENTS {
            let body = if *name == "ComputerCheckIn" {
                json_envelope(
                    name,
                    &format!(
                        r#"{{"computer": {COMPUTER}, "trigger": "CHECKIN", "username": "john.smith"}}"#
                    ),
                )
            } else if *kind == Kind::Computers {
                json_envelope(name, COMPUTER)
            } else {
                json_envelope(name, MOBILE)
            };
            let d = device(parse(body.as_bytes(), Some("application/json")));
            assert_eq!(d.event, *name);
            assert_eq!(d.kind, *kind);
            assert_eq!(d.action, *action);
            assert_eq!(d.jamf_id, if *kind == Kind::Computers { 13 } else { 42 });
            assert_eq!(
                d.event_at.map(|t| t.timestamp_millis()),
                Some(1553550275590)
            );
        }
    }

    #[test]
    fn every_inventory_event_parses_from_xml() {
        for (name, kind, action) in INVENTORY_EVENTS {
            let device_xml = if *kind == Kind::Computers {
                "<udid>EBBFF74D-C6B7-5599-93A9-19E8BDDEFE32</udid><deviceName>John&apos;s MacBook Pro</deviceName>\
                 <serialNumber>C02M23PJFH50</serialNumber><jssID>13</jssID><username>john.smith</username>"
            } else {
                "<udid>a0b1c2d3</udid><deviceName>Zoë’s iPad &amp; &lt;Cart 5&gt;</deviceName>\
                 <jssID>42</jssID><osVersion>13.4.1</osVersion>"
            };
            let event = if *name == "ComputerCheckIn" {
                format!("<computer>{device_xml}</computer><trigger>CHECKIN</trigger><username/>")
            } else {
                device_xml.to_string()
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<JSSEvent><webhook><id>7</id>\
                 <name>jamf-sync</name><webhookEvent>{name}</webhookEvent>\
                 <eventTimestamp>1553550275590</eventTimestamp></webhook><event>{event}</event></JSSEvent>"
            );
            // Without a content type too: the body's first character tells.
            for ct in [Some("text/xml; charset=UTF-8"), None] {
                let d = device(parse(body.as_bytes(), ct));
                assert_eq!((d.event, d.kind, d.action), (*name, *kind, *action));
                assert_eq!(d.jamf_id, if *kind == Kind::Computers { 13 } else { 42 });
                assert_eq!(
                    d.event_at.map(|t| t.timestamp_millis()),
                    Some(1553550275590)
                );
            }
        }
    }

    #[test]
    fn any_capitalisation_is_accepted() {
        for name in [
            "computercheckin",
            "ComputerCheckin",
            "COMPUTERINVENTORYCOMPLETED",
            "mobileDeviceUnenrolled",
        ] {
            let body = json_envelope(name, r#"{"jssID": "5"}"#);
            let d = device(parse(body.as_bytes(), None));
            assert_eq!(Some(d.event), canonical(name));
            assert_eq!(d.jamf_id, 5);
        }
    }

    #[test]
    fn other_events_are_acknowledged_not_errors() {
        for name in [
            "ComputerPolicyFinished",
            "RestAPIOperation",
            "SmartGroupComputerMembershipChange",
        ] {
            let body = json_envelope(name, r#"{"whatever": true}"#);
            assert_eq!(
                parse(body.as_bytes(), None),
                Ok(Parsed::Other { name: name.into() })
            );
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"{",
            b"not json",
            b"\xff\xfe\x00",
            b"[]",
            br#"{"event": {"jssID": 1}}"#,
            br#"{"webhook": {"id": 1}, "event": {"jssID": 1}}"#,
            br#"{"webhook": {"webhookEvent": "ComputerAdded"}}"#,
            br#"{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"udid": "x"}}"#,
            br#"{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": 0}}"#,
            br#"{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": "abc"}}"#,
            br#"{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": -3}}"#,
            b"<JSSEvent><webhook><webhookEvent>ComputerAdded</webhookEvent></webhook>",
            b"<Other><webhook><webhookEvent>ComputerAdded</webhookEvent></webhook><event><jssID>1</jssID></event></Other>",
        ];
        for body in cases {
            assert!(
                parse(body, None).is_err(),
                "{:?} should be malformed",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let seed = json_envelope("ComputerAdded", COMPUTER).into_bytes();
        for i in 0..5000 {
            let mut body = seed.clone();
            if i % 2 == 0 {
                body.truncate(rng.usize(..body.len()));
            } else {
                for _ in 0..rng.usize(1..8) {
                    let at = rng.usize(..body.len());
                    body[at] = rng.u8(..);
                }
            }
            let _ = parse(&body, None);
        }
    }
}
