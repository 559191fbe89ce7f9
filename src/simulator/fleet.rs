//! The simulated fleet: deterministic computers and their rendering as Jamf Pro API JSON.
//!
//! Rendering follows Jamf's OpenAPI document for each API version (v1/v3 `lastContactTime`,
//! v4 `lastContact` + `lastCheckIn`, v4 without `lastReportedIp`); unrequested sections are
//! `null`, as real servers send them. `tests/it/openapi.rs` validates the output.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::catalogue::{APPS, MODELS, OS, PROFILES};
pub use super::catalogue::{COMPUTER_GROUPS, EA_DEFS};
use super::rsql::{Expr, Op};
pub use super::values::{cmp_values, parse_time, FieldValue};
use super::values::{compare, wildcard};

/// The computers-inventory API versions the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V3,
    V4,
}

/// Whether a Jamf Pro server of `server_version` (e.g. `11.30.1-t1784555528405`) serves this
/// API version: v1 always (deprecated, still served), v3 from 11.0, v4 from 11.30.
pub fn serves(server_version: &str, api: ApiVersion) -> bool {
    let (major, minor) = release(server_version);
    match api {
        ApiVersion::V1 => true,
        ApiVersion::V3 => major >= 11,
        ApiVersion::V4 => major > 11 || (major == 11 && minor >= 30),
    }
}

/// `/api/v2/mobile-devices/detail` exists from Jamf Pro 11.4.
pub fn serves_mobile_detail(server_version: &str) -> bool {
    let (major, minor) = release(server_version);
    major > 11 || (major == 11 && minor >= 4)
}

