//! What a database cannot store, replaced where it stands in a record's JSON text, so a record
//! is stored whole instead of refused: the scanner reads escapes as JSON does and never
//! panics, whatever the text (a cut escape, a multi-byte character after a backslash).

/// The JSON text with what PostgreSQL cannot store replaced by U+FFFD, wherever it is in the
/// record (a field jamf-sync reads or not): the escape `\u0000` and unpaired UTF-16 surrogate
/// escapes `\uD800`–`\uDFFF` (both refused by `jsonb`), and NUL characters (refused by
/// `text`). A surrogate pair (`\ud83d\ude00`) is one character and stays. Both backends store
/// the same. Escapes are read as JSON reads them, so `\\u0000` (a backslash, then `u0000`) is
/// text and stays.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    let fixed = if text.contains("\\u") {
        fix_escapes(text)
    } else {
        None
    };
    match fixed {
        None if !text.contains('\0') => std::borrow::Cow::Borrowed(text),
        None => std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}")),
        Some(t) if t.contains('\0') => std::borrow::Cow::Owned(t.replace('\0', "\u{fffd}")),
        Some(t) => std::borrow::Cow::Owned(t),
    }
}

/// The text with `\u0000` and lone surrogate escapes replaced by `\ufffd`; `None` when it has
/// none. Works on bytes: a backslash and the escape's letters are ASCII, so every cut is on a
/// character boundary.
fn fix_escapes(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = b.get(at..at + 4)?;
        let digits = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|c| *c == b'\\'))
    {
        let at = i + off;
        if b.get(at + 1) != Some(&b'u') {
            // `\\`, `\"`, `\n`…: two bytes, whatever the second is (a multi-byte one is
            // invalid JSON, left for the parser to refuse).
            i = at + 2;
            continue;
        }
        let unit = hex4(at + 2);
        let bad = match unit {
            Some(0) | Some(0xDC00..=0xDFFF) => true,
            Some(0xD800..=0xDBFF) => {
                let paired = b.get(at + 6) == Some(&b'\\')
                    && b.get(at + 7) == Some(&b'u')
                    && matches!(hex4(at + 8), Some(0xDC00..=0xDFFF));
                if paired {
                    i = at + 12;
                    continue;
                }
                true
            }
            _ => false,
        };
        if bad {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..at]);
            o.push_str("\\ufffd");
            copied = at + 6;
        }
        i = at + 6;
    }
    let mut o = out?;
    o.push_str(&text[copied..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_postgresql_cannot_store_is_replaced() {
        let raw = r#"{"a":"x\u0000y","b":"\\u0000","c":"ok"}"#;
        assert_eq!(
            storable(raw),
            r#"{"a":"x\ufffdy","b":"\\u0000","c":"ok"}"#,
            "an escaped backslash before u0000 is text, not a NUL"
        );
        assert_eq!(storable("a\0b"), "a\u{fffd}b");
        assert!(matches!(storable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn lone_surrogate_escapes_are_replaced_and_pairs_kept() {
        let cases = [
            (r#"{"a":"\ud800"}"#, r#"{"a":"\ufffd"}"#),
            (r#"{"a":"x\uDFFFy"}"#, r#"{"a":"x\ufffdy"}"#),
            // A high surrogate followed by a non-surrogate escape, or by nothing.
            (r#"{"a":"\ud800\u0041"}"#, r#"{"a":"\ufffd\u0041"}"#),
            (r#"{"a":"\udbff"#, r#"{"a":"\ufffd"#),
            // Two highs, then a low: the first is lone, the second pairs.
            (
                r#"{"a":"\ud800\ud83d\ude00"}"#,
                r#"{"a":"\ufffd\ud83d\ude00"}"#,
            ),
            (r#"{"\udc00":1}"#, r#"{"\ufffd":1}"#),
            // Escaped backslashes: text, not escapes.
            (r#"{"a":"\\ud800"}"#, r#"{"a":"\\ud800"}"#),
            (r#"{"a":"\\\ud800"}"#, r#"{"a":"\\\ufffd"}"#),
            (r#"{"a":"é\ud800é"}"#, r#"{"a":"é\ufffdé"}"#),
        ];
        for (input, want) in cases {
            assert_eq!(storable(input), want, "{input}");
        }
        let pair = r#"{"a":"\ud83d\ude00","b":"\u00e9"}"#;
        assert!(matches!(storable(pair), std::borrow::Cow::Borrowed(_)));
        // What comes out reads as JSON where the input was whole (serde_json refuses a lone
        // surrogate in a string it reads, as PostgreSQL's jsonb does).
        let lone = r#"{"a":"x\ud800y"}"#;
        assert!(serde_json::from_str::<serde_json::Value>(lone).is_err());
        match serde_json::from_str::<serde_json::Value>(&storable(lone)) {
            Ok(fixed) => assert_eq!(fixed["a"], "x\u{fffd}y"),
            Err(e) => panic!("the fixed text reads: {e}"),
        }
    }

    #[test]
    fn storable_never_panics_on_cut_escapes() {
        for s in [
            "\\",
            "\\u",
            "\\u12",
            "\\ud8",
            "\\ud800\\",
            "\\ud800\\u",
            "é\\",
            "\\é",
        ] {
            let _ = storable(s);
        }
    }
}
