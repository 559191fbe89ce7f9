//! The domain: what jamf-sync knows about devices, runs and Jamf, as plain data. It imports
//! nothing else from the crate, so every other layer can name a device kind or a record
//! without pulling in the client, the store or the engine.
//!
//! Invariants:
//! - a record's column projection is [`DeviceInfo::cells`] (the columns every device has)
//!   followed by [`DeviceRecord::cells`] (its kind's own), in the order of
//!   [`DeviceInfo::COLUMNS`] and [`DeviceRecord::COLUMNS`]; the store writes any record
//!   through them;
//! - [`DeviceRecord::as_of`] is the inventory time Jamf reports for the record (`reportDate` /
//!   last inventory update): the store never replaces a copy with one whose `as_of` is older.

pub mod children;
pub mod facts;
pub mod pacing;
pub mod records;
pub mod run;
pub mod text;
pub mod webhook;

use chrono::{DateTime, Utc};

pub use pacing::{ClassBaseline, PacingMemory, ServerVersion};
pub use records::{Computer, DeviceInfo, MobileDevice};
pub use run::{RunCounts, RunKind, RunStatus, Trigger};
pub use webhook::{WebhookAction, INVENTORY_EVENTS};

/// A kind of device. The string forms name the tables and are stored in `sync_runs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Computers,
    MobileDevices,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Computers, Kind::MobileDevices];

    /// `computers` or `mobile_devices`: the table name and the `sync_runs.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Computers => "computers",
            Kind::MobileDevices => "mobile_devices",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Position in per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            Kind::Computers => 0,
            Kind::MobileDevices => 1,
        }
    }

    /// `device_type` in `extension_attributes`.
    pub fn device_type(self) -> &'static str {
        match self {
            Kind::Computers => "computer",
            Kind::MobileDevices => "mobile_device",
        }
    }
}

/// An extension attribute flattened for the `extension_attributes` table.
#[derive(Debug, Clone, PartialEq)]
pub struct EaValue {
    pub definition_id: String,
    pub name: String,
    /// Values joined with ", " (most EAs have one value).
    pub value: Option<String>,
    pub data_type: Option<String>,
}

/// One projected column value, as the store binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Text(Option<&'a str>),
    Bool(Option<bool>),
    Time(Option<DateTime<Utc>>),
}

impl Cell<'_> {
    /// The value as the change history writes it: text as is, booleans `true`/`false`,
    /// timestamps RFC 3339 in UTC (to the second, as Jamf reports them).
    pub fn history_text(&self) -> Option<String> {
        match self {
            Cell::Text(v) => v.map(str::to_string),
            Cell::Bool(v) => v.map(|b| b.to_string()),
            Cell::Time(v) => v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

/// A device record the store can write, whatever its kind.
pub trait DeviceRecord: std::fmt::Debug + Send + Sync + 'static {
    const KIND: Kind;
    /// The kind's own projected columns (after [`DeviceInfo::COLUMNS`]).
    const COLUMNS: &'static [&'static str];
    /// The column of [`COLUMNS`](Self::COLUMNS) that holds [`as_of`](Self::as_of).
    const AS_OF_COLUMN: &'static str;
    /// Columns that move with every inventory or check-in (the report date, the last
    /// contact): the change history leaves them out, or every report would be a change.
    const MOVING: &'static [&'static str];
    fn jamf_id(&self) -> i64;
    /// The columns every device has.
    fn info(&self) -> &DeviceInfo;
    /// The inventory time Jamf reports; `None` counts as older than any time.
    fn as_of(&self) -> Option<DateTime<Utc>>;
    /// When the request that returned this record was sent: of two copies with the same
    /// `as_of`, the one asked for later is the newer.
    fn fetched_at(&self) -> DateTime<Utc>;
    /// The record as Jamf sent it (JSON text).
    fn raw(&self) -> &str;
    /// Stable hash of [`raw`](Self::raw), to tell changed records from unchanged ones.
    fn raw_hash(&self) -> i64;
    fn extension_attributes(&self) -> &[EaValue];
    /// The child tables' rows of the sections this record carries.
    fn children(&self) -> &[children::Children];
    /// The values of [`COLUMNS`](Self::COLUMNS), in order.
    fn cells(&self) -> Vec<Cell<'_>>;
    /// Every projected column's value: [`DeviceInfo::COLUMNS`], then
    /// [`COLUMNS`](Self::COLUMNS).
    fn all_cells(&self) -> Vec<Cell<'_>> {
        let mut cells = self.info().cells();
        cells.extend(self.cells());
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<R: DeviceRecord>(r: &R) {
        assert_eq!(R::COLUMNS.len(), r.cells().len(), "{:?}", R::KIND);
        assert_eq!(DeviceInfo::COLUMNS.len(), r.info().cells().len());
        let pos = R::COLUMNS.iter().position(|c| *c == R::AS_OF_COLUMN);
        let Some(pos) = pos else {
            panic!("{:?}: AS_OF_COLUMN is not a column", R::KIND)
        };
        assert_eq!(r.cells()[pos], Cell::Time(r.as_of()));
    }

    #[test]
    fn projections_cover_their_columns() {
        let now = Utc::now();
        check(&Computer {
            report_date: Some(now),
            ..Computer::default()
        });
        check(&MobileDevice {
            last_inventory_update: Some(now),
            ..MobileDevice::default()
        });
    }

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("printers"), None);
    }
}
