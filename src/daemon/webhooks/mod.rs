//! Webhooks: near-real-time updates from Jamf, with the daily delta as the safety net.
//!
//! # Flow
//! `POST /webhooks/jamf` (`/webhooks/jamf/NAME` per instance) → authenticate (Basic and/or a configured header, compared in
//! constant time) → read at most `webhooks.max_body_bytes` → parse the envelope ([`event`]) →
//! **write the event to the `webhook_events` table** → answer 202. Only then is the event
//! acknowledged, so a crash after the answer loses nothing: the [`worker`] drains whatever the
//! table holds when the daemon starts again.
//!
//! # Invariants
//! - Nothing is enqueued unless the request authenticated and parsed; refused requests are
//!   counted by reason (401 unauthorized, 400 malformed, 413 too large) and never logged with
//!   their credentials.
//! - Events are hints: the worker fetches each device's full record through the same engine
//!   (and so the same client and limiter) as scheduled syncs, so webhooks and syncs together
//!   stay within Jamf's five connections, and stores what Jamf answers. An unenroll is a
//!   refresh like any other; a device Jamf answers 404 for is marked deleted.

pub mod event;
pub mod worker;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::Notify;

use super::credentials::secret_eq;
use crate::config::WebhookAuth;
use crate::store::{Db, NewWebhookEvent, Store};
use crate::telemetry::metric;
use event::Parsed;

/// The path Jamf posts to.
pub const PATH: &str = "/webhooks/jamf";

/// What the receiving endpoint needs.
#[derive(Debug)]
pub struct Receiver {
    pub instance: String,
    pub auth: WebhookAuth,
    pub max_body_bytes: usize,
    /// The whole body within this (`server.body_timeout_secs`), or 408.
    pub body_timeout: std::time::Duration,
    /// Events waiting at most (`webhooks.max_queued`).
    pub max_queued: i64,
    /// Wakes the worker when an event was queued.
    pub queued: Arc<Notify>,
    /// Served on `webhooks.listen` rather than on `server.listen`.
    pub own_listener: bool,
    /// The queue's database, once connected.
    pub store: Arc<OnceLock<Arc<Db>>>,
}

/// `POST /webhooks/jamf`, for mounting on the daemon's server or a listener of its own.
/// With several instances each has `POST /webhooks/jamf/NAME`; plain `/webhooks/jamf` serves
/// the only instance, and with several answers 404 naming the per-instance paths.
pub fn routes(receivers: &[Arc<Receiver>]) -> Router {
    let mut app = Router::new();
    for r in receivers {
        app = app.merge(
            Router::new()
                .route(&format!("{PATH}/{}", r.instance), post(receive))
                .with_state(r.clone()),
        );
    }
    match receivers {
        [only] => app.merge(
            Router::new()
                .route(PATH, post(receive))
                .with_state(only.clone()),
        ),
        several => {
            let paths: Vec<String> = several
                .iter()
                .map(|r| format!("{PATH}/{}", r.instance))
                .collect();
            app.route(
                PATH,
                post(move || {
                    let paths = paths.clone();
                    async move {
                        answer(
                            StatusCode::NOT_FOUND,
                            json!({
                                "error": "several Jamf instances: post to the instance's own path",
                                "paths": paths,
                            }),
                        )
                    }
                }),
            )
        }
    }
}

impl Receiver {
    /// Whether the request carries every configured credential. Both comparisons always run,
    /// in constant time over the secret, so timing tells nothing about which part was wrong.
    pub fn authenticated(&self, headers: &HeaderMap) -> bool {
        let mut ok = true;
        if let Some((user, password)) = &self.auth.basic {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
                })
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .unwrap_or_default();
            let expected = format!("{user}:{}", password.expose_secret());
            ok &= secret_eq(&given, expected.as_bytes());
        }
        if let Some((name, value)) = &self.auth.header {
            let given = headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
            ok &= secret_eq(given, value.expose_secret().as_bytes());
        }
        ok
    }
}

