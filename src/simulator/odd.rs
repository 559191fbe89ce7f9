//! Odd records, as real fleets have them (test-only knob `Simulator::set_odd`): the values a
//! device reports that no schema foresees (a lone UTF-16 surrogate, an application version
//! of 4,000 characters from an Info.plist, a NUL in an extension attribute's value).
//!
//! A lone surrogate cannot live in a Rust string, so it is written as [`LONE_SURROGATE`] in
//! the record and becomes the JSON escape `\ud800` when the answer is serialised
//! ([`json_text`]): the bytes a Java server sends for such a string.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Stands for a lone surrogate inside a record until it is serialised.
pub const LONE_SURROGATE: char = '\u{F8FF}';

/// One way a record can be odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Oddity {
    /// A lone surrogate in a field jamf-sync does not read (computers: `general.assetTag`).
    SurrogateUnread,
    /// A lone surrogate in a stored field (the device's name).
    SurrogateInName,
    /// The first application's version is 4,000 characters.
    LongAppVersion,
    /// The first application's name is 3,000 characters.
    LongAppName,
    /// A NUL character in an extension attribute's value.
    NulInEaValue,
    /// An extension attribute whose name is 3,000 characters (computers: one more attribute).
    LongEaName,
    /// A serial number of 3,000 characters.
    LongSerial,
    /// Control characters (NUL, U+0001, a newline) in the device name.
    ControlInName,
    /// The first application's name holds what a bulk load's text format escapes: a tab, a
    /// newline, a carriage return (JSON only: XML reads it as a newline), backslashes, the
    /// text `\N` and a NUL ([`APP_NAME_ESCAPES`]).
    EscapesInAppName,
}

/// The application name of [`Oddity::EscapesInAppName`] in a JSON record.
pub const APP_NAME_ESCAPES: &str = "Tab\there new\nline cr\r back\\slash \\N not null \u{0}end";

/// The same in a Classic XML record.
pub const APP_NAME_ESCAPES_XML: &str = "Tab\there new\nline back\\slash \\N not null \u{0}end";

impl Oddity {
    pub const ALL: [Oddity; 9] = [
        Oddity::SurrogateUnread,
        Oddity::SurrogateInName,
        Oddity::LongAppVersion,
        Oddity::LongAppName,
        Oddity::NulInEaValue,
        Oddity::LongEaName,
        Oddity::LongSerial,
        Oddity::ControlInName,
        Oddity::EscapesInAppName,
    ];
}

/// `n` characters that do not compress (an index entry PostgreSQL cannot shrink below its
/// limit), the same for the same `seed`.
pub fn incompressible(n: usize, seed: u64) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| char::from(CHARS[rng.usize(..CHARS.len())]))
        .collect()
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut at = v;
    for key in &path[..path.len() - 1] {
        match at.get_mut(*key) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(o) = at.as_object_mut() {
        o.insert(path[path.len() - 1].to_string(), value);
    }
}

/// Makes a rendered `computers-inventory` record odd; a section the answer does not carry is
/// left alone.
pub fn computer(odd: Oddity, id: i64, v: &mut Value) {
    let seed = id as u64;
    match odd {
        Oddity::SurrogateUnread => set(
            v,
            &["general", "assetTag"],
            json!(format!("A{LONE_SURROGATE}{id}")),
        ),
        Oddity::SurrogateInName => {
            if let Some(name) = v.pointer("/general/name").and_then(Value::as_str) {
                let odd = format!("{name}{LONE_SURROGATE}");
                set(v, &["general", "name"], json!(odd));
            }
        }
        Oddity::LongAppVersion => {
            if let Some(app) = v.pointer_mut("/applications/0") {
                set(app, &["version"], json!(incompressible(4000, seed)));
            }
        }
        Oddity::LongAppName => {
            if let Some(app) = v.pointer_mut("/applications/0") {
                set(app, &["name"], json!(incompressible(3000, seed)));
            }
        }
        Oddity::EscapesInAppName => {
            if let Some(app) = v.pointer_mut("/applications/0") {
                set(app, &["name"], json!(APP_NAME_ESCAPES));
            }
        }
        Oddity::NulInEaValue => {
            if let Some(ea) = v.pointer_mut("/extensionAttributes/0") {
                set(ea, &["values"], json!(["before\u{0}after"]));
            }
        }
        Oddity::LongEaName => {
            if let Some(list) = v
                .get_mut("extensionAttributes")
                .and_then(Value::as_array_mut)
            {
                list.push(json!({
                    "definitionId": "9001",
                    "name": incompressible(3000, seed),
                    "description": null,
                    "enabled": true,
                    "multiValue": false,
                    "values": ["odd"],
                    "dataType": "STRING",
                    "options": [],
                    "inputType": "TEXT"
                }));
            }
        }
        Oddity::LongSerial => set(
            v,
            &["hardware", "serialNumber"],
            json!(incompressible(3000, seed)),
        ),
        Oddity::ControlInName => {
            if let Some(name) = v.pointer("/general/name").and_then(Value::as_str) {
                let odd = format!("{name}\u{0}\u{1}\nINFO forged");
                set(v, &["general", "name"], json!(odd));
            }
        }
    }
}

