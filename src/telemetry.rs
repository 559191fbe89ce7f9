//! Logging and metrics setup, and the names of every metric jamf-sync exports.
//!
//! Invariants: logs go to stderr (stdout is for command output), coloured only when stderr is a
//! terminal and `NO_COLOR` is unset; metric labels stay small and bounded (endpoint
//! *templates*, never raw paths or ids); no secret is ever a label value; counters whose label
//! values are known in advance exist from start-up at zero (Prometheus' `rate()` and
//! `increase()` cannot see the first event of a series that appears with it).

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::domain::{Kind, INVENTORY_EVENTS};

/// Metric names: docs/metrics.md lists each with its labels (a test keeps the two equal).
pub mod metric {
    pub const HTTP_REQUEST_DURATION: &str = "jamf_sync_http_request_duration_seconds";
    pub const HTTP_REQUESTS: &str = "jamf_sync_http_requests_total";
    pub const HTTP_RETRIES: &str = "jamf_sync_http_retries_total";
    pub const BACKOFF_SECONDS: &str = "jamf_sync_backoff_seconds";
    pub const BACKOFF_SECONDS_TOTAL: &str = "jamf_sync_backoff_seconds_total";
    pub const IN_FLIGHT: &str = "jamf_sync_http_in_flight";
    pub const CONCURRENCY_LIMIT: &str = "jamf_sync_concurrency_limit";
    pub const TOKEN_REFRESHES: &str = "jamf_sync_token_refreshes_total";
    pub const AUTH_FAILURES: &str = "jamf_sync_auth_failures_total";
    pub const RECORDS: &str = "jamf_sync_records_total";
    pub const RUNS: &str = "jamf_sync_runs_total";
    pub const RUN_DURATION: &str = "jamf_sync_run_duration_seconds";
    pub const LAST_SUCCESS: &str = "jamf_sync_last_success_timestamp_seconds";
    pub const LAST_RUN: &str = "jamf_sync_last_run_timestamp_seconds";
    pub const DEVICES_STORED: &str = "jamf_sync_devices_stored";
    pub const CURSOR_LAG: &str = "jamf_sync_cursor_lag_seconds";
    pub const BUILD_INFO: &str = "jamf_sync_build_info";
    pub const LATENCY_BASELINE: &str = "jamf_sync_latency_baseline_seconds";
    pub const PAGE_SIZE: &str = "jamf_sync_page_size";
    pub const RECONCILE: &str = "jamf_sync_reconcile_devices_total";
    pub const GROUP_REFRESHES: &str = "jamf_sync_group_refreshes_total";
    pub const GROUPS: &str = "jamf_sync_groups_total";
    pub const WEBHOOK_REQUESTS: &str = "jamf_sync_webhook_requests_total";
    pub const WEBHOOK_QUEUE_DEPTH: &str = "jamf_sync_webhook_queue_depth";
    pub const WEBHOOK_LATENCY: &str = "jamf_sync_webhook_event_to_stored_seconds";
    pub const WEBHOOK_DEVICES: &str = "jamf_sync_webhook_devices_total";
    pub const TASK_RESTARTS: &str = "jamf_sync_task_restarts_total";
    pub const CLOCK_OFFSET: &str = "jamf_sync_clock_offset_seconds";
    pub const FAILING_DEVICES: &str = "jamf_sync_failing_devices";
    pub const INSTANCE_HELD: &str = "jamf_sync_instance_held";
    pub const LEASE_EPOCH: &str = "jamf_sync_lease_epoch";
    pub const LEASE_CHANGES: &str = "jamf_sync_lease_changes_total";

    /// Every metric name above (dashboards and alert rules are checked against it).
    pub const ALL: &[&str] = &[
        HTTP_REQUEST_DURATION,
        HTTP_REQUESTS,
        HTTP_RETRIES,
        BACKOFF_SECONDS,
        BACKOFF_SECONDS_TOTAL,
        IN_FLIGHT,
        CONCURRENCY_LIMIT,
        TOKEN_REFRESHES,
        AUTH_FAILURES,
        RECORDS,
        RUNS,
        RUN_DURATION,
        LAST_SUCCESS,
        LAST_RUN,
        DEVICES_STORED,
        CURSOR_LAG,
        BUILD_INFO,
        LATENCY_BASELINE,
        PAGE_SIZE,
        RECONCILE,
        GROUP_REFRESHES,
        GROUPS,
        WEBHOOK_REQUESTS,
        WEBHOOK_QUEUE_DEPTH,
        WEBHOOK_LATENCY,
        WEBHOOK_DEVICES,
        TASK_RESTARTS,
        CLOCK_OFFSET,
        FAILING_DEVICES,
        INSTANCE_HELD,
        LEASE_EPOCH,
        LEASE_CHANGES,
    ];
}

