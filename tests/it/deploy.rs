//! The shipped dashboard and alert rules refer only to metrics jamf-sync exports.

use std::collections::BTreeSet;

use jamf_sync::telemetry::metric;

use crate::support::repo_file;

/// `jamf_sync_*` names in a text, with Prometheus' histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("jamf_sync_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        if !metric::ALL.contains(&name) {
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base;
                }
            }
        }
        out.insert(name.to_string());
        i = end;
    }
    out
}

#[test]
fn dashboard_and_alerts_use_exported_metrics() {
    let dashboard = repo_file("deploy/grafana/jamf-sync.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    for p in panels {
        assert!(
            p["title"].is_string() && p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{p}"
        );
    }
    let alerts = repo_file("deploy/prometheus/alerts.yml");
    for (what, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let names = metric_names(text);
        assert!(!names.is_empty());
        for name in &names {
            assert!(
                metric::ALL.contains(&name.as_str()),
                "{what} uses unknown metric {name}"
            );
        }
    }
    // The dashboard covers what operators look at first.
    let used = metric_names(&dashboard);
    for needed in [
        metric::RUNS,
        metric::LAST_SUCCESS,
        metric::RECORDS,
        metric::HTTP_REQUEST_DURATION,
        metric::HTTP_RETRIES,
        metric::CONCURRENCY_LIMIT,
        metric::IN_FLIGHT,
        metric::DEVICES_STORED,
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}");
    }
}
