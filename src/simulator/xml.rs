//! The simulator's own XML reader, for the Classic API bodies clients send it (advanced search
//! definitions, webhooks). Deliberately not the client's XML code: the simulator is an
//! independent implementation, so a parsing bug on one side shows up as a test failure.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest nesting the simulator reads; Classic request bodies nest three or four levels.
const MAX_DEPTH: usize = 32;

/// One element: its name, its text (entities resolved) and its child elements, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// Parses a whole document into its root element.
    pub fn parse(xml: &str) -> Result<Element, String> {
        let mut reader = Reader::from_str(xml);
        let mut open: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            match reader.read_event().map_err(|e| format!("bad XML: {e}"))? {
                Event::Start(e) => {
                    if root.is_some() || open.len() >= MAX_DEPTH {
                        return Err("unexpected element".into());
                    }
                    open.push(Element {
                        name: e.local_name().as_ref().to_string(),
                        ..Element::default()
                    });
                }
                Event::Empty(e) => {
                    let el = Element {
                        name: e.local_name().as_ref().to_string(),
                        ..Element::default()
                    };
                    match open.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None if root.is_none() => root = Some(el),
                        None => return Err("content after the root element".into()),
                    }
                }
                Event::End(_) => {
                    let el = open.pop().ok_or("unbalanced closing tag")?;
                    match open.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::Text(t) => {
                    if let Some(el) = open.last_mut() {
                        el.text.push_str(&t.xml10_content());
                    }
                }
                Event::CData(t) => {
                    if let Some(el) = open.last_mut() {
                        el.text.push_str(&t);
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.to_string();
                    let resolved = match name.as_str() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => r
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .ok_or_else(|| format!("unknown entity &{name};"))?,
                    };
                    if let Some(el) = open.last_mut() {
                        el.text.push(resolved);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !open.is_empty() {
            return Err("truncated document".into());
        }
        root.ok_or_else(|| "empty document".into())
    }

    /// The first child element of this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child element of this name.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nesting_text_and_entities() {
        let doc = Element::parse(
            "<?xml version=\"1.0\"?><webhook><name>jamf-sync &amp; co &#39;x&#39;</name>\
             <criteria><size>1</size><criterion><value>2</value></criterion></criteria><empty/></webhook>",
        )
        .unwrap_or_default();
        assert_eq!(doc.name, "webhook");
        assert_eq!(doc.text_of("name"), Some("jamf-sync & co 'x'"));
        let criterion = doc.child("criteria").and_then(|c| c.child("criterion"));
        assert_eq!(criterion.and_then(|c| c.text_of("value")), Some("2"));
        assert_eq!(doc.text_of("empty"), Some(""));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in ["", "<a>", "<a></b>", "<a>&nope;</a>", "<a/><b/>"] {
            assert!(Element::parse(bad).is_err(), "{bad:?}");
        }
    }
}
