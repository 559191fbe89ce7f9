//! Token expiry, revocation, injected faults and back-pressure: the run still succeeds with
//! correct data and never exceeds five concurrent connections.

use std::sync::Arc;
use std::time::Duration;

use jamf_sync::config::{ApiVersion, Credentials, FetchStrategy};
use jamf_sync::domain::Kind;
use jamf_sync::jamf::{JamfClient, JamfError};
use jamf_sync::simulator::{Faults, SimConfig};
use jamf_sync::store::Store;
use secrecy::SecretString;

use crate::support::{self, TestDb};

fn faults_5_percent() -> Faults {
    Faults {
        rate_500: 0.01,
        rate_502: 0.005,
        rate_503: 0.01,
        rate_504: 0.005,
        rate_quota: 0.01,
        rate_429: 0.005,
        retry_after_secs: 1,
        rate_reset: 0.005,
        rate_slow: 0.02,
        slow_ms: 50,
        ..Faults::default()
    }
}

both_backends!(token_expiry_revocation_and_faults);
async fn token_expiry_revocation_and_faults(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 800,
        token_ttl_secs: 2,
        latency_ms: 3,
        faults: Faults {
            revoke_every: 150,
            ..faults_5_percent()
        },
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(50, FetchStrategy::Detail),
    );
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    // A device whose every attempt drew an injected 500 looks like a broken record to the
    // client (Jamf's answer for one): it is isolated, recorded, and read by the next run.
    assert_eq!(
        summary.counts.fetched + summary.counts.failed,
        800,
        "{summary}"
    );
    assert!(summary.counts.failed <= 3, "only the odd device: {summary}");
    for _ in 0..3 {
        let failing = db
            .db
            .failing_sample("test", Kind::Computers, 0)
            .await
            .expect("failures")
            .0;
        if failing == 0 {
            break;
        }
        let again = support::run(&engine, false).await;
        assert!(again.succeeded(), "{again}");
    }
    support::assert_matches_sim(db, &sim).await;
    let stats = sim.stats();
    assert!(
        stats.faults_injected > 10,
        "faults were injected: {stats:?}"
    );
    assert!(stats.tokens_issued >= 2, "tokens were renewed: {stats:?}");
    assert!(
        stats.unauthorized > 0,
        "revocation was exercised: {stats:?}"
    );
    assert!(stats.peak_in_flight <= 5, "{stats:?}");
    assert!(stats.peak_connections <= 5, "{stats:?}");

    // Inline pages under the same conditions.
    sim.touch_random(300);
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(25, FetchStrategy::Inline),
    );
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

both_backends!(token_renewal_is_single_flight);
async fn token_renewal_is_single_flight(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 300,
        token_ttl_secs: 1,
        latency_ms: 20,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    let stats = sim.stats();
    // A 1 s token is renewed at half its life: about one renewal per 0.5 s of run time. If
    // workers renewed on their own, there would be up to five times as many.
    let expected = (summary.elapsed.as_secs_f64() / 0.5).ceil() as u64 + 2;
    assert!(stats.tokens_issued >= 2, "{stats:?}");
    assert!(
        stats.tokens_issued <= expected,
        "renewals must be shared: {} tokens in {:?}",
        stats.tokens_issued,
        summary.elapsed
    );
    assert_eq!(
        stats.unauthorized, 0,
        "tokens are renewed before they expire: {stats:?}"
    );
    sim.stop().await;
}