/// Registers HELP text for every metric, so scrapers and `promtool check metrics` see it.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        metric::HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Latency of one attempt of a request to Jamf, by endpoint template, method and status class"
    );
    describe_counter!(
        metric::HTTP_REQUESTS,
        "Request attempts to Jamf, by endpoint template, method and status class"
    );
    describe_counter!(
        metric::HTTP_RETRIES,
        "Retries of requests to Jamf, by endpoint template and reason"
    );
    describe_histogram!(
        metric::BACKOFF_SECONDS,
        Unit::Seconds,
        "Length of each backoff sleep before a retry, by reason"
    );
    describe_counter!(
        metric::BACKOFF_SECONDS_TOTAL,
        Unit::Seconds,
        "Total time spent sleeping in backoff, by reason"
    );
    describe_gauge!(metric::IN_FLIGHT, "Requests to Jamf currently on the wire");
    describe_gauge!(
        metric::CONCURRENCY_LIMIT,
        "Current limit on concurrent requests to Jamf (at most 5)"
    );
    describe_counter!(metric::TOKEN_REFRESHES, "Bearer tokens obtained, by method");
    describe_counter!(metric::AUTH_FAILURES, "Rejected authentication attempts");
    describe_counter!(
        metric::RECORDS,
        "Device records processed, by kind and outcome (upserted, unchanged, failed, missing)"
    );
    describe_counter!(metric::RUNS, "Sync runs, by kind and result");
    describe_gauge!(
        metric::FAILING_DEVICES,
        "Devices Jamf would not give (recorded in sync_failures, retried every run), by kind"
    );
    describe_gauge!(
        metric::INSTANCE_HELD,
        "1 while this process holds the instance (runs its syncs, drains its webhook queue); PostgreSQL deployments"
    );
    describe_gauge!(
        metric::LEASE_EPOCH,
        "Epoch of the instance's lease while this process holds it (grows at every change of holder)"
    );
    describe_counter!(
        metric::LEASE_CHANGES,
        "Instances this process took (acquired) or gave up (lost, released)"
    );
    describe_gauge!(
        metric::CLOCK_OFFSET,
        "Jamf's clock minus this host's, from Jamf's Date header (whole seconds)"
    );
    describe_counter!(
        metric::TASK_RESTARTS,
        "Restarts of a daemon task (executor, webhook worker) after it panicked or stopped"
    );
    describe_histogram!(
        metric::RUN_DURATION,
        Unit::Seconds,
        "Wall time of sync runs, by kind"
    );
    describe_gauge!(
        metric::LAST_SUCCESS,
        "Unix time of the last successful run, by kind"
    );
    describe_gauge!(
        metric::LAST_RUN,
        "Unix time the last run of a kind ended, whatever its result"
    );
    describe_gauge!(
        metric::DEVICES_STORED,
        "Devices currently stored (not deleted), by kind"
    );
    describe_gauge!(
        metric::CURSOR_LAG,
        Unit::Seconds,
        "Age of the delta cursor (start of the last successful run), by kind"
    );
    describe_gauge!(
        metric::BUILD_INFO,
        "Build information; the value is always 1"
    );
    describe_counter!(
        metric::RECONCILE,
        "Devices handled by reconcile, by kind and outcome (deleted, kept, refused, missed_fetched, revived)"
    );
    describe_counter!(
        metric::GROUP_REFRESHES,
        "Group membership refreshes, by kind and result (succeeded, failed, interrupted)"
    );
    describe_counter!(
        metric::GROUPS,
        "Groups read by membership refreshes, by kind and outcome (changed, unchanged, gone)"
    );
    describe_gauge!(
        metric::LATENCY_BASELINE,
        Unit::Seconds,
        "Adaptive pacing's latency baseline (EWMA of normal answers), by endpoint class"
    );
    describe_gauge!(
        metric::PAGE_SIZE,
        "Current list page size (shrinks after page timeouts), by kind"
    );
    describe_counter!(
        metric::WEBHOOK_REQUESTS,
        "Webhook requests received, by event (an inventory event, other, unknown) and result (queued, ignored, unauthorized, malformed, too_large, unavailable, queue_full)"
    );
    describe_gauge!(
        metric::WEBHOOK_QUEUE_DEPTH,
        "Webhook events waiting in the durable queue"
    );
    describe_histogram!(
        metric::WEBHOOK_LATENCY,
        Unit::Seconds,
        "Time from receiving a webhook event to its device's record being stored, by kind"
    );
    describe_counter!(
        metric::WEBHOOK_DEVICES,
        "Devices handled by the webhook worker, by kind and outcome (stored, missing, failed, skipped_fresh, retried, dropped)"
    );
    metrics::gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle for rendering.
