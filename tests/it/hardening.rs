//! The security and failure review's findings, each pinned by a test: credentials never follow
//! a redirect elsewhere, answers are bounded, an unreachable server fails the CLI fast and
//! loudly, and retries are never silent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use jamf_sync::jamf::{JamfClient, JamfError};
use jamf_sync::simulator::{Faults, SimConfig};

use crate::cli::jamf_sync_async;
use crate::support;

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn token() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"access_token":"t","expires_in":600,"token_type":"Bearer"}"#,
    )
        .into_response()
}

fn settings_for(url: &str) -> jamf_sync::config::JamfSettings {
    support::settings_with_url(url)
}

/// Another origin that counts what reaches it (it answers like a token endpoint).
async fn elsewhere() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let url = serve(Router::new().fallback(any(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            token()
        }
    })))
    .await;
    (url, hits)
}

/// A redirect to `target` with this status.
fn redirect(status: StatusCode, target: String) -> axum::routing::MethodRouter {
    any(move || {
        let target = target.clone();
        async move { (status, [(header::LOCATION, target)], "") }
    })
}

#[tokio::test]
async fn the_token_call_never_follows_a_redirect_with_the_secret() {
    let (elsewhere, hits) = elsewhere().await;
    let target = format!("{elsewhere}/api/v1/oauth/token");
    let jamf = serve(Router::new().route(
        "/api/v1/oauth/token",
        redirect(StatusCode::TEMPORARY_REDIRECT, target),
    ))
    .await;
    let client = JamfClient::new(settings_for(&jamf)).expect("client");
    let err = client
        .server_version()
        .await
        .expect_err("a redirected token call fails");
    assert!(err.to_string().contains("307"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the client secret went elsewhere"
    );
}

#[tokio::test]
async fn a_cross_origin_redirect_of_an_api_call_is_not_followed() {
    let (elsewhere, hits) = elsewhere().await;
    let target = format!("{elsewhere}/api/v1/jamf-pro-version");
    let jamf = serve(
        Router::new()
            .route("/api/v1/oauth/token", post(|| async { token() }))
            .fallback(redirect(StatusCode::FOUND, target)),
    )
    .await;
    let client = JamfClient::new(settings_for(&jamf)).expect("client");
    let err = client.server_version().await.expect_err("not followed");
    assert!(err.to_string().contains("302"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "bearer token sent elsewhere"
    );
}

#[tokio::test]
async fn an_answer_over_the_size_limit_fails_that_request() {
    let big = "x".repeat(3 << 20);
    let streamed = big.clone();
    let jamf = serve(
        Router::new()
            .route("/api/v1/oauth/token", post(|| async { token() }))
            .route(
                "/api/v1/jamf-pro-version",
                any(move || {
                    let big = big.clone();
                    async move { format!(r#"{{"version":"{big}"}}"#) }
                }),
            )
            .route(
                "/api/v1/computers-inventory",
                any(move || {
                    // Chunked, no Content-Length: the limit holds while reading too.
                    let chunks: Vec<Result<String, std::io::Error>> = vec![
                        Ok(r#"{"totalCount":1,"results":[""#.into()),
                        Ok(streamed.clone()),
                    ];
                    async move { Body::from_stream(futures_util::stream::iter(chunks)) }
                }),
            ),
    )
    .await;
    let settings = jamf_sync::config::JamfSettings {
        max_response_bytes: 1 << 20,
        ..settings_for(&jamf)
    };
    let client = JamfClient::new(settings).expect("client");
    let err = client.server_version().await.expect_err("too large");
    assert!(
        matches!(err, JamfError::Decode { .. }) && err.to_string().contains("larger than 1 MiB"),
        "{err}"
    );
    let page = client
        .computers_page(
            jamf_sync::config::ApiVersion::V1,
            jamf_sync::jamf::pro::PageQuery {
                sections: &[],
                page_size: 10,
                filter: None,
                shrinkable: false,
                descending: false,
            },
        )
        .await
        .expect_err("too large while streaming");
    assert!(page.to_string().contains("larger than 1 MiB"), "{page}");
}

#[tokio::test]
async fn the_cli_gives_up_at_once_on_a_server_it_never_reached() {
    // A port nobody listens on: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let out = jamf_sync_async(
        &["sync"],
        &[
            ("JAMF_SYNC__JAMF__URL", &url),
            ("JAMF_SYNC__JAMF__CLIENT_ID", "id"),
            ("JAMF_SYNC__JAMF__CLIENT_SECRET", "secret"),
            ("JAMF_SYNC__DATABASE__URL", &db),
            ("JAMF_SYNC__MOBILE_DEVICES__ENABLED", "true"),
        ],
        dir.path(),
    )
    .await;
    let elapsed = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    // Today's budget is 300 s per request; giving up at once takes well under a minute even
    // on a loaded machine.
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?}: {text}"
    );
    assert!(text.contains("unreachable"), "names the cause: {text}");
    assert!(text.contains(&url), "names the URL: {text}");
    // Both kinds are tried at once, so the time above covers both: each failed run is named.
    assert!(
        text.contains("mobile_devices") && text.contains("computers"),
        "both kinds reported: {text}"
    );
}

#[tokio::test]
async fn retries_are_logged_at_the_default_level() {
    let sim = support::sim(SimConfig {
        computers: 5,
        ..SimConfig::default()
    })
    .await;
    sim.set_faults(Faults {
        outage_requests: 2,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let url = sim.url();
    let out = jamf_sync_async(
        &["sync"],
        &[
            ("JAMF_SYNC__JAMF__URL", &url),
            ("JAMF_SYNC__JAMF__CLIENT_ID", "jamf-sync-sim"),
            ("JAMF_SYNC__JAMF__CLIENT_SECRET", "sim-secret"),
            ("JAMF_SYNC__JAMF__RETRY__INITIAL_BACKOFF_MS", "10"),
            ("JAMF_SYNC__DATABASE__URL", &db),
        ],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("retrying with backoff"))
        .collect();
    // The two 503s may hit one request twice or each kind's first request once (the kinds
    // run at once): one warning per episode either way, each closed by a success line.
    let recovered = stderr
        .lines()
        .filter(|l| l.contains("succeeded after retries"))
        .count();
    assert!(!warned.is_empty(), "{stderr}");
    assert_eq!(
        warned.len(),
        recovered,
        "one line per backoff episode: {stderr}"
    );
    let mut endpoints: Vec<&str> = warned
        .iter()
        .filter_map(|l| l.split("endpoint=").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    assert_eq!(
        endpoints.len(),
        warned.len(),
        "one line per episode: {stderr}"
    );
    for line in &warned {
        assert!(line.contains("endpoint="), "{line}");
        assert!(line.contains("next_attempt_in="), "{line}");
    }
    sim.stop().await;
}

/// A gauge's value for the default instance and a kind.
fn gauge(text: &str, name: &str, kind: &str) -> Option<f64> {
    crate::support::metrics::sample(text, name, &[("jamf_instance", "default"), ("kind", kind)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_and_the_last_success_survives_a_restart() {
    use crate::support::daemon::Daemon;
    let sim = support::sim(SimConfig {
        computers: 20,
        ..SimConfig::default()
    })
    .await;
    // Jamf answers 503 to everything until the outage is lifted.
    sim.set_faults(Faults {
        outage_requests: 1_000_000,
        ..Faults::default()
    });
    let db = support::sqlite().await;
    let never = ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *");
    let env = [
        never,
        ("JAMF_SYNC__JAMF__RETRY__BUDGET_SECS", "1"),
        ("JAMF_SYNC__SYNC__RETRY_INITIAL_SECS", "1"),
        ("JAMF_SYNC__SYNC__RETRY_MAX_SECS", "2"),
    ];
    let mut d = Daemon::start(&sim, db.url(), &env);
    d.wait_for(30, "a failed run with a retry planned", || async {
        let status = d.status().await;
        status["kinds"][0]["last_run"]["status"] == "failed"
            && status["kinds"][0]["next_retry"].is_string()
    })
    .await;
    let (code, body) = d.get("/healthz").await.expect("healthz");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["tasks"]["executor"]["state"], "up", "{health}");
    sim.set_faults(Faults::default());
    d.wait_for(30, "a retry that succeeds", || async {
        let status = d.status().await;
        status["kinds"][0]["last_success"]["trigger"] == "retry"
    })
    .await;
    let status = d.status().await;
    assert!(status["kinds"][0]["next_retry"].is_null(), "{status}");
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    let success = gauge(
        &metrics,
        "jamf_sync_last_success_timestamp_seconds",
        "computers",
    )
    .expect("last success set");
    d.signal("-TERM");
    assert_eq!(d.wait_exit(30), Some(0));

    // A restarted daemon that runs nothing still reports when the last success was.
    let d = Daemon::start(
        &sim,
        db.url(),
        &[never, ("JAMF_SYNC__SYNC__ON_START", "false")],
    );
    d.wait_ready(20).await;
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    let restored = gauge(
        &metrics,
        "jamf_sync_last_success_timestamp_seconds",
        "computers",
    )
    .expect("last success initialised from the database");
    assert!((restored - success).abs() <= 5.0, "{restored} vs {success}");
    assert!(
        gauge(
            &metrics,
            "jamf_sync_last_run_timestamp_seconds",
            "computers"
        )
        .is_some(),
        "{metrics}"
    );
    drop(d);
    sim.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_created_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inventory.db");
    let url = format!("sqlite://{}", path.display());
    let db = jamf_sync::store::Db::connect(
        &jamf_sync::config::DatabaseUrl::parse(secrecy::SecretString::from(url)).expect("url"),
        2,
    )
    .await
    .expect("open");
    // A write makes the WAL and shared-memory files exist.
    jamf_sync::store::Store::interrupt_stale_runs(&db, "x")
        .await
        .expect("write");
    let mut seen = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("inventory.db{suffix}"));
        if let Ok(meta) = std::fs::metadata(&file) {
            seen += 1;
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{} is not private",
                file.display()
            );
        }
    }
    assert!(seen >= 2, "the database and its WAL exist");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_neither_starve_healthz_nor_stay_open() {
    use tokio::io::AsyncReadExt;
    let sim = support::sim(SimConfig {
        computers: 1,
        ..SimConfig::default()
    })
    .await;
    let db = support::sqlite().await;
    let d = crate::support::daemon::spawn_app(
        &sim,
        db.url(),
        &[
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
            ("JAMF_SYNC__SERVER__MAX_CONNECTIONS", "20"),
            ("JAMF_SYNC__SERVER__HEADER_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    d.wait_ready(20).await;
    let addr = d.base.trim_start_matches("http://").to_string();
    // More idle sockets than the cap, sending nothing.
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    let answered = reqwest::Client::new()
        .get(format!("{}/healthz", d.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(
        answered.ok(),
        Some(200),
        "/healthz answers while idle clients hold the cap"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server closes idle sockets: those over the cap within a second or so, those under
    // it once their header timeout (3 s here) has passed.
    let mut buf = [0u8; 64];
    let over_cap = idle.last_mut().expect("sockets");
    let read = tokio::time::timeout(Duration::from_secs(3), over_cap.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection over the cap was closed: {read:?}"
    );
    let under_cap = idle.first_mut().expect("sockets");
    let read = tokio::time::timeout(Duration::from_secs(10), under_cap.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was closed after the header timeout: {read:?}"
    );
    drop(idle);
    d.stop().await.expect("clean shutdown");
    sim.stop().await;
}

// Authenticated webhooks whose bodies trickle in (one byte every half second of 60,000)
// fill every normal connection: probes still answer on the connections over the cap, and
// each trickling request is answered 408 once `server.body_timeout_secs` has passed (issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_webhook_bodies_neither_starve_probes_nor_stay_open() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = support::sim(SimConfig {
        computers: 1,
        ..SimConfig::default()
    })
    .await;
    let db = support::sqlite().await;
    let d = crate::support::daemon::spawn_app(
        &sim,
        db.url(),
        &[
            ("JAMF_SYNC__SYNC__SCHEDULE", "0 0 0 1 1 *"),
            ("JAMF_SYNC__SERVER__MAX_CONNECTIONS", "6"),
            ("JAMF_SYNC__SERVER__BODY_TIMEOUT_SECS", "3"),
            ("JAMF_SYNC__WEBHOOKS__ENABLED", "true"),
            ("JAMF_SYNC__WEBHOOKS__USERNAME", crate::webhooks::USER),
            ("JAMF_SYNC__WEBHOOKS__PASSWORD", crate::webhooks::PASSWORD),
        ],
    )
    .await;
    d.wait_ready(20).await;
    let addr = d.base.trim_start_matches("http://").to_string();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        crate::webhooks::USER,
        crate::webhooks::PASSWORD
    ));
    let head = format!(
        "POST /webhooks/jamf HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    );
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("headers");
        slow.push(s);
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // Keep every body coming, a byte at a time, until the server answers each.
        let mut answers = Vec::new();
        let mut open = slow;
        let deadline = Instant::now() + Duration::from_secs(12);
        while !open.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for mut s in open {
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned())
                    }
                    Ok(_) => answers.push(String::new()),
                    Err(_) => {
                        let _ = s.write_all(b"{").await;
                        still.push(s);
                    }
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (answers, open.len())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let t = Instant::now();
        let code = reqwest::Client::new()
            .get(format!("{}{path}", d.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(
            code.ok(),
            Some(200),
            "{path} answers while webhooks hold the cap"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let (answers, still_open) = trickle.await.expect("trickle");
    assert_eq!(still_open, 0, "every trickling request was ended");
    let timed_out = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    // Those within the cap waited out the body timeout; the ones over it were told to retry.
    assert!(timed_out >= 1, "{answers:?}");
    assert_eq!(
        timed_out + refused + answers.iter().filter(|a| a.is_empty()).count(),
        20,
        "{answers:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3) && started.elapsed() < Duration::from_secs(12),
        "ended by the body timeout: {:?}",
        started.elapsed()
    );
    d.stop().await.expect("clean shutdown");
    sim.stop().await;
}

both_backends!(a_jamf_clock_far_behind_widens_the_delta_overlap);
async fn a_jamf_clock_far_behind_widens_the_delta_overlap(db: &support::TestDb) {
    use jamf_sync::config::{FetchStrategy, SyncConfig};
    use jamf_sync::domain::Kind;
    // Jamf's clock is two hours behind ours; the configured overlap is one minute.
    let sim = support::sim(SimConfig {
        computers: 30,
        clock_offset_secs: -7200,
        ..SimConfig::default()
    })
    .await;
    let cfg = SyncConfig {
        overlap_secs: 60,
        ..support::sync_cfg(100, FetchStrategy::Inline)
    };
    let engine = support::engine(db, support::settings(&sim), cfg);
    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    let offset = support::last_run(db)
        .await
        .clock_offset_ms
        .expect("measured");
    assert!(
        (offset + 7_200_000).abs() < 5_000,
        "the run stored Jamf's offset: {offset} ms"
    );
    // A device submits inventory now, by Jamf's clock: two hours before our cursor.
    sim.touch_ids(&[7]);
    let reported = sim.computer(7).expect("device").report_date;
    let second = support::run(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    let stored = support::stored_device(db, Kind::Computers, 7).await;
    assert_eq!(
        stored.as_of.map(|t| t.timestamp()),
        Some(reported.timestamp()),
        "the delta run read back far enough to see it"
    );
    sim.stop().await;
}

/// `(jamf_id, attempts, error)` of every computer recorded in `sync_failures`.
async fn failing(db: &support::TestDb) -> Vec<(i64, i32, String)> {
    use jamf_sync::store::Store;
    db.db
        .sync_failures("test", jamf_sync::domain::Kind::Computers)
        .await
        .expect("failures")
        .into_iter()
        .map(|f| (f.jamf_id, f.attempts, f.error))
        .collect()
}

/// A simulator of `computers` computers, device `broken` broken, and an engine over it.
async fn broken_fleet(
    db: &support::TestDb,
    computers: usize,
    broken: i64,
    strategy: jamf_sync::config::FetchStrategy,
    page: u32,
) -> (
    jamf_sync::simulator::Simulator,
    jamf_sync::sync::Engine<jamf_sync::store::Db>,
) {
    let sim = support::sim(SimConfig {
        computers,
        ..SimConfig::default()
    })
    .await;
    sim.set_broken(broken, true);
    let engine = support::engine(
        db,
        support::settings(&sim),
        support::sync_cfg(page, strategy),
    );
    (sim, engine)
}

both_backends!(a_device_jamf_fails_on_is_isolated_recorded_and_retried);
async fn a_device_jamf_fails_on_is_isolated_recorded_and_retried(db: &support::TestDb) {
    use jamf_sync::config::FetchStrategy;
    use jamf_sync::domain::Kind;
    // Jamf answers 500 for any page holding device 37; device 5's name holds a NUL, which
    // PostgreSQL cannot store in `jsonb` or `text`.
    let (sim, engine) = broken_fleet(db, 120, 37, FetchStrategy::Inline, 50).await;
    let mut five = sim.take_computer(5).expect("device 5");
    five.name = "bad\u{0}name".into();
    sim.put_computer(five);
    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.counts.failed, 1, "{first}");
    assert_eq!(support::stored(db).await.len(), 119);
    assert!(
        support::cursor(db).await.is_some(),
        "the run moved the cursor"
    );
    let name = support::stored_device(db, Kind::Computers, 5)
        .await
        .info
        .name;
    assert_eq!(name.as_deref(), Some("bad\u{fffd}name"));
    let failing_now = failing(db).await;
    assert_eq!(failing_now.len(), 1, "{failing_now:?}");
    assert_eq!((failing_now[0].0, failing_now[0].1), (37, 1));
    assert!(failing_now[0].2.contains("500"), "{}", failing_now[0].2);

    // Still broken: the next run retries it and counts the attempt.
    let second = support::run(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    let attempts: Vec<i32> = failing(db).await.iter().map(|f| f.1).collect();
    assert_eq!(attempts, vec![2]);

    // Mended in Jamf: the next run reads it, although it did not change, and clears the row.
    sim.set_broken(37, false);
    let third = support::run(&engine, false).await;
    assert!(third.succeeded(), "{third}");
    assert!(failing(db).await.is_empty());
    assert_eq!(support::stored(db).await.len(), 120);
    sim.stop().await;
}

both_backends!(a_detail_record_jamf_fails_on_does_not_fail_the_run);
async fn a_detail_record_jamf_fails_on_does_not_fail_the_run(db: &support::TestDb) {
    let (sim, engine) =
        broken_fleet(db, 40, 12, jamf_sync::config::FetchStrategy::Detail, 20).await;
    let run = support::run(&engine, false).await;
    assert!(run.succeeded(), "{run}");
    assert_eq!((run.counts.fetched, run.counts.failed), (39, 1), "{run}");
    let ids: Vec<i64> = failing(db).await.iter().map(|f| f.0).collect();
    assert_eq!(ids, vec![12]);
    sim.stop().await;
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_against_a_custom_ca() {
    use jamf_sync::config::DatabaseUrl;
    use jamf_sync::store::{Db, Store};
    let ca = std::env::var("TEST_PG_CA").expect(
        "TEST_PG_CA names the CA of the test server's certificate (scripts/test.sh sets it up)",
    );
    let db = support::postgres().await;
    let mut url = url::Url::parse(db.url()).expect("url");
    url.set_host(Some("localhost")).expect("host");
    let connect = |root: &str, host: &str| {
        let mut u = url.clone();
        u.set_host(Some(host)).expect("host");
        u.set_query(Some(&format!("sslmode=verify-full&sslrootcert={root}")));
        async move {
            Db::connect(
                &DatabaseUrl::parse(secrecy::SecretString::from(u.to_string())).expect("url"),
                1,
            )
            .await
        }
    };
    let verified = connect(&ca, "localhost")
        .await
        .expect("verify-full with the CA");
    assert_eq!(
        verified
            .count_devices("x", jamf_sync::domain::Kind::Computers)
            .await
            .expect("query"),
        0
    );
    verified.close().await;
    // Another CA, or a name the certificate does not carry: refused.
    let other = "/etc/ssl/certs/ca-certificates.crt";
    assert!(
        connect(other, "localhost").await.is_err(),
        "a certificate from another CA"
    );
    assert!(
        connect(&ca, "127.0.0.1").await.is_err(),
        "a host name the certificate lacks"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_fails_the_request_at_once() {
    let jamf = serve(
        Router::new()
            .route("/api/v1/oauth/token", post(|| async { token() }))
            .fallback(any(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "18446744073709551615")],
                    "",
                )
            })),
    )
    .await;
    let client = JamfClient::new(settings_for(&jamf)).expect("client");
    let started = Instant::now();
    let err = client
        .server_version()
        .await
        .expect_err("throttled past the budget");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "never slept: {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("429"), "{err}");
}

both_backends!(a_webhook_refresh_isolates_the_device_jamf_fails_on);
async fn a_webhook_refresh_isolates_the_device_jamf_fails_on(db: &support::TestDb) {
    let (sim, engine) =
        broken_fleet(db, 30, 12, jamf_sync::config::FetchStrategy::Inline, 100).await;
    // One refresh request covers both; Jamf fails the whole page because of device 12.
    let done = engine
        .refresh(jamf_sync::domain::Kind::Computers, &[3, 12, 20])
        .await
        .expect("the others are refreshed");
    assert_eq!(done.stored, vec![3, 20]);
    assert_eq!(done.failed, vec![12]);
    sim.stop().await;
}

#[test]
fn a_jamf_ca_file_that_is_not_a_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").expect("write");
    let settings = jamf_sync::config::JamfSettings {
        ca_file: Some(path.clone()),
        ..support::settings_with_url("https://jamf.example.com")
    };
    let err = JamfClient::new(settings)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("jamf.ca_file"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

both_backends!(a_failing_device_deleted_in_jamf_stops_being_retried);
async fn a_failing_device_deleted_in_jamf_stops_being_retried(db: &support::TestDb) {
    let (sim, engine) =
        broken_fleet(db, 30, 12, jamf_sync::config::FetchStrategy::Inline, 10).await;
    let first = support::run(&engine, false).await;
    assert!(first.succeeded(), "{first}");
    assert_eq!(failing(db).await.len(), 1);
    // Deleted in Jamf: the next run's retry finds it gone (404 on a direct request).
    assert!(sim.delete_computer(12));
    let second = support::run(&engine, false).await;
    assert!(second.succeeded(), "{second}");
    assert!(failing(db).await.is_empty(), "no longer retried");
    sim.stop().await;
}
