//! The webhook queue worker: drains `webhook_events` into fresh device records.
//!
//! # Design
//! - **Coalescing.** Events are grouped per device. A device is due once no new event for it
//!   arrived for `webhooks.coalesce_ms` (or its first event is `max_delay_secs` old), so the
//!   handful of events Jamf sends around one inventory costs one fetch. [`plan`] is pure and
//!   unit-tested.
//! - **Exactly the events read.** A fetch deletes only the events that were read before it
//!   started; an event that arrives during the fetch stays queued and causes a later fetch, so
//!   no inventory newer than the stored record is ever acknowledged away.
//! - **Check-ins** alone refetch a device only when its stored copy is older than
//!   `checkin_refresh_secs`.
//! - **Failures.** A failed fetch (Jamf down, throttled past the retry budget) defers the
//!   device's events with exponential backoff; after `max_attempts` they are dropped, logged and
//!   counted, and the next delta sync picks the device up. A device Jamf no longer has is
//!   counted `missing` and marked deleted. An unenroll is a refresh like any other: the copy
//!   says what Jamf's record says (unmanaged), never a local edit a later sync could not
//!   correct.
//! - **Shutdown.** The worker stops between batches; whatever is still queued stays in the
//!   table for the next start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::config::WebhooksConfig;
use crate::domain::{Kind, WebhookAction};
use crate::store::{QueuedEvent, Store};
use crate::sync::Engine;
use crate::telemetry::metric;

/// Events read from the queue per pass.
const READ_LIMIT: i64 = 20_000;
/// Longest sleep of an idle worker (it also wakes on every queued event).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// First retry delay of a failed fetch; doubles per attempt up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(2);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// The timing rules of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub coalesce: chrono::Duration,
    pub max_delay: chrono::Duration,
}

impl Timing {
    pub fn from_config(cfg: &WebhooksConfig) -> Self {
        Timing {
            coalesce: chrono::Duration::milliseconds(cfg.coalesce_ms as i64),
            max_delay: chrono::Duration::seconds(cfg.max_delay_secs as i64),
        }
    }
}

/// The queued events of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvents {
    pub kind: Kind,
    pub jamf_id: i64,
    pub event_ids: Vec<i64>,
    pub received: Vec<DateTime<Utc>>,
    /// Anything but check-ins asks for a fetch regardless of the stored copy's age.
    pub checkin_only: bool,
    /// Most failed attempts of any of its events.
    pub attempts: i32,
    /// Not before this (retry backoff).
    pub not_before: DateTime<Utc>,
}

impl DeviceEvents {
    fn first(&self) -> Option<DateTime<Utc>> {
        self.received.iter().min().copied()
    }

    fn last(&self) -> Option<DateTime<Utc>> {
        self.received.iter().max().copied()
    }

    /// When this device becomes due.
    pub fn due_at(&self, t: Timing) -> DateTime<Utc> {
        let (Some(first), Some(last)) = (self.first(), self.last()) else {
            return self.not_before;
        };
        (last + t.coalesce)
            .min(first + t.max_delay)
            .max(self.not_before)
    }
}

/// What one pass should do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Devices to handle now, in order of their first event.
    pub due: Vec<DeviceEvents>,
    /// When the earliest device not yet due becomes due.
    pub next_due: Option<DateTime<Utc>>,
    /// Rows this version cannot read (unknown kind or action): removed with a warning.
    pub unreadable: Vec<i64>,
}

