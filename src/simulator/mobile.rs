//! The simulator's mobile devices: the model and its Classic XML/JSON and Jamf Pro API
//! renderings. The Jamf Pro API's endpoint is in [`super::mobile_api`], the Classic ones in
//! [`super::classic`].

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use serde_json::{json, Value};

/// Sections of `/api/v2/mobile-devices/detail`, as the simulator knows them.
pub(super) const SECTIONS: &str =
    "GENERAL HARDWARE USER_AND_LOCATION PURCHASING SECURITY APPLICATIONS \
    EBOOKS NETWORK SERVICE_SUBSCRIPTIONS CERTIFICATES PROFILES USER_PROFILES \
    PROVISIONING_PROFILES SHARED_USERS GROUPS EXTENSION_ATTRIBUTES";

pub(super) const MODELS: &[(&str, &str, &str)] = &[
    ("iPad Pro (11-inch) (4th generation)", "iPad14,3", "iOS"),
    ("iPhone 15", "iPhone15,4", "iOS"),
    ("iPad (10th generation)", "iPad13,18", "iOS"),
    ("Apple TV 4K (3rd generation)", "AppleTV14,1", "tvOS"),
];

#[derive(Debug, Clone)]
pub struct SimMobile {
    pub id: i64,
    pub udid: String,
    pub name: String,
    pub serial: String,
    pub model: usize,
    pub os_version: String,
    pub last_inventory: DateTime<Utc>,
    pub managed: bool,
    pub supervised: bool,
    pub username: String,
    pub department: String,
    pub ea_value: String,
    pub revision: u64,
    /// Times the device's apps updated (moves Outlook's version, on every third device).
    pub app_updates: u32,
    /// Member of the static group "Cart Pilot".
    pub pilot: bool,
}

/// Every mobile device group the simulated Jamf has: `(id, name, smart)`.
pub const MOBILE_GROUPS: &[(&str, &str, bool)] = &[
    ("1", "All Managed iPads", true),
    ("2", "iOS 18", true),
    ("3", "Cart Pilot", false),
];

/// One app on a mobile device: name, bundle identifier, short version, build.
pub type MobileApp = (&'static str, &'static str, String, String);

/// One installed profile: display name, identifier, uuid, version, removable, installed at.
pub type MobileProfile = (
    &'static str,
    &'static str,
    String,
    &'static str,
    bool,
    DateTime<Utc>,
);

impl SimMobile {
    pub fn generate(id: i64, rng: &mut fastrand::Rng, now: DateTime<Utc>) -> Self {
        // Some names and departments carry non-ASCII and XML-special characters on purpose.
        let (name, department) = match id % 5 {
            0 => (
                format!("Zoë’s iPad & <Cart {id}>"),
                "R&D <Labs> 'West'".to_string(),
            ),
            1 => (
                format!("Ünïcødé Phone {id}"),
                "Ventes & Marketing".to_string(),
            ),
            _ => (format!("MOB-{id:06}"), "IT".to_string()),
        };
        SimMobile {
            id,
            udid: format!("{:016x}{:016x}", rng.u64(..), id),
            name,
            serial: format!("DMP{:09}", rng.u32(0..1_000_000_000)),
            model: rng.usize(0..MODELS.len()),
            os_version: ["17.6.1", "18.1", "18.2"][rng.usize(0..3)].to_string(),
            last_inventory: now - chrono::Duration::seconds(rng.i64(3600..7 * 24 * 3600)),
            managed: rng.u8(0..10) != 0,
            supervised: rng.bool(),
            username: format!("mobile{:05}", rng.u32(0..100_000)),
            department,
            ea_value: format!("Cart {}", rng.u8(1..20)),
            revision: 0,
            app_updates: 0,
            pilot: id % 4 == 0,
        }
    }

    /// The device submits inventory now.
    pub fn report(&mut self, now: DateTime<Utc>) {
        self.revision += 1;
        self.last_inventory = now;
        self.ea_value = format!("rev {} & <more>", self.revision);
        self.app_updates += 1;
    }

    /// The apps installed, in the order Jamf lists them.
    pub fn applications(&self) -> Vec<MobileApp> {
        let mut apps = vec![
            (
                "Keynote",
                "com.apple.Keynote",
                "14.2".into(),
                "7038.0.45".into(),
            ),
            (
                "Self Service",
                "com.jamf.selfservice",
                "11.0".into(),
                "1100".into(),
            ),
        ];
        if self.id % 3 == 0 {
            apps.push((
                "Microsoft Outlook",
                "com.microsoft.Office.Outlook",
                format!("4.{}", 2400 + self.app_updates),
                format!("{}", 6_000 + self.app_updates),
            ));
        }
        apps
    }

    /// The groups the device is in: `(id, name, smart)`; "iOS 18" follows the OS.
    pub fn groups(&self) -> Vec<(&'static str, &'static str, bool)> {
        MOBILE_GROUPS
            .iter()
            .filter(|(id, _, _)| match *id {
                "1" => self.managed,
                "2" => self.os_version.starts_with("18"),
                _ => self.pilot,
            })
            .copied()
            .collect()
    }

