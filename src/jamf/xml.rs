//! XML to JSON, the one way jamf-sync reads XML from outside (Classic API answers, webhook
//! envelopes).
//!
//! Invariants:
//! - parsing never panics, whatever the input; a malformed or truncated document is an error
//!   naming the problem;
//! - nesting is bounded ([`MAX_DEPTH`]): a hostile document cannot make the result (or its
//!   drop) recurse deep enough to overflow the stack;
//! - elements become objects, text becomes strings exactly as sent (entities resolved),
//!   repeated elements and list containers (an element with a `<size>` child, or a known
//!   plural container) become arrays.

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

/// Deepest element nesting accepted. Jamf's records nest five or six levels.
pub const MAX_DEPTH: usize = 64;

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
        let event = next_event(&mut reader)?;
        match event {
            Event::Start(e) => {
                may_open(root.is_some(), stack.len())?;
                let name = e.local_name().as_ref().to_string();
                let mut children = Vec::new();
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| format!("bad attribute: {}", outside(e)))?;
                    let key = format!("@{}", attr.key.local_name().as_ref());
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| format!("bad attribute value: {}", outside(e)))?;
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
            other => {
                if let Some((_, _, text)) = stack.last_mut() {
                    append_text(&other, text)?;
                } else {
                    append_text(&other, &mut String::new())?;
                }
            }
        }
    }
    if let Some((name, _, _)) = stack.last() {
        return Err(format!(
            "truncated document: <{}> is not closed",
            outside(name)
        ));
    }
    root.ok_or_else(|| "empty document".to_string())
}

/// Text of the document inside an error: errors end up in log lines, so a name with a
/// newline must not start one of its own.
fn outside(text: impl std::fmt::Display) -> String {
    crate::domain::text::shown(&text.to_string(), 200)
}

fn next_event<'a>(reader: &mut Reader<&'a [u8]>) -> Result<Event<'a>, String> {
    reader.read_event().map_err(|e| {
        format!(
            "XML error at byte {}: {}",
            reader.buffer_position(),
            outside(e)
        )
    })
}

/// Whether an element may open here: one root only, and no deeper than [`MAX_DEPTH`].
fn may_open(root_closed: bool, depth: usize) -> Result<(), String> {
    if root_closed {
        return Err("content after the root element".into());
    }
    if depth >= MAX_DEPTH {
        return Err(format!("elements nested deeper than {MAX_DEPTH}"));
    }
    Ok(())
}

/// Appends what a text, CDATA or entity event stands for; other events add nothing.
fn append_text(event: &Event<'_>, text: &mut String) -> Result<(), String> {
    match event {
        Event::Text(t) => text.push_str(&t.xml10_content()),
        Event::CData(t) => text.push_str(t),
        Event::GeneralRef(r) => {
            let resolved = if r.is_char_ref() {
                r.resolve_char_ref()
                    .map_err(|e| format!("bad character reference: {}", outside(e)))?
                    .map(String::from)
            } else {
                quick_xml::escape::resolve_predefined_entity(&r.xml10_content()).map(String::from)
            };
            let resolved = resolved
                .ok_or_else(|| format!("unknown entity &{};", outside(r.xml10_content())))?;
            text.push_str(&resolved);
        }
        _ => {}
    }
    Ok(())
}

/// Streams a document's elements to `visit` as each closes: the names of its ancestors (root
/// first), its own name and its text. Memory is that of the deepest open path, not of the
/// document (a search listing 100,000 devices is never held as a tree); nesting is bounded as
/// in [`xml_to_json`]. Returns the root element's name.
pub fn walk(
    xml: &str,
    mut visit: impl FnMut(&[String], &str, &str) -> Result<(), String>,
) -> Result<String, String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut root: Option<String> = None;
    loop {
        let event = next_event(&mut reader)?;
        match event {
            Event::Start(e) => {
                may_open(root.is_some(), path.len())?;
                path.push(e.local_name().as_ref().to_string());
                texts.push(String::new());
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_string();
                if path.is_empty() {
                    if root.is_some() {
                        return Err("content after the root element".into());
                    }
                    root = Some(name.clone());
                }
                visit(&path, &name, "")?;
            }
            Event::End(_) => {
                let name = path.pop().ok_or("unexpected closing tag")?;
                let text = texts.pop().unwrap_or_default();
                visit(&path, &name, &text)?;
                if path.is_empty() {
                    root = Some(name);
                }
            }
            Event::Eof => break,
            other => match texts.last_mut() {
                Some(text) => append_text(&other, text)?,
                None => append_text(&other, &mut String::new())?,
            },
        }
    }
    if let Some(name) = path.last() {
        return Err(format!(
            "truncated document: <{}> is not closed",
            outside(name)
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_entities() {
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
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert!(xml_to_json(&deep(MAX_DEPTH)).is_ok());
        let e = xml_to_json(&deep(20_000)).err().unwrap_or_default();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn outside_text_in_errors_is_escaped() {
        for doc in [
            "<a>&x\nINFO forged;</a>",
            "<a><b\nINFO>",
            "<a>&#xZZ\nINFO;</a>",
        ] {
            match xml_to_json(doc) {
                Ok(v) => panic!("{doc:?} is not a document: {v:?}"),
                Err(e) => assert!(!e.contains('\n'), "{e:?}"),
            }
        }
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
            assert!(xml_to_json(bad).is_err(), "{bad:?}");
        }
    }
}