/// Groups queued events per device and picks the due ones. Pure.
pub fn plan(events: &[QueuedEvent], now: DateTime<Utc>, t: Timing) -> Plan {
    let mut out = Plan::default();
    let mut devices: BTreeMap<(usize, i64), DeviceEvents> = BTreeMap::new();
    let mut order: Vec<(usize, i64)> = Vec::new();
    for e in events {
        let (Some(kind), Some(action)) = (Kind::parse(&e.kind), WebhookAction::parse(&e.action))
        else {
            out.unreadable.push(e.id);
            continue;
        };
        let key = (kind.index(), e.jamf_id);
        let d = devices.entry(key).or_insert_with(|| {
            order.push(key);
            DeviceEvents {
                kind,
                jamf_id: e.jamf_id,
                event_ids: Vec::new(),
                received: Vec::new(),
                checkin_only: true,
                attempts: 0,
                not_before: e.not_before,
            }
        });
        d.event_ids.push(e.id);
        d.received.push(e.received_at);
        d.checkin_only &= action == WebhookAction::Checkin;
        d.attempts = d.attempts.max(e.attempts);
        d.not_before = d.not_before.max(e.not_before);
    }
    for key in order {
        let Some(d) = devices.remove(&key) else {
            continue;
        };
        let due_at = d.due_at(t);
        if due_at <= now {
            out.due.push(d);
        } else {
            out.next_due = Some(out.next_due.map_or(due_at, |n| n.min(due_at)));
        }
    }
    out
}

/// Retry delay after `attempts` failed attempts.
pub fn retry_delay(attempts: i32) -> Duration {
    let exp = attempts.clamp(0, 16) as u32;
    crate::daemon::doubling(FIRST_RETRY_DELAY, exp, MAX_RETRY_DELAY)
}

/// Drains the queue until `shutdown` turns true.
pub async fn run<S: Store>(
    engine: Arc<Engine<S>>,
    cfg: WebhooksConfig,
    queued: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let timing = Timing::from_config(&cfg);
    tracing::info!(
        coalesce_ms = cfg.coalesce_ms,
        max_delay_secs = cfg.max_delay_secs,
        "webhook worker started"
    );
    'work: loop {
        if *shutdown.borrow() {
            break;
        }
        let now = Utc::now();
        let span = tracing::info_span!("webhook_worker", instance = engine.client().instance());
        let next = match pass(&engine, &cfg, timing, now).instrument(span).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "webhook queue: database error; retrying");
                Some(now + chrono::Duration::seconds(5))
            }
        };
        let mut wake = tokio::time::Instant::now()
            + next
                .map(|n| (n - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
        // A new event is due `coalesce` after it arrived at the earliest: only bring the
        // next pass forward to then, instead of re-reading the queue on every event.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                _ = queued.notified() => {
                    let earliest = tokio::time::Instant::now()
                        + timing.coalesce.to_std().unwrap_or(Duration::ZERO);
                    wake = wake.min(earliest);
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break 'work;
                    }
                }
            }
        }
    }
    tracing::info!("webhook worker stopped; queued events stay for the next start");
}