/// Makes a Classic `<mobile_device>` document odd, as a Java XML writer would send it: text
/// escaped for `<`, `&` and `>` only, control characters as they are.
pub fn mobile_xml(odd: Oddity, id: i64, xml: &mut String) {
    let seed = id as u64;
    let replace_text = |xml: &mut String, tag: &str, f: &dyn Fn(&str) -> String| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let Some(start) = xml.find(&open).map(|i| i + open.len()) else {
            return;
        };
        let Some(len) = xml[start..].find(&close) else {
            return;
        };
        let new = f(&xml[start..start + len]);
        xml.replace_range(start..start + len, &new);
    };
    match odd {
        // XML has no lone surrogates; the nearest a device gets is a character the server
        // replaced when it could not encode it, and unread fields carry the rest.
        Oddity::SurrogateUnread | Oddity::SurrogateInName => {
            replace_text(xml, "asset_tag", &|_| "A\u{FFFD}".into());
            if !xml.contains("<asset_tag>") {
                *xml = xml.replacen("<asset_tag/>", "<asset_tag>A\u{FFFD}</asset_tag>", 1);
            }
        }
        Oddity::LongAppVersion => {
            replace_text(xml, "application_version", &|_| incompressible(4000, seed))
        }
        Oddity::LongAppName => {
            replace_text(xml, "application_name", &|_| incompressible(3000, seed))
        }
        Oddity::EscapesInAppName => {
            replace_text(xml, "application_name", &|_| APP_NAME_ESCAPES_XML.into())
        }
        Oddity::NulInEaValue => replace_text(xml, "value", &|v| format!("{v}\u{0}after")),
        Oddity::LongEaName => replace_text(xml, "extension_attribute", &|ea| {
            ea.replacen(
                "<name>Cart</name>",
                &format!("<name>{}</name>", incompressible(3000, seed)),
                1,
            )
        }),
        Oddity::LongSerial => replace_text(xml, "serial_number", &|_| incompressible(3000, seed)),
        Oddity::ControlInName => replace_text(xml, "display_name", &|n| {
            format!("{n}\u{0}\u{1}\nINFO forged")
        }),
    }
}

/// A JSON answer's text, with each [`LONE_SURROGATE`] written as the escape `\ud800`.
pub fn json_text(v: &Value) -> String {
    let text = v.to_string();
    if text.contains(LONE_SURROGATE) {
        text.replace(LONE_SURROGATE, "\\ud800")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_surrogate_is_served_as_its_escape() {
        let mut v = json!({"general": {"assetTag": "x", "name": "Mac"}});
        computer(Oddity::SurrogateUnread, 7, &mut v);
        computer(Oddity::SurrogateInName, 7, &mut v);
        let text = json_text(&v);
        assert!(text.contains(r#""assetTag":"A\ud8007""#), "{text}");
        assert!(text.contains(r#""name":"Mac\ud800""#), "{text}");
        // serde_json refuses it when it reads the field: what a client must cope with.
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    #[test]
    fn long_values_do_not_repeat() {
        let s = incompressible(4000, 3);
        assert_eq!(s.chars().count(), 4000);
        assert_ne!(&s[..100], &s[100..200]);
        assert_eq!(s, incompressible(4000, 3));
    }

    #[test]
    fn mobile_oddities_change_the_document() {
        let doc = "<mobile_device><general><display_name>iPad</display_name><asset_tag/>\
                   <serial_number>S1</serial_number></general><applications><application>\
                   <application_name>A</application_name><application_version>1\
                   </application_version></application></applications><extension_attributes>\
                   <extension_attribute><id>1</id><name>Cart</name><value>v</value>\
                   </extension_attribute></extension_attributes></mobile_device>";
        for odd in Oddity::ALL {
            let mut xml = doc.to_string();
            mobile_xml(odd, 1, &mut xml);
            assert_ne!(xml, doc, "{odd:?}");
        }
    }
}
