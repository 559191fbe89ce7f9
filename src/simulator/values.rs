//! A filter's values compared the way Jamf's RSQL compares them: numbers as numbers, dates as
//! dates, text case-insensitively, `*` as a wildcard in an equality.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub enum FieldValue {
    Int(i64),
    Str(String),
    Time(DateTime<Utc>),
}

pub(super) fn compare(actual: &FieldValue, value: &str) -> Result<std::cmp::Ordering, String> {
    match actual {
        FieldValue::Int(a) => value
            .trim()
            .parse::<i64>()
            .map(|v| a.cmp(&v))
            .map_err(|_| format!("{value:?} is not a number")),
        FieldValue::Str(a) => Ok(a.as_str().cmp(value)),
        FieldValue::Time(a) => parse_time(value)
            .map(|v| a.cmp(&v))
            .ok_or_else(|| format!("{value:?} is not a date-time")),
    }
}

pub(super) fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    pattern.ends_with('*') || rest.is_empty() || parts.len() > 1
}
pub fn cmp_values(a: &FieldValue, b: &FieldValue) -> std::cmp::Ordering {
    match (a, b) {
        (FieldValue::Int(x), FieldValue::Int(y)) => x.cmp(y),
        (FieldValue::Str(x), FieldValue::Str(y)) => x.cmp(y),
        (FieldValue::Time(x), FieldValue::Time(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

/// An RSQL date value as Jamf accepts it (ISO-8601 UTC, with or without fractions).
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}
