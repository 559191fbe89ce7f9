//! Typed extension attribute views: one view per instance and device kind
//! (`computer_ea_<instance>`, `mobile_device_ea_<instance>`) with one column per attribute,
//! typed by the attribute's data type.
//!
//! Invariants:
//! - a value that does not read as its type is NULL in the view (never an error for the
//!   query that reads it); the text stays in `extension_attributes`;
//! - column names are the attributes' names, quoted; names that clash (with the view's own
//!   columns, or with each other ignoring case, as SQLite compares them) get a suffix, long
//!   names are cut to PostgreSQL's 63 bytes, and an attribute without a name is `unnamed`;
//! - `CREATE VIEW` takes no bind parameters, so names reach the SQL as literals: on
//!   PostgreSQL they are escape strings (`E'…'`, backslashes and quotes doubled), which read
//!   the same whatever `standard_conforming_strings` says, and the patterns hold no
//!   backslash; an attribute's name can never end its literal early;
//! - the view is recreated only when its signature (the attributes and their types) changes.

use crate::domain::Kind;

/// The SQL dialect a view is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One attribute of a view: its name in `extension_attributes` and Jamf's data type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EaColumn {
    pub name: String,
    pub data_type: Option<String>,
}

/// The view's name for an instance and kind: lower case letters, digits and `_` only.
pub fn view_name(instance: &str, kind: Kind) -> String {
    let safe: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{}_ea_{safe}", kind.device_type())
}