pub fn install_metrics() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0,
                ])
                .ok()?
                .install_recorder()
                .ok()?;
            describe_metrics();
            Some(handle)
        })
        .clone()
}

/// Zero series for the run, record and webhook counters of these kinds of this instance.
pub fn init_series(instance: &str, kinds: &[Kind], webhooks: bool) {
    let i = || instance.to_string();
    for kind in kinds.iter().map(|k| k.as_str()) {
        for result in ["succeeded", "failed", "interrupted"] {
            metrics::counter!(metric::RUNS, "jamf_instance" => i(), "kind" => kind, "result" => result).increment(0);
        }
        for outcome in ["upserted", "unchanged", "stale", "failed", "missing"] {
            metrics::counter!(metric::RECORDS, "jamf_instance" => i(), "kind" => kind, "outcome" => outcome).increment(0);
        }
        for outcome in ["deleted", "kept", "refused", "missed_fetched", "revived"] {
            metrics::counter!(metric::RECONCILE, "jamf_instance" => i(), "kind" => kind, "outcome" => outcome).increment(0);
        }
        for result in ["succeeded", "failed", "interrupted"] {
            metrics::counter!(metric::GROUP_REFRESHES, "jamf_instance" => i(), "kind" => kind, "result" => result)
                .increment(0);
        }
        for outcome in ["changed", "unchanged", "gone"] {
            metrics::counter!(metric::GROUPS, "jamf_instance" => i(), "kind" => kind, "outcome" => outcome).increment(0);
        }
        // Registered (at zero) by taking its handle.
        let _ = metrics::histogram!(metric::RUN_DURATION, "jamf_instance" => i(), "kind" => kind);
        if webhooks {
            for outcome in [
                "stored",
                "missing",
                "failed",
                "skipped_fresh",
                "retried",
                "dropped",
            ] {
                metrics::counter!(metric::WEBHOOK_DEVICES, "jamf_instance" => i(), "kind" => kind, "outcome" => outcome)
                    .increment(0);
            }
            // Registered (at zero) by taking its handle.
            let _ = metrics::histogram!(metric::WEBHOOK_LATENCY, "jamf_instance" => i(), "kind" => kind);
        }
    }
    if webhooks {
        for result in ["unauthorized", "malformed", "too_large"] {
            metrics::counter!(metric::WEBHOOK_REQUESTS, "jamf_instance" => i(), "event" => "unknown", "result" => result)
                .increment(0);
        }
        metrics::counter!(metric::WEBHOOK_REQUESTS, "jamf_instance" => i(), "event" => "other", "result" => "ignored")
            .increment(0);
        for (event, kind, _) in INVENTORY_EVENTS {
            if kinds.contains(kind) {
                for result in ["queued", "unavailable"] {
                    metrics::counter!(metric::WEBHOOK_REQUESTS, "jamf_instance" => i(), "event" => *event, "result" => result)
                        .increment(0);
                }
            }
        }
        metrics::gauge!(metric::WEBHOOK_QUEUE_DEPTH, "jamf_instance" => i()).set(0.0);
    }
}

/// Whether log lines get ANSI colours: only for a person at a terminal, and never with
/// `NO_COLOR` set (journald, `docker logs`, files and pipes get plain text).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none()
}

/// Sets up `tracing` on stderr. `RUST_LOG` overrides `log.filter`.
pub fn init_logging(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
    };
}

/// How text log lines write their fields: as the default does, but with control characters
/// escaped in every field and the message, whatever a call site passed. Records, webhook
/// bodies and Jamf's or the database's messages reach log fields; a newline in one must not
/// start a forged line of its own. (JSON lines are escaped by JSON itself.)
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::domain::text::no_controls(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.0.lock() {
                Ok(mut v) => v.extend_from_slice(buf),
                Err(p) => p.into_inner().extend_from_slice(buf),
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_from_outside_never_starts_a_log_line() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(text_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let forged = "x\n2026-12-07T00:00:00Z  INFO jamf_sync: forged";
            tracing::warn!(error = %forged, id = ?forged, "malformed webhook refused: {forged}");
        });
        let text = match out.0.lock() {
            Ok(v) => String::from_utf8_lossy(&v).into_owned(),
            Err(p) => String::from_utf8_lossy(&p.into_inner()).into_owned(),
        };
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("error=x\\n2026"), "{text}");
        assert!(text.contains("refused: x\\n2026"), "{text}");
    }

    #[test]
    fn colour_only_for_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(true, Some("".into())));
    }
}