    /// A fixed instant per device (profiles installed, certificates expiring).
    fn day(&self, days: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + self.id * 3_600 + days * 86_400, 0)
            .unwrap_or_default()
    }

    pub fn profiles(&self) -> Vec<MobileProfile> {
        let mut p = vec![(
            "Wi-Fi",
            "com.example.wifi",
            format!("5A1E0000-0000-4000-8000-{:012X}", self.id),
            "1",
            false,
            self.day(0),
        )];
        if self.supervised {
            p.push((
                "Restrictions",
                "com.example.restrictions",
                format!("7E570000-0000-4000-8000-{:012X}", self.id),
                "3",
                true,
                self.day(30),
            ));
        }
        p
    }

    /// `(common name, identity, expires)`.
    pub fn certificates(&self) -> Vec<(String, bool, DateTime<Utc>)> {
        vec![
            (
                format!("MDM Identity {}", &self.udid[..8]),
                true,
                self.day(395),
            ),
            ("Example Root CA".into(), false, self.day(3_650)),
        ]
    }

    pub fn email(&self) -> String {
        format!("{}@example.com", self.username)
    }

    pub fn os_type(&self) -> &'static str {
        MODELS[self.model].2
    }

    /// `GET /JSSResource/mobiledevices/id/{id}` as XML.
    pub fn to_xml(&self) -> String {
        let (model, model_id, os_type) = MODELS[self.model];
        let t = self.last_inventory;
        format!(
            "<mobile_device><general><id>{id}</id>\
             <display_name>{name}</display_name><device_name>{name}</device_name><name>{name}</name>\
             <asset_tag/><last_inventory_update>{human}</last_inventory_update>\
             <last_inventory_update_epoch>{epoch}</last_inventory_update_epoch>\
             <last_inventory_update_utc>{utc}</last_inventory_update_utc>\
             <capacity>128000</capacity><os_type>{os_type}</os_type><os_version>{osv}</os_version>\
             <os_build>22B83</os_build><serial_number>{serial}</serial_number><udid>{udid}</udid>\
             <model>{model}</model><model_identifier>{model_id}</model_identifier>\
             <managed>{managed}</managed><supervised>{supervised}</supervised>\
             <site><id>-1</id><name>None</name></site></general>\
             <location><username>{user}</username><realname>{user}</realname>\
             <real_name>{user}</real_name><email_address>{email}</email_address><position/>\
             <phone/><department>{dept}</department><building/><room/></location>\
             <purchasing><is_purchased>true</is_purchased><po_number/></purchasing>\
             {apps}<security><data_protection>true</data_protection></security>\
             <network><carrier/></network>{certs}{profiles}\
             <provisioning_profiles><size>0</size></provisioning_profiles>{groups}\
             <extension_attributes><extension_attribute><id>1</id><name>Cart</name>\
             <type>String</type><multi_value>false</multi_value><value>{ea}</value>\
             </extension_attribute></extension_attributes></mobile_device>",
            id = self.id,
            name = escape(&self.name),
            human = t.format("%A, %B %d %Y at %-I:%M %p"),
            epoch = t.timestamp_millis(),
            utc = t.format("%Y-%m-%dT%H:%M:%S%.3f+0000"),
            osv = self.os_version,
            serial = self.serial,
            udid = self.udid,
            managed = self.managed,
            supervised = self.supervised,
            user = self.username,
            email = self.email(),
            dept = escape(&self.department),
            ea = escape(&self.ea_value),
            apps = self.apps_xml(),
            certs = self.certificates_xml(),
            profiles = self.profiles_xml(),
            groups = self.groups_xml(),
        )
    }

    fn apps_xml(&self) -> String {
        let apps = self.applications();
        let mut x = format!("<applications><size>{}</size>", apps.len());
        for (name, id, short, build) in apps {
            x += &format!(
                "<application><application_name>{name}</application_name>\
                 <application_version>{build}</application_version>\
                 <application_short_version>{short}</application_short_version>\
                 <identifier>{id}</identifier></application>"
            );
        }
        x + "</applications>"
    }

    fn certificates_xml(&self) -> String {
        let certs = self.certificates();
        let mut x = format!("<certificates><size>{}</size>", certs.len());
        for (name, identity, expires) in certs {
            x += &format!(
                "<certificate><common_name>{}</common_name><identity>{identity}</identity>\
                 <expires_utc>{}</expires_utc><expires_epoch>{}</expires_epoch></certificate>",
                escape(&name),
                expires.format("%Y-%m-%dT%H:%M:%S%.3f+0000"),
                expires.timestamp_millis()
            );
        }
        x + "</certificates>"
    }

    fn profiles_xml(&self) -> String {
        let profiles = self.profiles();
        let mut x = format!("<configuration_profiles><size>{}</size>", profiles.len());
        for (name, identifier, uuid, version, _, _) in profiles {
            x += &format!(
                "<configuration_profile><display_name>{name}</display_name>\
                 <version>{version}</version><identifier>{identifier}</identifier>\
                 <uuid>{uuid}</uuid></configuration_profile>"
            );
        }
        x + "</configuration_profiles>"
    }

    fn groups_xml(&self) -> String {
        let groups = self.groups();
        let mut x = format!("<mobile_device_groups><size>{}</size>", groups.len());
        for (id, name, _) in groups {
            x += &format!(
                "<mobile_device_group><id>{id}</id><name>{name}</name></mobile_device_group>"
            );
        }
        x + "</mobile_device_groups>"
    }

    /// Classic JSON form (what `Accept: application/json` gets).
    pub fn to_classic_json(&self) -> Value {
        let (model, model_id, os_type) = MODELS[self.model];
        json!({"mobile_device": {
            "general": {
                "id": self.id,
                "display_name": self.name,
                "name": self.name,
                "last_inventory_update_epoch": self.last_inventory.timestamp_millis(),
                "os_type": os_type,
                "os_version": self.os_version,
                "serial_number": self.serial,
                "udid": self.udid,
                "model": model,
                "model_identifier": model_id,
                "managed": self.managed,
                "supervised": self.supervised
            },
            "location": {"username": self.username, "email_address": self.email(), "department": self.department},
            "extension_attributes": [{"id": 1, "name": "Cart", "type": "String", "multi_value": false, "value": self.ea_value}]
        }})
    }

    /// `/api/v2/mobile-devices/detail` record with the requested sections.
    pub fn to_pro_json(&self, sections: &[String]) -> Value {
        let (model, model_id, os_type) = MODELS[self.model];
        let has = |s: &str| sections.iter().any(|x| x == s);
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut v = json!({
            "mobileDeviceId": self.id.to_string(),
            "deviceType": os_type,
        });
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "general".into(),
                if has("GENERAL") {
                    json!({
                        "udid": self.udid,
                        "displayName": self.name,
                        "assetTag": null,
                        "lastInventoryUpdateDate": ts(self.last_inventory),
                        "osVersion": self.os_version,
                        "osBuild": "22B83",
                        "managed": self.managed,
                        "supervised": self.supervised
                    })
                } else {
                    Value::Null
                },
            );
            o.insert(
                "hardware".into(),
                if has("HARDWARE") {
                    json!({"serialNumber": self.serial, "model": model, "modelIdentifier": model_id, "capacityMb": 128000})
                } else {
                    Value::Null
                },
            );
            o.insert(
                "userAndLocation".into(),
                if has("USER_AND_LOCATION") {
                    json!({"username": self.username, "realName": self.username, "emailAddress": self.email(), "department": self.department})
                } else {
                    Value::Null
                },
            );
            let section = |name: &str, value: Value| if has(name) { value } else { Value::Null };
            o.insert(
                "applications".into(),
                section(
                    "APPLICATIONS",
                    self.applications()
                        .into_iter()
                        .map(|(name, identifier, short, build)| {
                            json!({"identifier": identifier, "name": name, "version": build,
                                   "shortVersion": short, "managementStatus": "Managed",
                                   "validationStatus": true, "bundleSize": "1024",
                                   "dynamicSize": "2048", "appClip": false})
                        })
                        .collect(),
                ),
            );
            o.insert(
                "certificates".into(),
                section(
                    "CERTIFICATES",
                    self.certificates()
                        .into_iter()
                        .map(|(name, identity, expires)| {
                            json!({"commonName": name, "identity": identity,
                                   "expirationDate": ts(expires)})
                        })
                        .collect(),
                ),
            );
            o.insert(
                "profiles".into(),
                section(
                    "PROFILES",
                    self.profiles()
                        .into_iter()
                        .map(|(name, identifier, uuid, version, removable, at)| {
                            json!({"displayName": name, "version": version, "uuid": uuid,
                                   "identifier": identifier, "removable": removable,
                                   "lastInstalled": ts(at)})
                        })
                        .collect(),
                ),
            );
            o.insert(
                "groups".into(),
                section(
                    "GROUPS",
                    self.groups()
                        .into_iter()
                        .map(|(id, name, smart)| {
                            json!({"groupId": id, "groupName": name, "groupDescription": "",
                                   "smart": smart})
                        })
                        .collect(),
                ),
            );
            o.insert(
                "extensionAttributes".into(),
                if has("EXTENSION_ATTRIBUTES") {
                    json!([{"id": "1", "name": "Cart", "type": "STRING", "value": [self.ea_value]}])
                } else {
                    Value::Null
                },
            );
        }
        v
    }
}

/// An advanced mobile device search stored in the simulator.
#[derive(Debug, Clone)]
pub struct SimSearch {
    pub id: i64,
    pub name: String,
    /// `less than x days ago` on Last Inventory Update, or no criterion.
    pub less_than_days: Option<u32>,
    pub created: Instant,
    pub updates: u32,
}
