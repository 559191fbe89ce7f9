//! The domain: what jamf-sync knows about devices, runs and Jamf, as plain data. It imports
//! nothing else from the crate, so every other layer can name a device kind or a record
//! without pulling in the client, the store or the engine.
//!
//! Invariants:
//! - a record's column projection is [`Record::shared_cells`] (for a device, the columns every
//!   device has, [`DeviceInfo`]) followed by [`Record::cells`] (its kind's own), in the order
//!   of [`Record::SHARED`] and [`Record::COLUMNS`]; the store writes any record through them;
//! - a kind is named in one place, [`Kind`]'s row of facts; per-kind arrays are sized by
//!   [`Kind::COUNT`] and loops run over [`Kind::ALL`];
//! - [`Record::as_of`] is the inventory time Jamf reports for the record (`reportDate` /
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

/// A kind of Jamf object jamf-sync copies. Everything about a kind that is not code is in its
/// row of [`FACTS`] (its table, its singular name, its command-line spelling), and
/// [`Kind::ALL`] sizes every per-kind array and loop: a new kind is a variant, a row, and its
/// place in `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Computers = 0,
    MobileDevices = 1,
}

/// What names a kind, in [`Kind`]'s order.
#[derive(Debug)]
struct Facts {
    /// The table name and the `sync_runs.kind` value.
    name: &'static str,
    /// The singular: `device_type` in `extension_attributes` and `inventory_changes`.
    singular: &'static str,
    /// As the command line and the HTTP API spell it.
    cli: &'static str,
    /// As a sentence names it.
    label: &'static str,
}

const FACTS: [Facts; Kind::COUNT] = [
    Facts {
        name: "computers",
        singular: "computer",
        cli: "computers",
        label: "computers",
    },
    Facts {
        name: "mobile_devices",
        singular: "mobile_device",
        cli: "mobile-devices",
        label: "mobile devices",
    },
];

impl Kind {
    /// Every kind, in index order.
    pub const ALL: &'static [Kind] = &[Kind::Computers, Kind::MobileDevices];
    pub const COUNT: usize = Kind::ALL.len();

    fn facts(self) -> &'static Facts {
        &FACTS[self.index()]
    }

    /// `computers` or `mobile_devices`: the table name and the `sync_runs.kind` value.
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// A kind as a person types it: the command-line spelling (`mobile-devices`) or the stored
    /// name (`mobile_devices`).
    pub fn parse_any(s: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s || k.cli_name() == s)
    }

    /// As the command line and the HTTP API spell it: `computers`, `mobile-devices`.
    pub fn cli_name(self) -> &'static str {
        self.facts().cli
    }

    /// As a sentence names it: `computers`, `mobile devices`.
    pub fn label(self) -> &'static str {
        self.facts().label
    }

    /// Position in per-kind arrays (`[T; Kind::COUNT]`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// `device_type` in `extension_attributes` and `inventory_changes`: the singular.
    pub fn device_type(self) -> &'static str {
        self.facts().singular
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

/// A record the store can write, whatever its kind: a device, or any other Jamf object with
/// an id. Nothing here assumes a device: the columns a kind shares with others (every device's
/// [`DeviceInfo`]) are [`SHARED`](Self::SHARED), none by default, and a kind without extension
/// attributes or child tables leaves those out.
pub trait Record: std::fmt::Debug + Send + Sync + 'static {
    const KIND: Kind;
    /// Columns this kind shares with other kinds, projected first (a device's
    /// [`DeviceInfo::COLUMNS`]).
    const SHARED: &'static [&'static str] = &[];
    /// The kind's own projected columns (after [`SHARED`](Self::SHARED)).
    const COLUMNS: &'static [&'static str];
    /// The column of [`COLUMNS`](Self::COLUMNS) that holds [`as_of`](Self::as_of).
    const AS_OF_COLUMN: &'static str;
    /// Columns that move with every inventory or check-in (the report date, the last
    /// contact): the change history leaves them out, or every report would be a change.
    const MOVING: &'static [&'static str];
    fn jamf_id(&self) -> i64;
    /// The inventory time Jamf reports; `None` counts as older than any time.
    fn as_of(&self) -> Option<DateTime<Utc>>;
    /// When the request that returned this record was sent: of two copies with the same
    /// `as_of`, the one asked for later is the newer.
    fn fetched_at(&self) -> DateTime<Utc>;
    /// The record as Jamf sent it (JSON text).
    fn raw(&self) -> &str;
    /// Stable hash of [`raw`](Self::raw), to tell changed records from unchanged ones.
    fn raw_hash(&self) -> i64;
    /// The values of [`SHARED`](Self::SHARED), in order.
    fn shared_cells(&self) -> Vec<Cell<'_>> {
        Vec::new()
    }
    /// The values of [`COLUMNS`](Self::COLUMNS), in order.
    fn cells(&self) -> Vec<Cell<'_>>;
    fn extension_attributes(&self) -> &[EaValue] {
        &[]
    }
    /// The child tables' rows of the sections this record carries.
    fn children(&self) -> &[children::Children] {
        &[]
    }
    /// Every projected column's value: [`SHARED`](Self::SHARED), then
    /// [`COLUMNS`](Self::COLUMNS).
    fn all_cells(&self) -> Vec<Cell<'_>> {
        let mut cells = self.shared_cells();
        cells.extend(self.cells());
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<R: Record>(r: &R) {
        assert_eq!(R::COLUMNS.len(), r.cells().len(), "{:?}", R::KIND);
        assert_eq!(R::SHARED.len(), r.shared_cells().len());
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
        for (i, &k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "ALL is in index order");
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(Kind::parse_any(k.cli_name()), Some(k));
            assert_eq!(Kind::parse_any(k.as_str()), Some(k));
            // Stored names are lower-case identifiers (the schema's CHECK).
            for name in [k.as_str(), k.device_type()] {
                assert!(
                    name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{name}"
                );
            }
        }
        assert_eq!(Kind::parse("printers"), None);
        assert_eq!(Kind::parse("mobile-devices"), None);
        assert_eq!(Kind::parse_any("mobile-devices"), Some(Kind::MobileDevices));
    }
}
