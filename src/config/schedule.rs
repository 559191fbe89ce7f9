//! Cron schedules read in a time zone (`sync.schedule`, `mobile_devices.schedule`,
//! `reconcile.schedule`, all in `sync.timezone`).
//!
//! Next fire times are computed with croner in the configured `chrono-tz` zone, so a schedule
//! keeps its local time across daylight-saving changes (tokio-cron-scheduler's own
//! time-zone-aware jobs keep the offset they were created with; see the daemon's scheduler).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::ConfigError;

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
    pub expr: String,
}

impl Schedule {
    /// Parses a cron expression (5 or 6 fields) given by config key `key`, and an IANA time
    /// zone name (`sync.timezone`).
    pub fn parse(key: &str, expr: &str, tz: &str) -> Result<Schedule, ConfigError> {
        let cron = croner::Cron::from_str(expr.trim())
            .map_err(|e| ConfigError::new(key, format!("not a cron expression ({e}): {expr:?}")))?;
        let tz = Tz::from_str(tz.trim()).map_err(|_| {
            ConfigError::new(
                "sync.timezone",
                format!("unknown time zone {tz:?}; use an IANA name such as Europe/Berlin"),
            )
        })?;
        Ok(Schedule {
            cron,
            tz,
            expr: expr.trim().to_string(),
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The gap between the next two fire times: what "the schedule interval" means for
    /// start-up catch-up.
    pub fn interval(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let a = self.next_after(now)?;
        let b = self.next_after(a)?;
        Some(b - a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn parse(expr: &str, tz: &str) -> Schedule {
        Schedule::parse("sync.schedule", expr, tz).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn five_and_six_fields() {
        let s = parse("0 2 * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-11-24T01:00:00Z")),
            Some(utc("2026-11-24T02:00:00Z"))
        );
        let s = parse("*/2 * * * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-11-24T01:00:00Z")),
            Some(utc("2026-11-24T01:00:02Z"))
        );
        assert_eq!(
            s.interval(utc("2026-11-24T01:00:00Z")),
            Some(chrono::Duration::seconds(2))
        );
    }

    #[test]
    fn errors_name_the_key() {
        let key = |r: Result<Schedule, ConfigError>| r.err().map(|e| e.key);
        assert_eq!(
            key(Schedule::parse("reconcile.schedule", "nope", "UTC")).as_deref(),
            Some("reconcile.schedule")
        );
        assert_eq!(
            key(Schedule::parse("sync.schedule", "0 2 * * *", "Mars/Base")).as_deref(),
            Some("sync.timezone")
        );
    }

    #[test]
    fn daylight_saving_boundaries_keep_local_time() {
        // 04:00 in Berlin: CET is UTC+1, CEST is UTC+2; 2026 switches on March 29 and
        // October 25.
        let s = parse("0 0 4 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc("2026-03-27T12:00:00Z")),
            Some(utc("2026-03-28T03:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-23T12:00:00Z")),
            Some(utc("2026-10-24T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T03:00:00Z"))
        );
    }
}
