//! The reference documents under `docs/` name what the code has, no more and no less: every
//! configuration key and every metric.

use std::collections::BTreeSet;

use jamf_sync::telemetry::metric;

use crate::support::repo_file;

/// The first cell of every table row of a Markdown text.
fn first_cells(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .collect()
}

/// The backticked names in a cell.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Keys as docs/configuration.md lists them: `jamf.pacing.slow_deviations`, `slow_floor` names
/// `jamf.pacing.slow_floor` too.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for cell in first_cells(text) {
        let mut section = String::new();
        for name in backticked(cell) {
            let full = if name.contains('.') {
                section = name
                    .rsplit_once('.')
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default();
                name.to_string()
            } else {
                format!("{section}.{name}")
            };
            out.insert(full);
        }
    }
    out
}

/// Every leaf key of a serialized configuration.
fn leaf_keys(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// The keys of the configuration structs: what `config check` prints, `None` included.
fn config_keys() -> BTreeSet<String> {
    let cfg = jamf_sync::config::Config::default();
    let value = serde_json::to_value(&cfg).expect("the configuration serializes");
    let mut keys = BTreeSet::new();
    leaf_keys("", &value, &mut keys);
    keys
}

#[test]
fn the_configuration_reference_lists_every_key_and_no_other() {
    let documented = documented_keys(&repo_file("docs/configuration.md"));
    let known = config_keys();
    assert!(known.len() > 60, "{known:?}");
    let missing: Vec<&String> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
    // `instances.NAME.*` is the one pattern: a table per instance, of keys documented above.
    let unknown: Vec<&String> = documented
        .difference(&known)
        .filter(|k| k.as_str() != "instances.NAME.*")
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys that do not exist: {unknown:?}"
    );
}

#[test]
fn the_configuration_check_has_teeth() {
    let doc = "| `jamf.url` | none | x |\n| `jamf.pacing.min_delay_ms`, `max_delay_ms` | 0 | y |\n\
               | `a.b` / `a.b_file` | | z |\n";
    let keys = documented_keys(doc);
    let want: BTreeSet<String> = [
        "jamf.url",
        "jamf.pacing.min_delay_ms",
        "jamf.pacing.max_delay_ms",
        "a.b",
        "a.b_file",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, want);
    let mut out = BTreeSet::new();
    leaf_keys(
        "",
        &serde_json::json!({"a": {"b": 1, "c": null, "d": {"e": []}}, "f": {}}),
        &mut out,
    );
    let want: BTreeSet<String> = ["a.b", "a.c", "a.d.e", "f"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(out, want);
}

/// The metric names `telemetry.rs` declares (`pub const X: &str = "jamf_sync_…"`).
fn declared_metrics() -> BTreeSet<String> {
    repo_file("src/telemetry.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("jamf_sync_"))
        .map(String::from)
        .collect()
}

#[test]
fn the_metrics_reference_lists_every_metric_and_no_other() {
    let documented: BTreeSet<String> = first_cells(&repo_file("docs/metrics.md"))
        .into_iter()
        .flat_map(backticked)
        .filter(|n| n.starts_with("jamf_sync_"))
        .map(String::from)
        .collect();
    let registered: BTreeSet<String> = metric::ALL.iter().map(|s| s.to_string()).collect();
    assert!(registered.len() > 25);
    assert_eq!(
        declared_metrics(),
        registered,
        "telemetry::metric::ALL lists every declared metric"
    );
    let missing: Vec<&String> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not document {missing:?}"
    );
    let unknown: Vec<&String> = documented.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "docs/metrics.md documents metrics that do not exist: {unknown:?}"
    );
}

#[test]
fn the_readme_stays_a_way_in() {
    let readme = repo_file("README.md");
    assert!(
        readme.lines().count() <= 200,
        "README.md is {} lines",
        readme.lines().count()
    );
    // The two commands, near the top.
    let top: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(top.contains("cargo run --release -- demo"), "{top}");
    assert!(top.contains("bash scripts/test.sh"), "{top}");
    // Every document it links to exists.
    for link in readme.split("](").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        let path = target.split('#').next().unwrap_or_default();
        if path.is_empty() || path.starts_with("http") {
            continue;
        }
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(path)
                .exists(),
            "README.md links to {path}, which does not exist"
        );
    }
}

/// Links between the documents point at files and headings that exist.
#[test]
fn links_between_the_documents_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let anchor = |heading: &str| -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let anchors = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| anchor(l.trim_start_matches('#')))
            .collect()
    };
    let mut checked = 0;
    for doc in [
        "README.md",
        "docs/operations.md",
        "docs/design.md",
        "docs/configuration.md",
        "docs/queries.md",
        "docs/metrics.md",
    ] {
        let text = repo_file(doc);
        let dir = root
            .join(doc)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (path, frag) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                root.join(doc)
            } else {
                dir.join(path)
            };
            assert!(file.exists(), "{doc} links to {target}: no such file");
            if !frag.is_empty() && file.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                assert!(
                    anchors(&text).contains(frag),
                    "{doc} links to {target}: no such heading"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "links were found ({checked})");
}