/// One pass over the queue; returns when the next device becomes due.
async fn pass<S: Store>(
    engine: &Engine<S>,
    cfg: &WebhooksConfig,
    timing: Timing,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, crate::store::StoreError> {
    let store = engine.store();
    let instance = engine.client().instance().to_string();
    let events = store
        .queued_webhook_events(&instance, now, READ_LIMIT)
        .await?;
    let depth = if (events.len() as i64) < READ_LIMIT {
        events.len() as i64
    } else {
        store.webhook_queue_depth(&instance).await?
    };
    metrics::gauge!(metric::WEBHOOK_QUEUE_DEPTH, "jamf_instance" => instance.to_string())
        .set(depth as f64);
    let plan = plan(&events, now, timing);
    if !plan.unreadable.is_empty() {
        tracing::warn!(
            n = plan.unreadable.len(),
            "removing queued webhook events this version cannot read"
        );
        store
            .delete_webhook_events(&instance, &plan.unreadable)
            .await?;
    }
    if plan.due.is_empty() {
        return Ok(plan.next_due);
    }
    for &kind in Kind::ALL {
        let due: Vec<&DeviceEvents> = plan.due.iter().filter(|d| d.kind == kind).collect();
        if due.is_empty() {
            continue;
        }
        handle_kind(engine, cfg, &instance, kind, &due).await?;
    }
    let left = store.webhook_queue_depth(&instance).await?;
    metrics::gauge!(metric::WEBHOOK_QUEUE_DEPTH, "jamf_instance" => instance.to_string())
        .set(left as f64);
    // Events that arrived while fetching, or deferred ones: the next pass works out when.
    Ok((left > 0).then(Utc::now))
}

async fn handle_kind<S: Store>(
    engine: &Engine<S>,
    cfg: &WebhooksConfig,
    instance: &str,
    kind: Kind,
    due: &[&DeviceEvents],
) -> Result<(), crate::store::StoreError> {
    let store = engine.store();
    let label = kind.as_str();
    // Check-ins of devices stored recently need no fetch.
    let mut fresh = std::collections::HashSet::new();
    if cfg.checkin_refresh_secs > 0 {
        let checkins: Vec<i64> = due
            .iter()
            .filter(|d| d.checkin_only)
            .map(|d| d.jamf_id)
            .collect();
        if !checkins.is_empty() {
            let horizon = Utc::now() - chrono::Duration::seconds(cfg.checkin_refresh_secs as i64);
            for (id, synced) in store.synced_at(instance, kind, &checkins).await? {
                if synced > horizon {
                    fresh.insert(id);
                }
            }
        }
    }
    let (skip, fetch): (Vec<&DeviceEvents>, Vec<&DeviceEvents>) = due
        .iter()
        .copied()
        .partition(|d| d.checkin_only && fresh.contains(&d.jamf_id));
    if !skip.is_empty() {
        let ids: Vec<i64> = skip.iter().flat_map(|d| d.event_ids.clone()).collect();
        store.delete_webhook_events(instance, &ids).await?;
        metrics::counter!(metric::WEBHOOK_DEVICES, "jamf_instance" => instance.to_string(), "kind" => label, "outcome" => "skipped_fresh")
            .increment(skip.len() as u64);
    }
    let chunk = engine.refresh_chunk();
    for group in fetch.chunks(chunk) {
        let ids: Vec<i64> = group.iter().map(|d| d.jamf_id).collect();
        match engine.refresh(kind, &ids).await {
            Ok(done) => {
                let handled: Vec<i64> = group.iter().flat_map(|d| d.event_ids.clone()).collect();
                store.delete_webhook_events(instance, &handled).await?;
                let stored_at = Utc::now();
                let stored: std::collections::HashSet<i64> = done.stored.iter().copied().collect();
                for d in group.iter().filter(|d| stored.contains(&d.jamf_id)) {
                    for received in &d.received {
                        let secs =
                            (stored_at - *received).num_milliseconds().max(0) as f64 / 1000.0;
                        metrics::histogram!(metric::WEBHOOK_LATENCY, "jamf_instance" => instance.to_string(), "kind" => label).record(secs);
                    }
                }
                for (outcome, n) in [
                    ("stored", done.stored.len()),
                    ("missing", done.missing.len()),
                    ("failed", done.failed.len()),
                ] {
                    metrics::counter!(metric::WEBHOOK_DEVICES, "jamf_instance" => instance.to_string(), "kind" => label, "outcome" => outcome)
                        .increment(n as u64);
                }
                tracing::info!(
                    kind = label,
                    devices = ids.len(),
                    events = handled.len(),
                    stored = done.stored.len(),
                    changed = done.upserted,
                    stale = done.stale,
                    missing = done.missing.len(),
                    failed = done.failed.len(),
                    "webhook refresh"
                );
            }
            Err(e) => {
                let error = e.to_string();
                let (drop, retry): (Vec<&&DeviceEvents>, Vec<&&DeviceEvents>) = group
                    .iter()
                    .partition(|d| d.attempts + 1 >= cfg.max_attempts as i32);
                if !drop.is_empty() {
                    let ids: Vec<i64> = drop.iter().flat_map(|d| d.event_ids.clone()).collect();
                    store.delete_webhook_events(instance, &ids).await?;
                    metrics::counter!(metric::WEBHOOK_DEVICES, "jamf_instance" => instance.to_string(), "kind" => label, "outcome" => "dropped")
                        .increment(drop.len() as u64);
                    tracing::error!(
                        kind = label,
                        devices = drop.len(),
                        error = %error,
                        "webhook events dropped after webhooks.max_attempts; the next delta sync covers them"
                    );
                }
                for d in retry {
                    let not_before = Utc::now()
                        + chrono::Duration::from_std(retry_delay(d.attempts))
                            .unwrap_or(chrono::Duration::seconds(600));
                    store
                        .defer_webhook_events(instance, &d.event_ids, not_before, &error)
                        .await?;
                    metrics::counter!(metric::WEBHOOK_DEVICES, "jamf_instance" => instance.to_string(), "kind" => label, "outcome" => "retried")
                        .increment(1);
                }
                tracing::warn!(kind = label, devices = ids.len(), error = %error, "webhook refresh failed; will retry");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    fn ev(id: i64, kind: &str, jamf_id: i64, action: &str, received_ms: i64) -> QueuedEvent {
        QueuedEvent {
            id,
            kind: kind.into(),
            jamf_id,
            event: "ComputerInventoryCompleted".into(),
            action: action.into(),
            received_at: at(received_ms),
            event_at: None,
            attempts: 0,
            not_before: at(received_ms),
        }
    }

    const T: Timing = Timing {
        coalesce: chrono::Duration::milliseconds(1000),
        max_delay: chrono::Duration::milliseconds(10_000),
    };

    #[test]
    fn repeated_events_of_a_device_coalesce_into_one() {
        let events = [
            ev(1, "computers", 7, "refresh", 0),
            ev(2, "computers", 7, "checkin", 400),
            ev(3, "computers", 7, "refresh", 800),
            ev(4, "mobile_devices", 7, "unenroll", 100),
        ];
        // At 1.5 s the computer's last event is only 0.7 s old: not due; the mobile is.
        let p = plan(&events, at(1500), T);
        assert_eq!(p.due.len(), 1);
        assert_eq!(p.due[0].kind, Kind::MobileDevices);
        assert!(!p.due[0].checkin_only);
        assert_eq!(p.next_due, Some(at(1800)));
        // At 1.8 s the computer is due with all three events, not check-in only.
        let p = plan(&events, at(1800), T);
        assert_eq!(p.due.len(), 2);
        let c = &p.due[0];
        assert_eq!((c.kind, c.jamf_id), (Kind::Computers, 7));
        assert_eq!(c.event_ids, vec![1, 2, 3]);
        assert!(!c.checkin_only);
        assert_eq!(p.next_due, None);
    }

    #[test]
    fn a_busy_device_is_due_after_max_delay() {
        // An event every 0.5 s: never quiet for 1 s, due 10 s after the first.
        let events: Vec<QueuedEvent> = (0..30)
            .map(|i| ev(i, "computers", 1, "refresh", i * 500))
            .collect();
        let until = |now: i64| -> Vec<QueuedEvent> {
            events
                .iter()
                .filter(|e| e.received_at <= at(now))
                .cloned()
                .collect()
        };
        assert!(plan(&until(9_999), at(9_999), T).due.is_empty());
        assert_eq!(plan(&until(10_000), at(10_000), T).due.len(), 1);
    }

    #[test]
    fn check_in_only_and_backoff_and_unreadable_rows() {
        let mut e = ev(1, "computers", 2, "checkin", 0);
        e.attempts = 3;
        e.not_before = at(60_000);
        let events = [
            e,
            ev(2, "printers", 1, "refresh", 0),
            ev(3, "computers", 3, "explode", 0),
        ];
        let p = plan(&events, at(5_000), T);
        assert!(p.due.is_empty(), "held back by not_before");
        assert_eq!(p.next_due, Some(at(60_000)));
        assert_eq!(p.unreadable, vec![2, 3]);
        let p = plan(&events, at(60_000), T);
        assert_eq!(p.due.len(), 1);
        assert!(p.due[0].checkin_only);
        assert_eq!(p.due[0].attempts, 3);
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(0), Duration::from_secs(2));
        assert_eq!(retry_delay(1), Duration::from_secs(4));
        assert_eq!(retry_delay(5), Duration::from_secs(64));
        assert_eq!(retry_delay(30), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(-1), Duration::from_secs(2));
    }
}