both_backends!(user_account_with_keep_alive);
async fn user_account_with_keep_alive(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 200,
        token_ttl_secs: 2,
        latency_ms: 30,
        ..SimConfig::default()
    })
    .await;
    let mut settings = support::settings(&sim);
    settings.credentials = Credentials::User {
        username: "admin".into(),
        password: SecretString::from("sim-password".to_string()),
    };
    let engine = support::engine(db, settings, support::sync_cfg(100, FetchStrategy::Detail));
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    assert!(
        sim.requests_to("/api/v1/auth/keep-alive") >= 1,
        "{:?}",
        sim.stats()
    );
    assert_eq!(
        sim.requests_to("/api/v1/auth/token"),
        1,
        "keep-alive renews user tokens"
    );
    support::assert_matches_sim(db, &sim).await;
    sim.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_fatal_and_not_retried() {
    let sim = support::sim(SimConfig {
        computers: 10,
        ..SimConfig::default()
    })
    .await;
    let mut settings = support::settings(&sim);
    settings.credentials = Credentials::ApiClient {
        client_id: "jamf-sync-sim".into(),
        client_secret: SecretString::from("wrong-secret-value".to_string()),
    };
    let client = JamfClient::new(settings).expect("client");
    let err = client.server_version().await.expect_err("must fail");
    assert!(
        matches!(err, JamfError::AuthFailed { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-secret-value"));
    assert_eq!(sim.requests_to("/api/v1/oauth/token"), 1, "not retried");
    sim.stop().await;
}

both_backends!(legacy_oauth_path_and_older_server_versions);
async fn legacy_oauth_path_and_older_server_versions(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 120,
        version: "11.20.0-t1".into(),
        legacy_oauth_only: true,
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Inline),
    );
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    assert_eq!(
        sim.requests_to("/api/v1/oauth/token"),
        1,
        "tried once, then fell back"
    );
    assert_eq!(sim.requests_to("/api/oauth/token"), 1);
    // Nothing stored yet: the probe (highest id, count), then both pages at once.
    assert_eq!(sim.requests_to("/api/v3/computers-inventory"), 3);
    assert_eq!(sim.requests_to("/api/v4/computers-inventory"), 0);
    // v3 sends lastContactTime; it lands in the same column as v4's lastContact.
    support::assert_matches_sim(db, &sim).await;

    // A fixed v1 override is honoured.
    let mut settings = support::settings(&sim);
    settings.api_version = ApiVersion::V1;
    let engine = support::engine(db, settings, support::sync_cfg(100, FetchStrategy::Inline));
    assert!(support::run(&engine, true).await.succeeded());
    assert_eq!(sim.requests_to("/api/v1/computers-inventory"), 2);
    sim.stop().await;
}

/// A long-running daemon's client notices a Jamf upgrade: the detected API version is used for
/// `version_ttl`, then the server version is asked again.
#[tokio::test]
async fn a_jamf_upgrade_is_noticed_without_a_restart() {
    let db = support::sqlite().await;
    let sim = support::sim(SimConfig {
        computers: 120,
        version: "11.20.0-t1".into(),
        ..SimConfig::default()
    })
    .await;
    let mut settings = support::settings(&sim);
    settings.version_ttl = Duration::from_secs(5);
    let engine = support::engine(&db, settings, support::sync_cfg(100, FetchStrategy::Inline));
    assert!(support::run(&engine, false).await.succeeded());
    assert!(support::run(&engine, true).await.succeeded());
    assert_eq!(sim.requests_to("/api/v1/jamf-pro-version"), 1, "asked once");
    assert_eq!(sim.requests_to("/api/v4/computers-inventory"), 0);
    let v3 = sim.requests_to("/api/v3/computers-inventory");
    // The first run: the probe and both pages; the second (devices stored): both pages.
    assert_eq!(v3, 5);

    sim.set_version("11.30.1-t1784555528405");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    sim.touch_ids(&[7]);
    let delta = support::run(&engine, false).await;
    assert!(delta.succeeded(), "{delta}");
    assert_eq!(sim.requests_to("/api/v1/jamf-pro-version"), 2);
    assert_eq!(
        sim.requests_to("/api/v3/computers-inventory"),
        v3,
        "v3 no more"
    );
    assert!(sim.requests_to("/api/v4/computers-inventory") >= 1);
    assert_eq!(delta.counts.upserted, 1, "{delta}");
    support::assert_matches_sim(&db, &sim).await;
    sim.stop().await;
}

#[tokio::test]
async fn the_next_process_takes_the_jamf_version_from_the_last_run_while_recent() {
    let db = support::sqlite().await;
    let sim = support::sim(SimConfig {
        computers: 60,
        version: "11.20.0-t1".into(),
        ..SimConfig::default()
    })
    .await;
    let process = |ttl: Duration| {
        let mut settings = support::settings(&sim);
        settings.version_ttl = ttl;
        support::engine(&db, settings, support::sync_cfg(100, FetchStrategy::Detail))
    };
    const VERSION: &str = "/api/v1/jamf-pro-version";
    assert!(support::run(&process(Duration::from_secs(3600)), true)
        .await
        .succeeded());
    assert_eq!(sim.requests_to(VERSION), 1);
    // A new client over the same database: the version the last run saw (and kept with its
    // pacing memory) is used, and its choice of API with it.
    let v3_before = sim.requests_to("/api/v3/computers-inventory-detail/{id}");
    let second = support::run(&process(Duration::from_secs(3600)), true).await;
    assert!(second.succeeded(), "{second}");
    assert_eq!(sim.requests_to(VERSION), 1, "not asked again");
    assert_eq!(
        sim.requests_to("/api/v3/computers-inventory-detail/{id}") - v3_before,
        60
    );
    assert_eq!(
        sim.requests_to("/api/v4/computers-inventory-detail/{id}"),
        0
    );
    // Older than the re-check interval: asked again (once: the run is shorter than it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = support::run(&process(Duration::from_secs(1)), true).await;
    assert!(third.succeeded(), "{third}");
    assert_eq!(sim.requests_to(VERSION), 2);
    sim.stop().await;
}

both_backends!(malformed_record_is_counted_and_skipped);
async fn malformed_record_is_counted_and_skipped(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 50,
        ..SimConfig::default()
    })
    .await;
    sim.corrupt(17);
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(20, FetchStrategy::Inline),
    );
    let summary = support::run(&engine, false).await;
    assert!(
        summary.succeeded(),
        "one bad record does not abort the run: {summary}"
    );
    assert_eq!(summary.counts.failed, 1);
    assert_eq!(summary.counts.upserted, 49);
    let ids: Vec<i64> = support::stored(db)
        .await
        .iter()
        .map(|r| r.jamf_id)
        .collect();
    assert!(!ids.contains(&17));
    assert_eq!(ids.len(), 49);
    sim.stop().await;
}

