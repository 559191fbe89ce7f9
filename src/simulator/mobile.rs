//! The simulator's mobile devices: the model, its Classic XML/JSON and Jamf Pro API renderings,
//! and the Jamf Pro API's `/api/v2/mobile-devices/detail` (Jamf Pro 11.4 and later). The
//! Classic endpoints are in [`super::classic`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use serde_json::{json, Value};

use super::rsql;
use super::state::{api_error, invalid_filter, lock, ListQuery, SimState};

/// Sections of `/api/v2/mobile-devices/detail`, as the simulator knows them.
const SECTIONS: &str = "GENERAL HARDWARE USER_AND_LOCATION PURCHASING SECURITY APPLICATIONS \
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
}

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
        }
    }

    /// The device submits inventory now.
    pub fn report(&mut self, now: DateTime<Utc>) {
        self.revision += 1;
        self.last_inventory = now;
        self.ea_value = format!("rev {} & <more>", self.revision);
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
             <applications><size>2</size><application><application_name>Keynote</application_name>\
             <application_version>7038.0.45</application_version>\
             <application_short_version>14.2</application_short_version>\
             <identifier>com.apple.Keynote</identifier>\
             </application><application><application_name>Self Service</application_name>\
             <application_version>1100</application_version>\
             <application_short_version>11.0</application_short_version>\
             <identifier>com.jamf.selfservice</identifier>\
             </application></applications><security><data_protection>true</data_protection></security>\
             <network><carrier/></network><certificates><size>0</size></certificates>\
             <configuration_profiles><size>0</size></configuration_profiles>\
             <provisioning_profiles><size>0</size></provisioning_profiles>\
             <mobile_device_groups><size>1</size><mobile_device_group><id>1</id>\
             <name>All Managed iPads</name></mobile_device_group></mobile_device_groups>\
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
        )
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

pub async fn pro_detail(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !super::fleet::serves_mobile_detail(&lock(&s.cfg).version) {
        return super::state::not_found().await;
    }
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    let q = match ListQuery::parse(query, |sec| SECTIONS.split(' ').any(|x| x == sec)) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let desc = match q.sort.as_deref() {
        None | Some("mobileDeviceId:asc" | "mobileDeviceId" | "displayName:asc") => false,
        Some("mobileDeviceId:desc") => true,
        Some(other) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("Invalid sort field: {other}"),
                Some("sort"),
            )
        }
    };
    let (total, results) = {
        let inner = lock(&s.inner);
        let mut matched: Vec<&SimMobile> = Vec::new();
        let listed = inner
            .mobiles
            .values()
            .filter(|m| !inner.unlisted_mobiles.contains(&m.id));
        for m in listed {
            match q.filter.as_ref().map(|e| matches(m, e)) {
                None | Some(Ok(true)) => matched.push(m),
                Some(Ok(false)) => {}
                Some(Err(field)) => return invalid_filter(&field),
            }
        }
        if desc {
            matched.reverse();
        }
        let beyond_general = q.sections.iter().any(|s| s != "GENERAL");
        let mut results = Vec::new();
        for m in q.page_of(&matched) {
            let mut v = m.to_pro_json(&q.sections);
            if beyond_general && inner.broken_mobiles.contains(&m.id) {
                if !q.lenient {
                    return api_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UNEXPECTED_ERROR",
                        "An unexpected error occurred while processing device data",
                        None,
                    );
                }
                // LENIENT: the device is there, the sections Jamf could not process are null.
                if let Some(o) = v.as_object_mut() {
                    for (key, value) in o.iter_mut() {
                        if value.is_object() && key != "general" {
                            *value = Value::Null;
                        }
                    }
                }
            }
            results.push(v);
        }
        (matched.len(), results)
    };
    // The page is read as of the request; the server then takes its time, as with computers.
    let per_record_us = lock(&s.cfg).per_record_section_us;
    if per_record_us > 0 {
        let us = per_record_us * (results.len() * q.sections.len()) as u64;
        tokio::time::sleep(std::time::Duration::from_micros(us)).await;
    }
    Json(json!({"totalCount": total, "results": results})).into_response()
}

fn matches(m: &SimMobile, expr: &rsql::Expr) -> Result<bool, String> {
    use rsql::{Expr, Op};
    match expr {
        Expr::And(parts) => {
            for p in parts {
                if !matches(m, p)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Or(parts) => {
            for p in parts {
                if matches(m, p)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::Cmp { field, op, values } if matches!(op, Op::In | Op::Out) => {
            // `=in=` matches any listed value, `=out=` none of them.
            let mut any = false;
            for v in values {
                let one = Expr::Cmp {
                    field: field.clone(),
                    op: Op::Eq,
                    values: vec![v.clone()],
                };
                any |= matches(m, &one)?;
            }
            Ok(if *op == Op::In { any } else { !any })
        }
        Expr::Cmp { field, op, values } => {
            let value = values.first().ok_or("missing value")?;
            let ord = match field.as_str() {
                "mobileDeviceId" => {
                    m.id.cmp(&value.trim().parse::<i64>().map_err(|_| "not a number")?)
                }
                "lastInventoryUpdateDate" => m
                    .last_inventory
                    .cmp(&super::fleet::parse_time(value).ok_or("not a date-time")?),
                "udid" => m.udid.as_str().cmp(value.as_str()),
                "serialNumber" => m.serial.as_str().cmp(value.as_str()),
                "displayName" => m.name.as_str().cmp(value.as_str()),
                other => return Err(other.to_string()),
            };
            use std::cmp::Ordering::*;
            Ok(match op {
                Op::Eq | Op::In => ord == Equal,
                Op::Ne | Op::Out => ord != Equal,
                Op::Lt => ord == Less,
                Op::Le => ord != Greater,
                Op::Gt => ord == Greater,
                Op::Ge => ord != Less,
            })
        }
    }
}