/// Major and minor release of a version string; unreadable parts count as 0.
fn release(version: &str) -> (u32, u32) {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Section name → JSON key, and whether the section is a list.
pub const SECTIONS: &[(&str, &str, bool)] = &[
    ("GENERAL", "general", false),
    ("DISK_ENCRYPTION", "diskEncryption", false),
    ("PURCHASING", "purchasing", false),
    ("APPLICATIONS", "applications", true),
    ("STORAGE", "storage", false),
    ("USER_AND_LOCATION", "userAndLocation", false),
    ("CONFIGURATION_PROFILES", "configurationProfiles", true),
    ("PRINTERS", "printers", true),
    ("SERVICES", "services", true),
    ("HARDWARE", "hardware", false),
    ("LOCAL_USER_ACCOUNTS", "localUserAccounts", true),
    ("CERTIFICATES", "certificates", true),
    ("ATTACHMENTS", "attachments", true),
    ("PLUGINS", "plugins", true),
    ("PACKAGE_RECEIPTS", "packageReceipts", false),
    ("FONTS", "fonts", true),
    ("SECURITY", "security", false),
    ("OPERATING_SYSTEM", "operatingSystem", false),
    ("LICENSED_SOFTWARE", "licensedSoftware", true),
    ("IBEACONS", "ibeacons", true),
    ("SOFTWARE_UPDATES", "softwareUpdates", true),
    ("EXTENSION_ATTRIBUTES", "extensionAttributes", true),
    ("CONTENT_CACHING", "contentCaching", false),
    ("GROUP_MEMBERSHIPS", "groupMemberships", true),
];

/// Whether a section exists in an API version (PLUGINS and FONTS are v1 only).
pub fn section_in(version: ApiVersion, section: &str) -> bool {
    match section {
        "PLUGINS" | "FONTS" => version == ApiVersion::V1,
        s => SECTIONS.iter().any(|(n, _, _)| *n == s),
    }
}

#[derive(Debug, Clone)]
pub struct SimComputer {
    pub id: i64,
    pub udid: String,
    pub name: String,
    pub serial: String,
    pub model: usize,
    pub os: usize,
    pub report_date: DateTime<Utc>,
    pub last_contact: DateTime<Utc>,
    pub enrolled: DateTime<Utc>,
    pub managed: bool,
    pub supervised: bool,
    pub username: String,
    pub ip: String,
    pub apps: usize,
    /// Application updates so far: each inventory report updates one application.
    pub app_updates: u32,
    pub ea_values: [String; 2],
    /// Bumped whenever the device "submits inventory", so each report changes the record.
    pub revision: u64,
    /// Ids of the static groups ([`COMPUTER_GROUPS`]) the Mac is in: edited in Jamf, not by
    /// inventory.
    pub static_groups: Vec<&'static str>,
}

impl SimComputer {
    pub fn generate(id: i64, rng: &mut fastrand::Rng, now: DateTime<Utc>) -> Self {
        let report_date = now - Duration::seconds(rng.i64(3600..7 * 24 * 3600));
        let user = format!("user{:05}", rng.u32(0..100_000));
        SimComputer {
            id,
            udid: format!(
                "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
                rng.u32(..),
                rng.u16(..),
                rng.u16(..),
                rng.u16(..),
                rng.u64(..) & 0xFFFF_FFFF_FFFF
            ),
            name: format!("MAC-{id:06}"),
            serial: format!("C02{:09}", rng.u32(0..1_000_000_000)),
            model: rng.usize(0..MODELS.len()),
            os: rng.usize(0..OS.len()),
            last_contact: report_date + Duration::seconds(rng.i64(0..3600)),
            report_date,
            enrolled: report_date - Duration::days(rng.i64(30..900)),
            managed: rng.u8(0..20) != 0,
            supervised: rng.bool(),
            username: user,
            ip: format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..255)),
            apps: rng.usize(40..APPS.len().min(60) + 1),
            ea_values: [
                format!("D{:03}", rng.u16(0..500)),
                ["Normal", "Service Recommended"][rng.usize(0..2)].to_string(),
            ],
            app_updates: 0,
            revision: 0,
            static_groups: [(id % 3 == 0, "2"), (id % 7 == 0, "4")]
                .into_iter()
                .filter_map(|(member, g)| member.then_some(g))
                .collect(),
        }
    }

    /// The version of application `i` on this Mac: a major per app and Mac (so versions
    /// differ across the fleet), a patch level that rises by one each time the app updates.
    pub fn app_version(&self, i: usize) -> String {
        let apps = self.apps.max(1) as u32;
        let updates = self.app_updates / apps + u32::from((i as u32) < self.app_updates % apps);
        let major = 100 + (self.id as usize * 7 + i * 13) % 40;
        format!("{major}.{}.{updates}", i % 10)
    }

    /// The applications installed: `(name, bundle id, version)`, in the order Jamf lists them.
    pub fn applications(&self) -> Vec<(&'static str, &'static str, String)> {
        APPS.iter()
            .take(self.apps)
            .enumerate()
            .map(|(i, (name, bundle))| (*name, *bundle, self.app_version(i)))
            .collect()
    }

    /// The groups this Mac is a member of: `(id, name, smart)`; "macOS 15" follows the OS.
    pub fn groups(&self) -> Vec<(&'static str, &'static str, bool)> {
        COMPUTER_GROUPS
            .iter()
            .filter(|(id, _, _)| match *id {
                "1" => self.managed,
                "3" => OS[self.os].0.starts_with("15"),
                _ => self.static_groups.contains(id),
            })
            .copied()
            .collect()
    }

    /// The device submits inventory now: report date moves, something in the record changes.
    pub fn report(&mut self, now: DateTime<Utc>, rng: &mut fastrand::Rng) {
        self.revision += 1;
        self.report_date = now;
        self.last_contact = now;
        self.os = rng.usize(0..OS.len());
        self.ip = format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..255));
        self.ea_values[1] = format!("rev {}", self.revision);
        self.app_updates += 1;
    }

    fn ts(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The record as `computers-inventory` renders it with these sections.
    pub fn render(&self, version: ApiVersion, sections: &[&str]) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id.to_string()));
        obj.insert("udid".into(), json!(self.udid));
        for (name, key, _) in SECTIONS {
            if !section_in(version, name) {
                continue;
            }
            let v = if sections.contains(name) {
                self.section(version, name)
            } else {
                Value::Null
            };
            obj.insert((*key).into(), v);
        }
        Value::Object(obj)
    }

    /// The value of extension attribute `i` (of [`EA_DEFS`]) as Jamf reports it.
    pub fn ea_value(&self, i: usize) -> String {
        match i {
            0 | 1 => self.ea_values[i].clone(),
            2 => (self.id % 30).to_string(),
            _ => (self.enrolled + Duration::days(self.id % 5))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        }
    }

    fn ea(&self, i: usize) -> Value {
        let (def, name, data_type) = EA_DEFS[i];
        json!({
            "definitionId": def,
            "name": name,
            "description": null,
            "enabled": true,
            "multiValue": false,
            "values": [self.ea_value(i)],
            "dataType": data_type,
            "options": [],
            "inputType": "TEXT"
        })
    }

    fn section(&self, version: ApiVersion, name: &str) -> Value {
        let (model, model_id) = MODELS[self.model];
        let (os_version, os_build) = OS[self.os];
        match name {
            "GENERAL" => {
                let mut g = json!({
                    "name": self.name,
                    "lastIpAddress": self.ip,
                    "lastReportedIpV4": self.ip,
                    "lastReportedIpV6": null,
                    "jamfBinaryVersion": "11.30.1-t1784555528405",
                    "platform": "Mac",
                    "barcode1": null,
                    "barcode2": null,
                    "assetTag": format!("A{:06}", self.id),
                    "remoteManagement": {"managed": self.managed, "managementUsername": null},
                    "supervised": self.supervised,
                    "mdmCapable": {"capable": self.managed, "capableUsers": [self.username]},
                    "reportDate": Self::ts(self.report_date),
                    "lastCloudBackupDate": null,
                    "lastEnrolledDate": Self::ts(self.enrolled),
                    "mdmProfileExpiration": Self::ts(self.enrolled + Duration::days(730)),
                    "initialEntryDate": self.enrolled.format("%Y-%m-%d").to_string(),
                    "distributionPoint": null,
                    "enrollmentMethod": null,
                    "site": {"id": "-1", "name": "None"},
                    "itunesStoreAccountActive": false,
                    "enrolledViaAutomatedDeviceEnrollment": self.supervised,
                    "userApprovedMdm": true,
                    "declarativeDeviceManagementEnabled": true,
                    "extensionAttributes": [],
                    "managementId": format!("{:08x}-0000-4000-8000-{:012x}", self.id, self.id),
                });
                if let Some(g) = g.as_object_mut() {
                    match version {
                        ApiVersion::V4 => {
                            g.insert("lastContact".into(), json!(Self::ts(self.last_contact)));
                            g.insert("lastCheckIn".into(), json!(Self::ts(self.last_contact)));
                        }
                        ApiVersion::V1 | ApiVersion::V3 => {
                            g.insert("lastContactTime".into(), json!(Self::ts(self.last_contact)));
                            g.insert("lastReportedIp".into(), json!(self.ip));
                        }
                    }
                }
                g
            }
            "HARDWARE" => json!({
                "make": "Apple",
                "model": model,
                "modelIdentifier": model_id,
                "serialNumber": self.serial,
                "processorSpeedMhz": 0,
                "processorCount": 1,
                "coreCount": 10,
                "processorType": "Apple M2",
                "processorArchitecture": "arm64",
                "busSpeedMhz": 0,
                "cacheSizeKilobytes": 0,
                "networkAdapterType": "Ethernet",
                "macAddress": format!("6A:2C:4B:{:02X}:{:02X}:{:02X}", (self.id >> 16) & 0xFF, (self.id >> 8) & 0xFF, self.id & 0xFF),
                "altNetworkAdapterType": null,
                "altMacAddress": null,
                "totalRamMegabytes": 16384,
                "openRamSlots": 0,
                "batteryCapacityPercent": 91,
                "smcVersion": null,
                "nicSpeed": "1000",
                "opticalDrive": null,
                "bootRom": "10151.121.1",
                "bleCapable": true,
                "supportsIosAppInstalls": true,
                "appleSilicon": true,
                "extensionAttributes": []
            }),
            "OPERATING_SYSTEM" => json!({
                "name": "macOS",
                "version": os_version,
                "build": os_build,
                "supplementalBuildVersion": null,
                "rapidSecurityResponse": null,
                "activeDirectoryStatus": "Not Bound",
                "fileVault2Status": "ALL_ENCRYPTED",
                "softwareUpdateDeviceId": "J413AP",
                "extensionAttributes": []
            }),
            "USER_AND_LOCATION" => json!({
                "username": self.username,
                "realname": format!("User {}", &self.username[4..]),
                "email": format!("{}@example.com", self.username),
                "position": "Engineer",
                "phone": null,
                "departmentId": "1",
                "buildingId": "1",
                "room": null,
                "extensionAttributes": []
            }),
            "EXTENSION_ATTRIBUTES" => {
                Value::Array((0..EA_DEFS.len()).map(|i| self.ea(i)).collect())
            }
            "APPLICATIONS" => Value::Array(
                self.applications()
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, bundle, version))| {
                        json!({
                            "name": name,
                            "path": format!("/Applications/{name}"),
                            "version": version,
                            "macAppStore": i % 9 == 3,
                            "sizeMegabytes": 20 + (i * 37) % 900,
                            "bundleId": bundle,
                            "updateAvailable": false,
                            "externalVersionId": "0"
                        })
                    })
                    .collect(),
            ),
            "CONFIGURATION_PROFILES" => Value::Array(
                PROFILES
                    .iter()
                    .take(3 + (self.id as usize % 4))
                    .enumerate()
                    .map(|(i, (name, identifier))| {
                        json!({
                            "id": (i + 1).to_string(),
                            "username": null,
                            "lastInstalled": Self::ts(self.enrolled + Duration::hours(i as i64)),
                            "removable": i % 2 == 1,
                            "displayName": name,
                            "profileIdentifier": identifier,
                            "uuid": format!("{:08X}-0000-4000-8000-{:012X}", i + 1, self.id)
                        })
                    })
                    .collect(),
            ),
            "LOCAL_USER_ACCOUNTS" => json!([
                {
                    "uid": "501",
                    "userGuid": format!("{:08X}-1111-4000-8000-{:012X}", 501, self.id),
                    "username": self.username,
                    "fullName": format!("User {}", &self.username[4..]),
                    "admin": self.id % 4 == 0,
                    "homeDirectory": format!("/Users/{}", self.username),
                    "homeDirectorySizeMb": 20480,
                    "fileVault2Enabled": true,
                    "userAccountType": "LOCAL",
                    "passwordMinLength": 8,
                    "passwordMaxAge": 0,
                    "passwordMinComplexCharacters": 0,
                    "passwordHistoryDepth": 0,
                    "passwordRequireAlphanumeric": false,
                    "computerAzureActiveDirectoryId": null,
                    "userAzureActiveDirectoryId": null,
                    "azureActiveDirectoryId": null
                },
                {
                    "uid": "502",
                    "userGuid": format!("{:08X}-1111-4000-8000-{:012X}", 502, self.id),
                    "username": "localadmin",
                    "fullName": "Local Admin",
                    "admin": true,
                    "homeDirectory": "/Users/localadmin",
                    "homeDirectorySizeMb": 512,
                    "fileVault2Enabled": false,
                    "userAccountType": "LOCAL",
                    "passwordMinLength": 8,
                    "passwordMaxAge": 0,
                    "passwordMinComplexCharacters": 0,
                    "passwordHistoryDepth": 0,
                    "passwordRequireAlphanumeric": false,
                    "computerAzureActiveDirectoryId": null,
                    "userAzureActiveDirectoryId": null,
                    "azureActiveDirectoryId": null
                }
            ]),
            "CERTIFICATES" => json!([
                {
                    "commonName": format!("{}", self.udid),
                    "identity": true,
                    "expirationDate": Self::ts(self.enrolled + Duration::days(730)),
                    "username": "",
                    "lifecycleStatus": "ACTIVE",
                    "certificateStatus": "ISSUED",
                    "subjectName": format!("CN={}, O=JAMF Software", self.udid),
                    "serialNumber": format!("{:X}", 0x1000_0000 + self.id),
                    "sha1Fingerprint": format!("{:040x}", self.id),
                    "issuedDate": Self::ts(self.enrolled)
                },
                {
                    "commonName": "Example Corp Root CA",
                    "identity": false,
                    "expirationDate": "2034-01-01T00:00:00Z",
                    "username": "",
                    "lifecycleStatus": "ACTIVE",
                    "certificateStatus": "ISSUED",
                    "subjectName": "CN=Example Corp Root CA, O=Example Corp",
                    "serialNumber": "01",
                    "sha1Fingerprint": "3f1d3c4a9b7e2d0c8f6a5b4e3d2c1b0a9f8e7d6c",
                    "issuedDate": "2024-01-01T00:00:00Z"
                }
            ]),
            "GROUP_MEMBERSHIPS" => Value::Array(
                self.groups()
                    .into_iter()
                    .map(|(id, name, smart)| {
                        json!({
                            "groupId": id,
                            "groupName": name,
                            "groupDescription": "",
                            "smartGroup": smart
                        })
                    })
                    .collect(),
            ),
            "SECURITY" => json!({
                "sipStatus": "ENABLED",
                "gatekeeperStatus": "APP_STORE_AND_IDENTIFIED_DEVELOPERS",
                "xprotectVersion": "5287",
                "autoLoginDisabled": true,
                "remoteDesktopEnabled": false,
                "activationLockEnabled": false,
                "recoveryLockEnabled": false,
                "firewallEnabled": true,
                "secureBootLevel": "FULL_SECURITY",
                "externalBootLevel": "NOT_SUPPORTED",
                "bootstrapTokenAllowed": true
            }),
            "DISK_ENCRYPTION" => json!({
                "individualRecoveryKeyValidityStatus": "VALID",
                "institutionalRecoveryKeyPresent": false,
                "diskEncryptionConfigurationName": null,
                "fileVault2EnabledUserNames": [self.username],
                "fileVault2EligibilityMessage": "Eligible"
            }),
            "PURCHASING" => json!({
                "leased": false,
                "purchased": true,
                "poNumber": null,
                "poDate": null,
                "vendor": null,
                "warrantyDate": null,
                "appleCareId": null,
                "leaseDate": null,
                "purchasePrice": null,
                "lifeExpectancy": 4,
                "purchasingAccount": null,
                "purchasingContact": null,
                "extensionAttributes": []
            }),
            "STORAGE" => json!({"bootDriveAvailableSpaceMegabytes": 201_000, "disks": []}),
            "PACKAGE_RECEIPTS" => json!({
                "installedByJamfPro": [],
                "installedByInstallerSwu": ["com.apple.pkg.XProtectPayloads"],
                "cached": []
            }),
            "CONTENT_CACHING" => json!({"activated": false, "active": false}),
            _ => {
                let is_list = SECTIONS.iter().any(|(n, _, list)| *n == name && *list);
                if is_list {
                    json!([])
                } else {
                    json!({})
                }
            }
        }
    }

    /// Whether the record matches an RSQL filter; unknown fields are an error (`INVALID_FIELD`).
    pub fn matches(&self, expr: &Expr, version: ApiVersion) -> Result<bool, String> {
        match expr {
            Expr::And(parts) => {
                for p in parts {
                    if !self.matches(p, version)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Expr::Or(parts) => {
                for p in parts {
                    if self.matches(p, version)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Expr::Cmp { field, op, values } => {
                let actual = self.field(field, version)?;
                let mut results = values.iter().map(|v| compare(&actual, v));
                match op {
                    Op::In => {
                        for r in results {
                            if r? == std::cmp::Ordering::Equal {
                                return Ok(true);
                            }
                        }
                        Ok(false)
                    }
                    Op::Out => {
                        for r in results {
                            if r? == std::cmp::Ordering::Equal {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    }
                    _ => {
                        let ord = match results.next() {
                            Some(r) => r?,
                            None => return Err("missing value".into()),
                        };
                        // `*` wildcards on string equality.
                        if let (FieldValue::Str(s), Op::Eq | Op::Ne) = (&actual, op) {
                            if values[0].contains('*') {
                                let m = wildcard(&values[0], s);
                                return Ok(if *op == Op::Eq { m } else { !m });
                            }
                        }
                        use std::cmp::Ordering::*;
                        Ok(match op {
                            Op::Eq => ord == Equal,
                            Op::Ne => ord != Equal,
                            Op::Lt => ord == Less,
                            Op::Le => ord != Greater,
                            Op::Gt => ord == Greater,
                            Op::Ge => ord != Less,
                            Op::In | Op::Out => false,
                        })
                    }
                }
            }
        }
    }

    pub fn field(&self, field: &str, version: ApiVersion) -> Result<FieldValue, String> {
        let v4 = matches!(version, ApiVersion::V4);
        Ok(match field {
            "id" => FieldValue::Int(self.id),
            "udid" => FieldValue::Str(self.udid.clone()),
            "general.name" => FieldValue::Str(self.name.clone()),
            "general.reportDate" => FieldValue::Time(self.report_date),
            "general.lastContact" | "general.lastCheckIn" if v4 => {
                FieldValue::Time(self.last_contact)
            }
            "general.lastContactTime" if !v4 => FieldValue::Time(self.last_contact),
            "general.lastEnrolledDate" => FieldValue::Time(self.enrolled),
            "general.assetTag" => FieldValue::Str(format!("A{:06}", self.id)),
            "general.platform" => FieldValue::Str("Mac".into()),
            "hardware.serialNumber" => FieldValue::Str(self.serial.clone()),
            "hardware.model" => FieldValue::Str(MODELS[self.model].0.into()),
            "operatingSystem.version" => FieldValue::Str(OS[self.os].0.into()),
            "userAndLocation.username" => FieldValue::Str(self.username.clone()),
            other => return Err(other.to_string()),
        })
    }
}

/// Sort keys the simulator accepts (a subset of Jamf's, enough for clients).
pub fn sort_key(c: &SimComputer, field: &str) -> Option<FieldValue> {
    match field {
        "id" => Some(FieldValue::Int(c.id)),
        "udid" => Some(FieldValue::Str(c.udid.clone())),
        "general.name" => Some(FieldValue::Str(c.name.clone())),
        "general.reportDate" => Some(FieldValue::Time(c.report_date)),
        "general.lastEnrolledDate" => Some(FieldValue::Time(c.enrolled)),
        _ => None,
    }
}
