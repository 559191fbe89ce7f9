//! The Jamf webhook events jamf-sync acts on. An event is only ever a hint to fetch a device:
//! what is stored is always what Jamf's record says.

use super::Kind;

/// What a queued webhook event asks the worker to do with its device (`webhook_events.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookAction {
    /// The device submitted inventory (or was added/enrolled): fetch its record.
    Refresh,
    /// The device checked in: fetch it only if the stored copy is older than
    /// `webhooks.checkin_refresh_secs` (check-ins come every few minutes per device).
    Checkin,
    /// The device was unenrolled: fetch it like any other (Jamf's record then says
    /// unmanaged); kept apart only for the queue's own bookkeeping.
    Unenroll,
}

impl WebhookAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Refresh => "refresh",
            WebhookAction::Checkin => "checkin",
            WebhookAction::Unenroll => "unenroll",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refresh" => Some(WebhookAction::Refresh),
            "checkin" => Some(WebhookAction::Checkin),
            "unenroll" => Some(WebhookAction::Unenroll),
            _ => None,
        }
    }
}

/// The inventory events jamf-sync acts on: canonical name, device kind, action.
pub const INVENTORY_EVENTS: &[(&str, Kind, WebhookAction)] = &[
    ("ComputerAdded", Kind::Computers, WebhookAction::Refresh),
    (
        "ComputerInventoryCompleted",
        Kind::Computers,
        WebhookAction::Refresh,
    ),
    ("ComputerCheckIn", Kind::Computers, WebhookAction::Checkin),
    (
        "MobileDeviceEnrolled",
        Kind::MobileDevices,
        WebhookAction::Refresh,
    ),
    (
        "MobileDeviceInventoryCompleted",
        Kind::MobileDevices,
        WebhookAction::Refresh,
    ),
    (
        "MobileDeviceUnEnrolled",
        Kind::MobileDevices,
        WebhookAction::Unenroll,
    ),
];

/// The canonical name of an event jamf-sync acts on, whatever its capitalisation.
pub fn canonical(name: &str) -> Option<&'static str> {
    INVENTORY_EVENTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, _, _)| *n)
}
