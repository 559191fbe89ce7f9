//! The device records jamf-sync stores, and their projection into table columns.
//!
//! Both kinds share [`DeviceInfo`] (the columns every device has) and add their own. Decoding
//! them from Jamf's wire formats is the Jamf client's business (`jamf::decode`); the store
//! writes them through [`Record`] without knowing where they came from.

use chrono::{DateTime, Utc};

use super::children::Children;
use super::{Cell, EaValue, Kind, Record};

/// What jamf-sync keeps of any device, whatever its kind (the columns both tables have).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub managed: Option<bool>,
    pub supervised: Option<bool>,
    pub username: Option<String>,
    pub email: Option<String>,
}

impl DeviceInfo {
    /// The columns of [`DeviceInfo::cells`], in order.
    pub const COLUMNS: &'static [&'static str] = &[
        "udid",
        "serial_number",
        "name",
        "model",
        "os_version",
        "managed",
        "supervised",
        "username",
        "email",
    ];

    pub fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Text(self.udid.as_deref()),
            Cell::Text(self.serial_number.as_deref()),
            Cell::Text(self.name.as_deref()),
            Cell::Text(self.model.as_deref()),
            Cell::Text(self.os_version.as_deref()),
            Cell::Bool(self.managed),
            Cell::Bool(self.supervised),
            Cell::Text(self.username.as_deref()),
            Cell::Text(self.email.as_deref()),
        ]
    }
}

/// The [`Record`] accessors both records answer from fields of the same names.
macro_rules! record_fields {
    () => {
        fn jamf_id(&self) -> i64 {
            self.jamf_id
        }
        fn shared_cells(&self) -> Vec<Cell<'_>> {
            self.info.cells()
        }
        fn fetched_at(&self) -> DateTime<Utc> {
            self.fetched_at
        }
        fn raw(&self) -> &str {
            &self.raw
        }
        fn raw_hash(&self) -> i64 {
            self.raw_hash
        }
        fn extension_attributes(&self) -> &[EaValue] {
            &self.extension_attributes
        }
        fn children(&self) -> &[Children] {
            &self.children
        }
    };
}

/// A computer ready for the store.
#[derive(Debug, Clone, Default)]
pub struct Computer {
    pub jamf_id: i64,
    pub info: DeviceInfo,
    pub os_build: Option<String>,
    pub report_date: Option<DateTime<Utc>>,
    pub last_contact: Option<DateTime<Utc>>,
    pub extension_attributes: Vec<EaValue>,
    /// Child table rows of the list sections in the answer.
    pub children: Vec<Children>,
    /// The record as Jamf sent it (JSON text).
    pub raw: String,
    /// xxh3 of `raw`.
    pub raw_hash: i64,
    pub fetched_at: DateTime<Utc>,
}

impl Record for Computer {
    const KIND: Kind = Kind::Computers;
    const SHARED: &'static [&'static str] = DeviceInfo::COLUMNS;
    const COLUMNS: &'static [&'static str] = &["os_build", "report_date", "last_contact"];
    const AS_OF_COLUMN: &'static str = "report_date";
    const MOVING: &'static [&'static str] = &["report_date", "last_contact"];

    fn as_of(&self) -> Option<DateTime<Utc>> {
        self.report_date
    }
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Text(self.os_build.as_deref()),
            Cell::Time(self.report_date),
            Cell::Time(self.last_contact),
        ]
    }
    record_fields!();
}

/// A mobile device ready for the store.
#[derive(Debug, Clone, Default)]
pub struct MobileDevice {
    pub jamf_id: i64,
    pub info: DeviceInfo,
    pub os_type: Option<String>,
    pub last_inventory_update: Option<DateTime<Utc>>,
    pub extension_attributes: Vec<EaValue>,
    /// Child table rows of the list sections in the answer.
    pub children: Vec<Children>,
    /// JSON form of the whole record (Classic XML converted, or the Jamf Pro API's JSON).
    pub raw: String,
    pub raw_hash: i64,
    pub fetched_at: DateTime<Utc>,
}

impl Record for MobileDevice {
    const KIND: Kind = Kind::MobileDevices;
    const SHARED: &'static [&'static str] = DeviceInfo::COLUMNS;
    const COLUMNS: &'static [&'static str] = &["os_type", "last_inventory_update"];
    const AS_OF_COLUMN: &'static str = "last_inventory_update";
    const MOVING: &'static [&'static str] = &["last_inventory_update"];

    fn as_of(&self) -> Option<DateTime<Utc>> {
        self.last_inventory_update
    }
    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Text(self.os_type.as_deref()),
            Cell::Time(self.last_inventory_update),
        ]
    }
    record_fields!();
}

/// The plain fields the change history records: every projected column of either kind except
/// those that move with every report, and `deleted`.
pub fn history_fields() -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = DeviceInfo::COLUMNS.to_vec();
    for (columns, moving) in [
        (Computer::COLUMNS, Computer::MOVING),
        (MobileDevice::COLUMNS, MobileDevice::MOVING),
    ] {
        fields.extend(columns.iter().filter(|c| !moving.contains(c)));
    }
    fields.push("deleted");
    fields
}