/// What decides whether a view must be recreated.
pub(super) fn signature(columns: &[EaColumn]) -> String {
    let mut sorted = columns.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|c| format!("{}\u{1f}{}", c.name, c.data_type.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\u{1e}")
}

/// A string literal that reads as `s` in this dialect. PostgreSQL reads a backslash in a
/// plain literal as an escape when `standard_conforming_strings` is off (a database's or a
/// role's setting): an `E'…'` literal reads escapes whatever the setting, so doubling
/// backslashes there is exact.
fn literal(dialect: Dialect, s: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("'{}'", s.replace('\'', "''")),
        Dialect::Postgres => format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
    }
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The view's column names, in the order of `columns`.
fn column_names(columns: &[EaColumn]) -> Vec<String> {
    let mut taken: Vec<String> = ["jamf_id", "serial_number", "device_name"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = Vec::new();
    for c in columns {
        let mut base: String = if c.name.trim().is_empty() {
            // PostgreSQL has no zero-length identifier; SQLite would make an unusable one.
            "unnamed".into()
        } else {
            c.name.clone()
        };
        while base.len() > 56 {
            base.pop();
        }
        let mut name = base.clone();
        let mut n = 2;
        while taken.iter().any(|t| t.eq_ignore_ascii_case(&name)) {
            name = format!("{base} {n}");
            n += 1;
        }
        taken.push(name.clone());
        out.push(name);
    }
    out
}

/// `CREATE VIEW … AS …` for these attributes.
pub(super) fn create_sql(
    dialect: Dialect,
    instance: &str,
    kind: Kind,
    columns: &[EaColumn],
) -> String {
    let names = column_names(columns);
    let mut pivot = vec!["instance".to_string(), "jamf_id".to_string()];
    let mut select = vec![
        "d.jamf_id".to_string(),
        "d.serial_number".to_string(),
        "d.name AS device_name".to_string(),
    ];
    for (i, (c, name)) in columns.iter().zip(&names).enumerate() {
        pivot.push(format!(
            "MAX(CASE WHEN name = {} THEN value END) AS v{i}",
            literal(dialect, &c.name)
        ));
        let v = format!("p.v{i}");
        let typed = match (c.data_type.as_deref(), dialect) {
            (Some("INTEGER"), Dialect::Postgres) => format!(
                "CAST(CASE WHEN {v} ~ '^[[:space:]]*-?[0-9]{{1,18}}[[:space:]]*$' THEN trim({v}) END AS BIGINT)"
            ),
            (Some("INTEGER"), Dialect::Sqlite) => format!(
                "CASE WHEN length(trim({v})) BETWEEN 1 AND 18 AND ltrim(trim({v}), '-') <> '' \
                 AND ltrim(trim({v}), '-') NOT GLOB '*[^0-9]*' \
                 AND (substr(trim({v}), 1, 1) = '-' OR trim({v}) NOT GLOB '*-*') \
                 AND substr(trim({v}), 2) NOT GLOB '*-*' \
                 THEN CAST(trim({v}) AS INTEGER) END"
            ),
            (Some("DATE" | "DATE_TIME"), Dialect::Postgres) => format!(
                "CAST(CASE WHEN {v} ~ '^[[:space:]]*[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}([ T][0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}})?)?[[:space:]]*$' \
                 THEN trim({v}) END AS TIMESTAMP)"
            ),
            (Some("DATE" | "DATE_TIME"), Dialect::Sqlite) => format!("datetime(trim({v}))"),
            _ => v,
        };
        select.push(format!("{typed} AS {}", ident(name)));
    }
    format!(
        "CREATE VIEW {view} AS SELECT {select} FROM {table} d LEFT JOIN (SELECT {pivot} \
         FROM extension_attributes WHERE device_type = {dt} GROUP BY instance, jamf_id) p \
         ON p.instance = d.instance AND p.jamf_id = d.jamf_id \
         WHERE d.instance = {inst} AND d.deleted_at IS NULL",
        view = view_name(instance, kind),
        select = select.join(", "),
        table = kind.as_str(),
        pivot = pivot.join(", "),
        dt = literal(dialect, kind.device_type()),
        inst = literal(dialect, instance),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> EaColumn {
        EaColumn {
            name: name.into(),
            data_type: Some(t.into()),
        }
    }

    #[test]
    fn names_are_safe_and_clashes_get_a_suffix() {
        assert_eq!(
            view_name("EU-West 1", Kind::Computers),
            "computer_ea_eu_west_1"
        );
        let names = column_names(&[
            col("Owner", "STRING"),
            col("owner", "STRING"),
            col("jamf_id", "STRING"),
            col(&"x".repeat(80), "STRING"),
        ]);
        assert_eq!(names[0], "Owner");
        assert_eq!(names[1], "owner 2");
        assert_eq!(names[2], "jamf_id 2");
        assert!(names[3].len() <= 63);
        let sql = create_sql(
            Dialect::Postgres,
            "it's",
            Kind::Computers,
            &[col("Bob's \"EA\"", "INTEGER")],
        );
        assert!(sql.contains("E'it''s'"), "{sql}");
        assert!(sql.contains("\"Bob's \"\"EA\"\"\""), "{sql}");
        assert!(sql.contains("name = E'Bob''s \"EA\"'"), "{sql}");
        assert!(
            !sql.contains('\\'),
            "no backslash outside a literal's own: {sql}"
        );
        let sql = create_sql(
            Dialect::Postgres,
            "t",
            Kind::Computers,
            &[col("a\\' OR true --", "STRING")],
        );
        assert!(sql.contains("name = E'a\\\\'' OR true --'"), "{sql}");
        let sql = create_sql(
            Dialect::Sqlite,
            "t",
            Kind::Computers,
            &[col("a\\' OR true --", "STRING")],
        );
        assert!(sql.contains("name = 'a\\'' OR true --'"), "{sql}");
        assert_eq!(
            column_names(&[col("", "STRING"), col(" ", "STRING")]),
            ["unnamed", "unnamed 2"]
        );
    }

    #[test]
    fn the_signature_ignores_order_and_sees_types() {
        let a = [col("A", "STRING"), col("B", "INTEGER")];
        let b = [col("B", "INTEGER"), col("A", "STRING")];
        assert_eq!(signature(&a), signature(&b));
        assert_ne!(
            signature(&a),
            signature(&[col("A", "STRING"), col("B", "STRING")])
        );
    }
}
