//! The simulator's mobile devices: Classic API advanced mobile device searches and XML records,
//! and the Jamf Pro API's `/api/v2/mobile-devices/detail`.
//!
//! Classic answers are XML (or JSON with `text/plain` when asked for JSON, as Jamf does), errors
//! are HTML status pages. Searches are evaluated at read time for the "Last Inventory Update"
//! criteria. A new search can be invisible for `replication_lag_ms` to requests that do not
//! carry the sticky-session cookie (a Jamf Cloud cluster node that has not caught up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use serde_json::{json, Value};

use super::{api_error, lock, rsql, unauthorized, SimState, STICKY_COOKIE};

const MODELS: &[(&str, &str, &str)] = &[
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
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><mobile_device><general><id>{id}</id>\
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
             <application_version>14.2</application_version><identifier>com.apple.Keynote</identifier>\
             </application><application><application_name>Self Service</application_name>\
             <application_version>11.0</application_version><identifier>com.jamf.selfservice</identifier>\
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

pub(crate) fn html_status(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
        format!(
            "<html><head><title>Status page</title></head><body><p>{}</p><p>{text}</p></body></html>",
            status.canonical_reason().unwrap_or("")
        ),
    )
        .into_response()
}

/// Classic's 404: an HTML status page, whatever was asked for.
pub(crate) fn classic_not_found() -> Response {
    html_status(
        StatusCode::NOT_FOUND,
        "The server has not found anything matching the request URI",
    )
}

pub(crate) fn xml(body: String, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn sticky(headers: &HeaderMap) -> bool {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains(STICKY_COOKIE))
}

/// Checks auth and faults for a Classic call.
pub(crate) async fn classic_gate(s: &SimState, headers: &HeaderMap) -> Option<Response> {
    if s.authorize(headers).is_none() {
        return Some(html_status(
            StatusCode::UNAUTHORIZED,
            "The request requires user authentication",
        ));
    }
    s.fault().await
}

pub async fn list_searches(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let inner = lock(&s.inner);
    let items: String = inner
        .searches
        .values()
        .map(|x| {
            format!(
                "<advanced_mobile_device_search><id>{}</id><name>{}</name></advanced_mobile_device_search>",
                x.id,
                escape(&x.name)
            )
        })
        .collect();
    xml(
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><advanced_mobile_device_searches><size>{}</size>{items}</advanced_mobile_device_searches>",
            inner.searches.len()
        ),
        StatusCode::OK,
    )
}

pub async fn get_search_by_id(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let id = id.parse::<i64>().ok();
    evaluate(&s, &headers, |x| Some(x.id) == id)
}

pub async fn get_search_by_name(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    evaluate(&s, &headers, |x| x.name == name)
}

fn evaluate(s: &SimState, headers: &HeaderMap, pick: impl Fn(&SimSearch) -> bool) -> Response {
    let lag = Duration::from_millis(lock(&s.cfg).replication_lag_ms);
    let inner = lock(&s.inner);
    let Some(search) = inner.searches.values().find(|x| pick(x)) else {
        return classic_not_found();
    };
    if !sticky(headers) && search.created.elapsed() < lag {
        // Another cluster node that has not seen the new search yet.
        return classic_not_found();
    }
    let now = Utc::now();
    let criteria = match search.less_than_days {
        Some(d) => format!(
            "<criteria><size>1</size><criterion><name>Last Inventory Update</name><priority>0</priority>\
             <and_or>and</and_or><search_type>less than x days ago</search_type><value>{d}</value>\
             <opening_paren>false</opening_paren><closing_paren>false</closing_paren></criterion></criteria>"
        ),
        None => "<criteria><size>0</size></criteria>".into(),
    };
    let hits: Vec<&SimMobile> = inner
        .mobiles
        .values()
        .chain(inner.vanished.values())
        .filter(|m| match search.less_than_days {
            Some(d) => m.last_inventory > now - chrono::Duration::days(i64::from(d)),
            None => true,
        })
        .collect();
    let rows: String = hits
        .iter()
        .map(|m| {
            format!(
                "<mobile_device><id>{}</id><name>{}</name><udid>{}</udid>\
                 <Last_Inventory_Update>{}</Last_Inventory_Update><UDID>{}</UDID></mobile_device>",
                m.id,
                escape(&m.name),
                m.udid,
                m.last_inventory.format("%Y-%m-%d %H:%M:%S"),
                m.udid
            )
        })
        .collect();
    xml(
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><advanced_mobile_device_search><id>{}</id>\
             <name>{}</name><view_as>Standard Web Page</view_as>{criteria}\
             <display_fields><size>2</size><display_field><name>Last Inventory Update</name></display_field>\
             <display_field><name>UDID</name></display_field></display_fields>\
             <mobile_devices><size>{}</size>{rows}</mobile_devices></advanced_mobile_device_search>",
            search.id,
            escape(&search.name),
            hits.len()
        ),
        StatusCode::OK,
    )
}

