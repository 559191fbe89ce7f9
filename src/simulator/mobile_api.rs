//! The Jamf Pro API's `/api/v2/mobile-devices/detail` (Jamf Pro 11.4 and later), served from
//! the simulator's mobile devices.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::rsql;
use super::state::{api_error, invalid_filter, lock, ListQuery, SimState, SimulatedCost};

use super::mobile::{SimMobile, SECTIONS};

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
        let listed = rsql::within(&inner.mobiles, q.filter.as_ref(), "mobileDeviceId")
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
    let cost = SimulatedCost::per_record(per_record_us, results.len(), q.sections.len());
    let mut resp = Json(json!({"totalCount": total, "results": results})).into_response();
    resp.extensions_mut().insert(cost);
    resp
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
