//! Webhooks in the simulator, both ways: it **emits** Jamf-shaped events (JSON or `<JSSEvent>`
//! XML, with Basic credentials) to a configured URL when its devices change, and it serves the
//! Classic `/JSSResource/webhooks` resource that `jamf-sync webhooks setup` writes to.

pub use super::events::{SimEvent, SimWebhook, WebhookFormat};
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use futures_util::StreamExt;
use quick_xml::escape::escape;
use serde_json::json;
use tokio::sync::mpsc;

use super::classic::{classic_not_found, created, html_status, xml};
use super::state::{lock, SimState};
use super::xml::Element;

/// The envelope Jamf would send for `ev`.
pub fn envelope(ev: &SimEvent, format: WebhookFormat, webhook_id: i64) -> (String, &'static str) {
    let ts = Utc::now().timestamp_millis();
    let computer = ev.name.starts_with("Computer");
    match format {
        WebhookFormat::Json => {
            let device = if computer {
                json!({"jssID": ev.jss_id, "udid": ev.udid, "serialNumber": ev.serial,
                       "deviceName": ev.device_name, "osVersion": "15.1", "userDirectoryID": "-1"})
            } else {
                json!({"jssID": ev.jss_id, "udid": ev.udid, "serialNumber": ev.serial,
                       "deviceName": ev.device_name, "osVersion": "18.1", "modelDisplay": "iPad"})
            };
            let event = if ev.name == "ComputerCheckIn" {
                json!({"computer": device, "trigger": "CHECKIN", "username": ""})
            } else {
                device
            };
            let body = json!({
                "event": event,
                "webhook": {"eventTimestamp": ts, "id": webhook_id,
                            "name": format!("sim {}", ev.name), "webhookEvent": ev.name},
            });
            (body.to_string(), "application/json")
        }
        WebhookFormat::Xml => {
            let device = format!(
                "<jssID>{}</jssID><udid>{}</udid><serialNumber>{}</serialNumber><deviceName>{}</deviceName>",
                ev.jss_id,
                escape(&ev.udid),
                escape(&ev.serial),
                escape(&ev.device_name)
            );
            let event = if ev.name == "ComputerCheckIn" {
                format!("<computer>{device}</computer><trigger>CHECKIN</trigger><username/>")
            } else {
                device
            };
            let body = format!(
                "<JSSEvent><webhook><id>{webhook_id}</id>\
                 <name>sim {n}</name><webhookEvent>{n}</webhookEvent><eventTimestamp>{ts}</eventTimestamp>\
                 </webhook><event>{event}</event></JSSEvent>",
                n = ev.name
            );
            (body, "text/xml; charset=UTF-8")
        }
    }
}

/// Posts queued events to `url`, a few at a time (Jamf sends concurrently too).
pub(super) fn spawn_emitter(
    state: Arc<SimState>,
    url: String,
    format: WebhookFormat,
    basic: Option<(String, String)>,
    rx: mpsc::UnboundedReceiver<SimEvent>,
) {
    // The simulator installs the TLS provider itself: it imports nothing from the client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "simulator: cannot build the webhook client");
            return;
        }
    };
    tokio::spawn(async move {
        let events =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
            );
        events
            .for_each_concurrent(8, |ev| {
                let (body, content_type) = envelope(&ev, format, 1);
                let mut req = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body);
                if let Some((u, p)) = &basic {
                    req = req.basic_auth(u, Some(p));
                }
                let state = state.clone();
                async move {
                    let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
                    let mut inner = lock(&state.inner);
                    if ok {
                        inner.stats.webhooks_sent += 1;
                    } else {
                        inner.stats.webhooks_failed += 1;
                    }
                }
            })
            .await;
    });
}

pub(crate) fn list_xml(hooks: &BTreeMap<i64, SimWebhook>) -> String {
    let items: String = hooks
        .values()
        .map(|h| {
            format!(
                "<webhook><id>{}</id><name>{}</name></webhook>",
                h.id,
                escape(&h.name)
            )
        })
        .collect();
    format!("<webhooks><size>{}</size>{items}</webhooks>", hooks.len())
}

pub async fn list(State(s): State<Arc<SimState>>) -> Response {
    xml(list_xml(&lock(&s.inner).webhooks), StatusCode::OK)
}

pub async fn get_one(State(s): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let inner = lock(&s.inner);
    match id
        .parse::<i64>()
        .ok()
        .and_then(|id| inner.webhooks.get(&id))
    {
        Some(h) => xml(
            format!(
                "<webhook><id>{}</id><name>{}</name>\
                 <enabled>{}</enabled><url>{}</url><content_type>application/json</content_type>\
                 <event>{}</event><authentication_type>{}</authentication_type>\
                 <username>{}</username></webhook>",
                h.id,
                escape(&h.name),
                h.enabled,
                escape(&h.url),
                escape(&h.event),
                escape(&h.authentication_type),
                escape(&h.username)
            ),
            StatusCode::OK,
        ),
        None => classic_not_found(),
    }
}

/// `POST …/id/0` creates (409 on a duplicate name), `PUT …/id/{id}` updates.
pub async fn write(
    State(s): State<Arc<SimState>>,
    method: axum::http::Method,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let doc = match Element::parse(&body) {
        Ok(doc) if doc.name == "webhook" => doc,
        _ => return html_status(StatusCode::BAD_REQUEST, "Problem with XML"),
    };
    let text = |k: &str| doc.text_of(k).unwrap_or("").to_string();
    let mut inner = lock(&s.inner);
    let id = if method == axum::http::Method::POST {
        if inner.webhooks.values().any(|h| h.name == text("name")) {
            return html_status(StatusCode::CONFLICT, "Error: Duplicate name");
        }
        inner.next_webhook_id += 1;
        inner.stats.webhooks_created += 1;
        inner.next_webhook_id
    } else {
        match id
            .parse::<i64>()
            .ok()
            .filter(|id| inner.webhooks.contains_key(id))
        {
            Some(id) => {
                inner.stats.webhooks_updated += 1;
                id
            }
            None => return classic_not_found(),
        }
    };
    let hook = SimWebhook {
        id,
        name: text("name"),
        url: text("url"),
        event: text("event"),
        enabled: text("enabled") == "true",
        authentication_type: text("authentication_type"),
        username: text("username"),
    };
    inner.webhooks.insert(id, hook);
    // The Classic API answers 201 to both POST and PUT.
    created("webhook", id)
}