/// Name and `less than x days ago` value of a posted search definition.
fn parse_definition(body: &str) -> Result<(Option<String>, Option<Option<u32>>), String> {
    let (root, v) = crate::jamf::classic::xml_to_json(body)?;
    if root != "advanced_mobile_device_search" {
        return Err(format!("unexpected root <{root}>"));
    }
    let name = v.get("name").and_then(Value::as_str).map(str::to_string);
    let window = match v.get("criteria") {
        None => None,
        Some(Value::Array(criteria)) => {
            let mut days = None;
            for c in criteria {
                if c.get("name").and_then(Value::as_str) == Some("Last Inventory Update")
                    && c.get("search_type").and_then(Value::as_str) == Some("less than x days ago")
                {
                    days = c
                        .get("value")
                        .and_then(Value::as_str)
                        .and_then(|d| d.trim().parse().ok());
                    if days.is_none() {
                        return Err("criterion value is not a whole number of days".into());
                    }
                }
            }
            Some(days)
        }
        Some(_) => return Err("criteria is not a list".into()),
    };
    Ok((name, window))
}

pub async fn create_search(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    if id != "0" {
        return html_status(StatusCode::CONFLICT, "Use id 0 to create");
    }
    let (name, window) = match parse_definition(&body) {
        Ok((Some(n), w)) if !n.is_empty() => (n, w.flatten()),
        Ok(_) => return html_status(StatusCode::BAD_REQUEST, "Problem with name"),
        Err(e) => return html_status(StatusCode::BAD_REQUEST, &e),
    };
    let mut inner = lock(&s.inner);
    if inner.searches.values().any(|x| x.name == name) {
        return html_status(StatusCode::CONFLICT, "Error: Duplicate name");
    }
    inner.next_search_id += 1;
    let id = inner.next_search_id;
    inner.searches.insert(
        id,
        SimSearch {
            id,
            name,
            less_than_days: window,
            created: Instant::now(),
            updates: 0,
        },
    );
    inner.stats.searches_created += 1;
    xml(
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><advanced_mobile_device_search><id>{id}</id></advanced_mobile_device_search>"),
        StatusCode::CREATED,
    )
}

pub async fn update_search(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let (name, window) = match parse_definition(&body) {
        Ok(v) => v,
        Err(e) => return html_status(StatusCode::BAD_REQUEST, &e),
    };
    let mut inner = lock(&s.inner);
    let Some(search) = id
        .parse::<i64>()
        .ok()
        .and_then(|id| inner.searches.get_mut(&id))
    else {
        return classic_not_found();
    };
    // Partial update per top-level section, as Jamf does.
    if let Some(n) = name {
        search.name = n;
    }
    if let Some(w) = window {
        search.less_than_days = w;
    }
    search.updates += 1;
    let id = search.id;
    inner.stats.searches_updated += 1;
    xml(
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><advanced_mobile_device_search><id>{id}</id></advanced_mobile_device_search>"),
        StatusCode::CREATED,
    )
}

