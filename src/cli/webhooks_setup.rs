//! `jamf-sync webhooks setup`: creates or updates, in Jamf, one webhook per inventory event
//! jamf-sync acts on, pointing at `webhooks.public_url` with the configured Basic credentials.
//!
//! Idempotent: webhooks are found by name (`jamf-sync <Event>`) and updated in place, so
//! running it again after changing the URL or the password never creates duplicates.

use std::process::ExitCode;

use quick_xml::escape::escape as xml_escape;
use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError, JamfSettings};
use crate::domain::{Kind, INVENTORY_EVENTS};
use crate::jamf::JamfClient;

/// What setup did with one event's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupResult {
    pub event: &'static str,
    pub id: i64,
    pub created: bool,
}

/// The name jamf-sync gives the webhook of an event.
pub fn webhook_name(event: &str) -> String {
    format!("jamf-sync {event}")
}

/// The Classic XML of one webhook.
pub fn webhook_xml(event: &str, url: &str, username: &str, password: &str) -> String {
    format!(
        "<webhook><name>{}</name><enabled>true</enabled><url>{}</url>\
         <content_type>application/json</content_type><event>{event}</event>\
         <connection_timeout>5</connection_timeout><read_timeout>5</read_timeout>\
         <authentication_type>BASIC</authentication_type><username>{}</username>\
         <password>{}</password></webhook>",
        xml_escape(webhook_name(event)),
        xml_escape(url),
        xml_escape(username),
        xml_escape(password),
    )
}

/// Where Jamf should post, and the Basic credentials it should send.
/// With several instances the daemon takes each one's events at `/webhooks/jamf/NAME`: a
/// public URL ending in the shared path gets the instance's name appended (one set for the
/// instance alone is left as given).
pub fn instance_url(url: &str, instance: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/webhooks/jamf") {
        format!("{trimmed}/{instance}")
    } else {
        url.to_string()
    }
}

pub struct Target {
    pub url: String,
    pub username: String,
    pub password: secrecy::SecretString,
}

/// Checks what setup needs from the configuration: the public URL and Basic credentials.
pub fn target(cfg: &Config) -> Result<Target, ConfigError> {
    let url = cfg.webhooks.public_url.clone().ok_or_else(|| {
        ConfigError::new(
            "webhooks.public_url",
            "missing: the URL Jamf should post to, e.g. https://jamf-sync.example.com/webhooks/jamf",
        )
    })?;
    let auth = cfg.webhook_auth()?;
    let (user, password) = auth.basic.ok_or_else(|| {
        ConfigError::new(
            "webhooks.username",
            "setup configures Basic authentication: set webhooks.username and webhooks.password \
             (header authentication can be set in Jamf's web interface instead)",
        )
    })?;
    Ok(Target {
        url,
        username: user,
        password,
    })
}

/// Creates or updates the webhooks of these kinds' events.
pub async fn setup(
    client: &JamfClient,
    target: &Target,
    kinds: &[Kind],
) -> anyhow::Result<Vec<SetupResult>> {
    let existing = client.webhooks().await?;
    let mut out = Vec::new();
    for (event, _, _) in INVENTORY_EVENTS.iter().filter(|e| kinds.contains(&e.1)) {
        let name = webhook_name(event);
        let id = existing.iter().find(|(_, n)| *n == name).map(|(id, _)| *id);
        let xml = webhook_xml(
            event,
            &target.url,
            &target.username,
            target.password.expose_secret(),
        );
        let new_id = client.put_webhook(id, &xml).await?;
        out.push(SetupResult {
            event,
            id: new_id,
            created: id.is_none(),
        });
    }
    Ok(out)
}

/// `jamf-sync webhooks setup`.
pub(super) async fn command(cfg: &Config, settings: JamfSettings) -> anyhow::Result<ExitCode> {
    let target = match target(cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let client = JamfClient::new(settings)?;
    let kinds = super::kinds_to_sync(cfg, None);
    let result = setup(&client, &target, &kinds).await;
    client.invalidate_token().await;
    for r in result? {
        println!(
            "{} webhook {:?} (id {}) for {}",
            if r.created { "created" } else { "updated" },
            webhook_name(r.event),
            r.id,
            r.event
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_xml_escapes_and_parses_back() {
        let xml = webhook_xml(
            "ComputerAdded",
            "https://h.example.com/webhooks/jamf?a=1&b=2",
            "jamf<hook>",
            "p&ss'\"",
        );
        let Ok((root, json)) = crate::jamf::xml::xml_to_json(&xml) else {
            panic!("not well-formed: {xml}");
        };
        assert_eq!(root, "webhook");
        assert_eq!(json["name"], "jamf-sync ComputerAdded");
        assert_eq!(json["url"], "https://h.example.com/webhooks/jamf?a=1&b=2");
        assert_eq!(json["username"], "jamf<hook>");
        assert_eq!(json["password"], "p&ss'\"");
        assert_eq!(json["event"], "ComputerAdded");
        assert_eq!(json["authentication_type"], "BASIC");
    }
}