both_backends!(deleted_between_listing_and_fetch_is_missing_not_failure);
async fn deleted_between_listing_and_fetch_is_missing_not_failure(db: &TestDb) {
    let sim = support::sim(SimConfig {
        computers: 40,
        ..SimConfig::default()
    })
    .await;
    // The first list page is served, then the device disappears before its detail fetch.
    let client = JamfClient::new(support::settings(&sim)).expect("client");
    let err = client
        .computer_detail(ApiVersion::V4, 9999)
        .await
        .expect_err("404");
    assert!(err.is_not_found());
    sim.delete_computer(40);
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(100, FetchStrategy::Detail),
    );
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    assert_eq!(summary.counts.fetched, 39);
    sim.stop().await;
}

#[tokio::test]
async fn throttling_is_retried_with_retry_after() {
    let sim = support::sim(SimConfig {
        computers: 30,
        ..SimConfig::default()
    })
    .await;
    // The gateway throttles the next two requests with `Retry-After: 1`; the client's own
    // backoff (5–100 ms here) is far shorter, so only honouring the header takes 2 s.
    sim.set_faults(Faults {
        outage_requests: 2,
        outage_retry_after_secs: 1,
        ..Faults::default()
    });
    let client = JamfClient::new(support::settings(&sim)).expect("client");
    let started = std::time::Instant::now();
    let version = client
        .server_version()
        .await
        .expect("recovers after throttling");
    assert!(version.is_some());
    let timeline = sim.timeline();
    let throttled: Vec<usize> = timeline
        .iter()
        .enumerate()
        .filter(|(_, (_, _, status))| *status == 429)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        throttled.len(),
        2,
        "the simulator served two 429s: {timeline:?}"
    );
    // Each retry came a full Retry-After after the 429 it answers (timeline times are when
    // the answers went out).
    for i in throttled {
        let (answered, _, _) = timeline[i];
        let (next, _, _) = timeline.get(i + 1).expect("a retry after each 429");
        assert!(
            *next - answered >= Duration::from_millis(990),
            "retried {:?} after a 429 with Retry-After: 1",
            *next - answered
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_and_capped() {
    use futures_util::StreamExt;
    let sim = support::sim(SimConfig {
        computers: 300,
        latency_ms: 2,
        ..SimConfig::default()
    })
    .await;
    for conc in [1u32, 5] {
        sim.reset_stats();
        let mut settings = support::settings(&sim);
        settings.max_concurrency = conc;
        settings.api_version = ApiVersion::V4;
        let client = Arc::new(JamfClient::new(settings).expect("client"));
        let fetched = futures_util::stream::iter(1..=300i64)
            .map(|id| {
                let c = client.clone();
                async move { c.computer_detail(ApiVersion::V4, id).await }
            })
            // More concurrency than allowed: the limiter must hold it back.
            .buffer_unordered(10)
            .filter(|r| futures_util::future::ready(r.is_ok()))
            .count()
            .await;
        assert_eq!(fetched, 300);
        let stats = sim.stats();
        assert_eq!(stats.peak_in_flight, u64::from(conc), "{stats:?}");
        assert_eq!(
            stats.connections_opened,
            u64::from(conc),
            "one connection per slot, reused for 300 requests: {stats:?}"
        );
        client.invalidate_token().await;
        drop(client);
        // Let the server see the previous client's connections close.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_that_outlast_the_token_go_out_with_a_renewed_one() {
    // 2-second tokens, and the first call is throttled twice with Retry-After: 2, so each
    // retry starts after the token it was first sent with has expired.
    let sim = support::sim(SimConfig {
        computers: 10,
        token_ttl_secs: 2,
        faults: Faults {
            outage_requests: 2,
            outage_retry_after_secs: 2,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let client = JamfClient::new(support::settings(&sim)).expect("client");
    let version = client
        .server_version()
        .await
        .expect("answered once the throttling ends");
    assert!(version.is_some());
    let stats = sim.stats();
    assert_eq!(stats.faults_injected, 2, "{stats:?}");
    assert_eq!(
        stats.unauthorized, 0,
        "no attempt went out with an expired token: {stats:?}"
    );
    assert!(
        stats.tokens_issued >= 3,
        "the token was renewed before each retry: {stats:?}"
    );
    sim.stop().await;
}

both_backends!(requests_latency_and_backoff_are_recorded_as_metrics);
async fn requests_latency_and_backoff_are_recorded_as_metrics(db: &TestDb) {
    let handle = jamf_sync::telemetry::install_metrics().expect("recorder");
    let sim = support::sim(SimConfig {
        computers: 60,
        // The version call passes; the first inventory page answers 503 twice.
        faults: Faults {
            outage_after: 1,
            outage_requests: 2,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(10, FetchStrategy::Inline),
    );
    let summary = support::run(&engine, false).await;
    assert!(summary.succeeded(), "{summary}");
    let text = handle.render();
    for needle in [
        "jamf_sync_http_request_duration_seconds_bucket{jamf_instance=\"test\",endpoint=\"/api/v4/computers-inventory\",method=\"GET\",status=\"2xx\"",
        "jamf_sync_http_requests_total{jamf_instance=\"test\",endpoint=\"/api/v4/computers-inventory\",method=\"GET\",status=\"5xx\"}",
        "jamf_sync_http_retries_total{jamf_instance=\"test\",endpoint=\"/api/v4/computers-inventory\",reason=\"server_503\"}",
        "jamf_sync_backoff_seconds_count{jamf_instance=\"test\",reason=\"server_503\"}",
        "jamf_sync_token_refreshes_total{jamf_instance=\"test\",method=\"oauth\"}",
        "jamf_sync_runs_total{jamf_instance=\"test\",kind=\"computers\",result=\"succeeded\"}",
        "jamf_sync_records_total{jamf_instance=\"test\",kind=\"computers\",outcome=\"upserted\"}",
        "# HELP jamf_sync_http_request_duration_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // Labels carry templates, never device ids.
    assert!(!text.contains("computers-inventory-detail/1\""));
    sim.stop().await;
}

#[tokio::test]
async fn sticky_cookie_user_agent_timeouts() {
    let sim = support::sim(SimConfig {
        computers: 20,
        ..SimConfig::default()
    })
    .await;
    let mut settings = support::settings(&sim);
    settings.request_timeout = Duration::from_millis(500);
    let client = JamfClient::new(settings).expect("client");
    assert!(client.server_version().await.expect("version").is_some());
    let stats = sim.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(
        stats.with_sticky_cookie, 1,
        "the cookie set by the first answer is sent back"
    );
    let agent = stats.last_user_agent.unwrap_or_default();
    assert!(agent.starts_with("jamf-sync/"), "{agent}");

    // Answers slower than the request timeout are abandoned and retried.
    sim.set_faults(Faults {
        rate_slow: 1.0,
        slow_ms: 2000,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let client = Arc::new(client);
    let c = client.clone();
    let handle = tokio::spawn(async move { c.server_version().await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.set_faults(Faults::default());
    assert!(handle.await.expect("join").is_ok());
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(
        sim.requests_to("/api/v1/jamf-pro-version") >= 3,
        "{:?}",
        sim.stats()
    );
    client.invalidate_token().await;
    assert_eq!(sim.requests_to("/api/v1/auth/invalidate-token"), 1);
    sim.stop().await;
}
