//! Webhooks as the simulator stores them and the events it emits: data only, so the state can
//! hold them without knowing how they are served ([`super::webhooks`]).

use serde::{Deserialize, Serialize};

/// Envelope format of emitted events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Xml,
}

/// One event to emit.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub name: &'static str,
    pub jss_id: i64,
    pub udid: String,
    pub serial: String,
    pub device_name: String,
}

/// A webhook stored in the simulator (`/JSSResource/webhooks`).
#[derive(Debug, Clone, Serialize)]
pub struct SimWebhook {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub event: String,
    pub enabled: bool,
    pub authentication_type: String,
    pub username: String,
}
