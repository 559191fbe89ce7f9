//! The simulator's Classic API (`/JSSResource`): advanced mobile device searches (evaluated at
//! read time), mobile device records and the device list. Answers are XML (or JSON labelled
//! `text/plain` when asked for JSON, as Jamf does); errors are HTML status pages. A new search
//! can be invisible for `replication_lag_ms` to requests that do not carry the sticky-session
//! cookie (a Jamf Cloud cluster node that has not caught up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use quick_xml::escape::escape;

use super::mobile::{SimMobile, SimSearch, MODELS};
use super::state::{lock, SimState, STICKY_COOKIE};
use super::xml::Element;

pub(super) fn html_status(status: StatusCode, text: &str) -> Response {
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
pub(super) fn classic_not_found() -> Response {
    html_status(
        StatusCode::NOT_FOUND,
        "The server has not found anything matching the request URI",
    )
}

/// An XML answer; the declaration is prepended here.
pub(super) fn xml(body: String, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml;charset=UTF-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{body}"),
    )
        .into_response()
}

/// What Classic's create and update answer: the resource's id.
pub(super) fn created(root: &str, id: i64) -> Response {
    xml(
        format!("<{root}><id>{id}</id></{root}>"),
        StatusCode::CREATED,
    )
}

fn sticky(headers: &HeaderMap) -> bool {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains(STICKY_COOKIE))
}

/// Auth and faults for every Classic call (a route layer): Classic answers 401 with an HTML
/// status page.
pub(super) async fn gate(State(s): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if s.authorize(req.headers()).is_none() {
        return html_status(
            StatusCode::UNAUTHORIZED,
            "The request requires user authentication",
        );
    }
    if let Some(r) = s.fault().await {
        return r;
    }
    next.run(req).await
}

pub async fn list_searches(State(s): State<Arc<SimState>>) -> Response {
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
            "<advanced_mobile_device_searches><size>{}</size>{items}</advanced_mobile_device_searches>",
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
    let id = id.parse::<i64>().ok();
    evaluate(&s, &headers, |x| Some(x.id) == id)
}

pub async fn get_search_by_name(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
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
            "<advanced_mobile_device_search><id>{}</id>\
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

/// Name and `less than x days ago` value of a posted search definition; `None` for a section
/// the definition leaves out (Jamf's updates are partial, per top-level section).
fn parse_definition(body: &str) -> Result<(Option<String>, Option<Option<u32>>), String> {
    let doc = Element::parse(body)?;
    if doc.name != "advanced_mobile_device_search" {
        return Err(format!("unexpected root <{}>", doc.name));
    }
    let name = doc.text_of("name").map(str::to_string);
    let window = match doc.child("criteria") {
        None => None,
        Some(criteria) => {
            let mut days = None;
            for c in criteria.children.iter().filter(|c| c.name == "criterion") {
                if c.text_of("name") == Some("Last Inventory Update")
                    && c.text_of("search_type") == Some("less than x days ago")
                {
                    days = c.text_of("value").and_then(|d| d.trim().parse().ok());
                    if days.is_none() {
                        return Err("criterion value is not a whole number of days".into());
                    }
                }
            }
            Some(days)
        }
    };
    Ok((name, window))
}

pub async fn create_search(
    State(s): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
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
    created("advanced_mobile_device_search", id)
}

pub async fn update_search(
    State(s): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
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
    created("advanced_mobile_device_search", id)
}

pub async fn delete_search(State(s): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
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

pub async fn list_devices(State(s): State<Arc<SimState>>) -> Response {
    let inner = lock(&s.inner);
    let listed: Vec<&SimMobile> = inner
        .mobiles
        .values()
        .filter(|m| !inner.unlisted_mobiles.contains(&m.id))
        .collect();
    let rows: String = listed
        .iter()
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
            "<mobile_devices><size>{}</size>{rows}</mobile_devices>",
            listed.len()
        ),
        StatusCode::OK,
    )
}

pub async fn mobile_device(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
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
    if let Some(odd) = inner.odd_mobiles.get(&m.id) {
        super::odd::mobile_xml(*odd, m.id, &mut body);
    }
    if inner.corrupt_mobiles.contains(&m.id) {
        // A record cut off mid-way.
        body.truncate(body.len() / 2);
    }
    xml(body, StatusCode::OK)
}
