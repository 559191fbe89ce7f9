//! Webhook requests the endpoint must refuse, and what it must never do with them: enqueue.

use jamf_sync::simulator::webhooks::{envelope, WebhookFormat};
use jamf_sync::simulator::SimConfig;
use jamf_sync::store::Store;

use crate::support;
use crate::support::daemon::Daemon;
use crate::support::db::open;
use crate::webhooks::{computer_event, hook_env, status, sum, PASSWORD, USER};

/// POSTs `size` bytes of a JSON-looking body with chunked transfer encoding (no
/// Content-Length to refuse it by up front) and returns the status code.
async fn chunked_post(base: &str, size: usize) -> u16 {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let head = format!(
        "POST /webhooks/jamf HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         X-Jamf-Sync-Key: header-secret-value\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 512];
    for _ in 0..size / chunk.len() {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        // The server may answer and close before the whole body is sent.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

both_backends!(refused_requests_enqueue_nothing);
async fn refused_requests_enqueue_nothing(db: &support::TestDb) {
    let sim = support::sim(SimConfig {
        computers: 10,
        mobile_devices: 5,
        ..SimConfig::default()
    })
    .await;
    let url = db.url().to_string();
    let d = Daemon::start(
        &sim,
        &url,
        &hook_env(
            "600000",
            &[
                ("JAMF_SYNC__WEBHOOKS__HEADER_NAME", "X-Jamf-Sync-Key"),
                ("JAMF_SYNC__WEBHOOKS__HEADER_VALUE", "header-secret-value"),
                ("JAMF_SYNC__WEBHOOKS__MAX_BODY_BYTES", "2048"),
                ("JAMF_SYNC__WEBHOOKS__MAX_DELAY_SECS", "900"),
            ],
        ),
    );
    d.wait_ready(30).await;
    let (good, ct) = envelope(
        &computer_event(&sim, "ComputerInventoryCompleted", 3),
        WebhookFormat::Json,
        1,
    );
    let send = |user: Option<(&str, &str)>, key: Option<&str>, body: String, ct: &str| {
        let mut req = d
            .http
            .post(format!("{}/webhooks/jamf", d.base))
            .header("content-type", ct.to_string())
            .body(body);
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(k) = key {
            req = req.header("X-Jamf-Sync-Key", k);
        }
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let key = Some("header-secret-value");
    let basic = Some((USER, PASSWORD));
    // Unauthenticated in every way → 401.
    assert_eq!(send(None, None, good.clone(), ct).await, 401);
    assert_eq!(
        send(Some((USER, "wrong")), key, good.clone(), ct).await,
        401
    );
    assert_eq!(
        send(Some(("someone", PASSWORD)), key, good.clone(), ct).await,
        401
    );
    assert_eq!(
        send(basic, None, good.clone(), ct).await,
        401,
        "the header is required too"
    );
    assert_eq!(
        send(basic, Some("header-secret-valuX"), good.clone(), ct).await,
        401
    );
    // Malformed → 400.
    for bad in [
        "",
        "{",
        "<JSSEvent><webhook>",
        r#"{"webhook":{"webhookEvent":"ComputerAdded"},"event":{}}"#,
        "[1,2]",
    ] {
        assert_eq!(
            send(basic, key, bad.to_string(), "application/json").await,
            400,
            "{bad:?}"
        );
    }
    // Oversized → 413, declared or streamed.
    let big = format!(
        r#"{{"webhook":{{"webhookEvent":"ComputerAdded"}},"event":{{"jssID":1,"pad":"{}"}}}}"#,
        "x".repeat(4096)
    );
    assert_eq!(send(basic, key, big, "application/json").await, 413);
    assert_eq!(
        chunked_post(&d.base, 4096).await,
        413,
        "streamed, no length"
    );
    // An event we do not act on: acknowledged, not queued.
    let other = r#"{"webhook":{"id":1,"name":"x","webhookEvent":"ComputerPolicyFinished","eventTimestamp":1},"event":{"jssID":3}}"#;
    assert_eq!(
        send(basic, key, other.to_string(), "application/json").await,
        202
    );
    assert_eq!(
        status(&d).await["webhooks"]["queue_depth"],
        0,
        "nothing refused was queued"
    );
    let db = open(&url).await;
    assert!(db
        .queued_webhook_events("test", chrono::Utc::now(), 10)
        .await
        .expect("queue")
        .is_empty());

    // With every credential: queued.
    assert_eq!(send(basic, key, good, ct).await, 202);
    let queued = db
        .queued_webhook_events("test", chrono::Utc::now(), 10)
        .await
        .expect("queue");
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (
            queued[0].kind.as_str(),
            queued[0].jamf_id,
            queued[0].event.as_str()
        ),
        ("computers", 3, "ComputerInventoryCompleted")
    );
    db.close().await;

    let (_, scrape) = d.get("/metrics").await.expect("metrics");
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "unauthorized")]
        ),
        5.0
    );
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "malformed")]
        ),
        5.0
    );
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "too_large")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "ignored")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "jamf_sync_webhook_requests_total",
            &[("result", "queued")]
        ),
        1.0
    );
    assert!(!scrape.contains(PASSWORD) && !scrape.contains("header-secret-value"));
}

// The queue's cap holds when receivers append at once: on PostgreSQL two transactions once
// both counted the queue one short of full and both appended (issue 27).
both_backends!(the_queue_cap_holds_under_concurrent_appends);
async fn the_queue_cap_holds_under_concurrent_appends(db: &support::TestDb) {
    use jamf_sync::domain::{Kind, WebhookAction};
    use jamf_sync::store::NewWebhookEvent;
    let now = chrono::Utc::now();
    let appends = (0..40).map(|id| {
        let store = db.db.clone();
        tokio::spawn(async move {
            store
                .enqueue_webhook_event(
                    &NewWebhookEvent {
                        instance: "test",
                        kind: Kind::Computers,
                        jamf_id: id,
                        event: "ComputerInventoryCompleted",
                        action: WebhookAction::Refresh,
                        received_at: now,
                        event_at: None,
                    },
                    5,
                )
                .await
        })
    });
    let mut queued = 0;
    for append in appends.collect::<Vec<_>>() {
        if append.await.expect("task").expect("enqueue").is_some() {
            queued += 1;
        }
    }
    assert_eq!(queued, 5, "({})", db.backend());
    assert_eq!(db.db.webhook_queue_depth("test").await.expect("depth"), 5);
}