pub async fn delete_search(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let removed = id
        .parse::<i64>()
        .ok()
        .and_then(|id| lock(&s.inner).searches.remove(&id));
    match removed {
        Some(x) => xml(
            format!(
                "<advanced_mobile_device_search><id>{}</id></advanced_mobile_device_search>",
                x.id
            ),
            StatusCode::OK,
        ),
        None => classic_not_found(),
    }
}

pub async fn list_devices(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let inner = lock(&s.inner);
    let rows: String = inner
        .mobiles
        .values()
        .map(|m| {
            format!(
                "<mobile_device><id>{}</id><name>{}</name><device_name>{}</device_name><udid>{}</udid>\
                 <serial_number>{}</serial_number><managed>{}</managed><supervised>{}</supervised>\
                 <model>{}</model><username>{}</username></mobile_device>",
                m.id,
                escape(&m.name),
                escape(&m.name),
                m.udid,
                m.serial,
                m.managed,
                m.supervised,
                MODELS[m.model].0,
                m.username
            )
        })
        .collect();
    xml(
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><mobile_devices><size>{}</size>{rows}</mobile_devices>",
            inner.mobiles.len()
        ),
        StatusCode::OK,
    )
}

pub async fn mobile_device(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = classic_gate(&s, &headers).await {
        return r;
    }
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("json"));
    let inner = lock(&s.inner);
    let Some(m) = id.parse::<i64>().ok().and_then(|id| inner.mobiles.get(&id)) else {
        return classic_not_found();
    };
    if wants_json {
        // Classic JSON arrives labelled text/plain.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
            m.to_classic_json().to_string(),
        )
            .into_response();
    }
    let mut body = m.to_xml();
    if inner.corrupt_mobiles.contains(&m.id) {
        // A record cut off mid-way.
        body.truncate(body.len() / 2);
    }
    xml(body, StatusCode::OK)
}

pub async fn pro_detail(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if s.authorize(&headers).is_none() {
        return unauthorized();
    }
    if let Some(r) = s.fault().await {
        return r;
    }
    let mut sections: Vec<String> = Vec::new();
    let mut page: usize = 0;
    let mut page_size: usize = 100;
    let mut filter: Option<String> = None;
    let mut desc = false;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "section" => sections.extend(v.split(',').map(|p| p.trim().to_string())),
            "page" => page = v.parse().unwrap_or(0),
            "page-size" => page_size = v.parse::<usize>().unwrap_or(100).clamp(1, 2000),
            "sort" => match v.as_ref() {
                "mobileDeviceId:asc" | "mobileDeviceId" | "displayName:asc" => {}
                "mobileDeviceId:desc" => desc = true,
                other => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!("Invalid sort field: {other}"),
                        Some("sort"),
                    )
                }
            },
            "filter" if !v.is_empty() => filter = Some(v.into_owned()),
            _ => {}
        }
    }
    if sections.is_empty() {
        sections.push("GENERAL".into());
    }
    for sec in &sections {
        if !crate::config::MOBILE_DEVICE_SECTIONS.contains(&sec.as_str()) {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAMETER_VALUE",
                &format!("Invalid section value: {sec}"),
                Some("section"),
            );
        }
    }
    let expr = match filter.as_deref().map(rsql::parse) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_RSQL_FILTER",
                &e,
                Some("filter"),
            )
        }
    };
    let inner = lock(&s.inner);
    let mut matched: Vec<&SimMobile> = Vec::new();
    for m in inner.mobiles.values() {
        match expr.as_ref().map(|e| matches(m, e)) {
            None | Some(Ok(true)) => matched.push(m),
            Some(Ok(false)) => {}
            Some(Err(field)) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("Invalid filter: {field}"),
                    Some("filter"),
                )
            }
        }
    }
    if desc {
        matched.reverse();
    }
    let results: Vec<Value> = matched
        .iter()
        .skip(page.saturating_mul(page_size))
        .take(page_size)
        .map(|m| m.to_pro_json(&sections))
        .collect();
    Json(json!({"totalCount": matched.len(), "results": results})).into_response()
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
                    .cmp(&crate::jamf::models::parse_jamf_time(value).ok_or("not a date-time")?),
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
