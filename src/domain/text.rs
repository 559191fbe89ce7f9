//! Text from outside (a Jamf record, a webhook body, a database's message quoting either) as
//! it may appear in a log line, an error or an answer: control characters escaped (a newline
//! never starts a forged log line), and bounded.

/// `s` with control characters, quotes and backslashes escaped as Rust does (`\n`, `\u{1}`),
/// at most `max` characters of it, `…` when cut.
pub fn shown(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// `s` with its control characters (newlines, carriage returns, escapes, NUL…) escaped and
/// nothing else changed: what a text log line may hold of any field.
pub fn no_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{no_controls, shown};

    #[test]
    fn only_control_characters_change() {
        assert_eq!(no_controls("say \"hi\" \\ é"), "say \"hi\" \\ é");
        assert_eq!(
            no_controls("a\nb\r\u{0}\u{1b}[31m"),
            "a\\nb\\r\\0\\u{1b}[31m"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_length_bounded() {
        assert_eq!(
            shown("a\nINFO forged\r\u{1}", 100),
            "a\\nINFO forged\\r\\u{1}"
        );
        assert_eq!(shown("abcdef", 3), "abc…");
        assert_eq!(shown("é", 3), "é");
        assert!(!shown("x\n\u{2028}y", 10).contains('\n'));
    }
}