fn count(instance: &str, event: &str, result: &'static str) {
    metrics::counter!(metric::WEBHOOK_REQUESTS, "jamf_instance" => instance.to_string(), "event" => event.to_string(), "result" => result)
        .increment(1);
}

fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (code, axum::Json(body)).into_response()
}

/// Whether reading the body stopped at `webhooks.max_body_bytes` (a chunked body carries no
/// Content-Length to refuse it by up front).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `POST /webhooks/jamf`.
async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    if !r.authenticated(&headers) {
        count(&r.instance, "unknown", "unauthorized");
        tracing::warn!("webhook refused: missing or wrong credentials");
        let mut resp = answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or wrong credentials"}),
        );
        if r.auth.basic.is_some() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"jamf-sync\""),
            );
        }
        return resp;
    }
    let too_large = || {
        count(&r.instance, "unknown", "too_large");
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("body larger than {} bytes (webhooks.max_body_bytes)", r.max_body_bytes)}),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > r.max_body_bytes) {
        return too_large();
    }
    let read = tokio::time::timeout(r.body_timeout, axum::body::to_bytes(body, r.max_body_bytes));
    let Ok(read) = read.await else {
        // A body trickled in: the connection is not kept for more.
        count(&r.instance, "unknown", "malformed");
        tracing::warn!(
            timeout_secs = r.body_timeout.as_secs(),
            "webhook body not all sent in time (server.body_timeout_secs); refused"
        );
        let mut resp = answer(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "the request body did not arrive in time"}),
        );
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(e) => {
            // The sender went away or the body broke off: nothing to queue, and not "too large".
            count(&r.instance, "unknown", "malformed");
            tracing::warn!(error = %e, "webhook body could not be read");
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "the request body could not be read"}),
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let device = match event::parse(&bytes, content_type) {
        Ok(Parsed::Device(d)) => d,
        Ok(Parsed::Other { name }) => {
            count(&r.instance, "other", "ignored");
            tracing::debug!(event = %name, "webhook event acknowledged, not acted on");
            return answer(
                StatusCode::ACCEPTED,
                json!({"queued": false, "event": name}),
            );
        }
        Err(why) => {
            count(&r.instance, "unknown", "malformed");
            // The reason may quote the body: escaped, as every outside text in a log line.
            let why = crate::domain::text::shown(&why, 300);
            tracing::warn!(error = %why, "malformed webhook refused");
            return answer(StatusCode::BAD_REQUEST, json!({"error": why}));
        }
    };
    let Some(store) = r.store.get() else {
        count(&r.instance, device.event, "unavailable");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "not ready: database not connected yet"}),
        );
    };
    let queued = store
        .enqueue_webhook_event(
            &NewWebhookEvent {
                instance: &r.instance,
                kind: device.kind,
                jamf_id: device.jamf_id,
                event: device.event,
                action: device.action,
                received_at: Utc::now(),
                event_at: device.event_at,
            },
            r.max_queued,
        )
        .await;
    match queued {
        Ok(None) => {
            count(&r.instance, device.event, "queue_full");
            tracing::warn!(
                max_queued = r.max_queued,
                "webhook queue full; event refused (the next delta sync covers the device)"
            );
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the event queue is full"}),
            )
        }
        Ok(Some(id)) => {
            count(&r.instance, device.event, "queued");
            r.queued.notify_one();
            tracing::debug!(
                event = device.event,
                jamf_id = device.jamf_id,
                id,
                "webhook event queued"
            );
            answer(
                StatusCode::ACCEPTED,
                json!({"queued": true, "event": device.event, "id": id}),
            )
        }
        Err(e) => {
            count(&r.instance, device.event, "unavailable");
            tracing::error!(error = %e, "could not queue a webhook event");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "could not store the event; try again"}),
            )
        }
    }
}
