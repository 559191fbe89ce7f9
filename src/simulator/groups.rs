//! The simulator's Classic computer and mobile device groups (`/JSSResource/computergroups`,
//! `/JSSResource/mobiledevicegroups`): the list of groups, and each group with its members,
//! computed from the devices at read time (smart groups follow the inventory, static groups
//! follow what was edited in Jamf), as Jamf answers them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use quick_xml::escape::escape;

use super::catalogue::COMPUTER_GROUPS;
use super::classic::{classic_not_found, xml};
use super::mobile::MOBILE_GROUPS;
use super::state::{lock, SimState};

/// `GET /JSSResource/computergroups`.
pub async fn computer_groups() -> Response {
    list("computer_groups", "computer_group", COMPUTER_GROUPS)
}

/// `GET /JSSResource/mobiledevicegroups`.
pub async fn mobile_groups() -> Response {
    list("mobile_device_groups", "mobile_device_group", MOBILE_GROUPS)
}

fn list(outer: &str, item: &str, groups: &[(&str, &str, bool)]) -> Response {
    let rows: String = groups
        .iter()
        .map(|(id, name, smart)| {
            format!("<{item}><id>{id}</id><name>{name}</name><is_smart>{smart}</is_smart></{item}>")
        })
        .collect();
    xml(
        format!("<{outer}><size>{}</size>{rows}</{outer}>", groups.len()),
        StatusCode::OK,
    )
}

/// `GET /JSSResource/computergroups/id/{id}`: the group with every member.
pub async fn computer_group(State(s): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Some(&(gid, name, smart)) = COMPUTER_GROUPS.iter().find(|g| g.0 == id) else {
        return classic_not_found();
    };
    let inner = lock(&s.inner);
    let members: Vec<String> = inner
        .fleet
        .values()
        .filter(|c| c.groups().iter().any(|g| g.0 == gid))
        .map(|c| {
            format!(
                "<computer><id>{}</id><name>{}</name><mac_address/><alt_mac_address/>\
                 <serial_number>{}</serial_number></computer>",
                c.id,
                escape(&c.name),
                c.serial
            )
        })
        .collect();
    group("computer_group", "computers", gid, name, smart, &members)
}

/// `GET /JSSResource/mobiledevicegroups/id/{id}`.
pub async fn mobile_group(State(s): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Some(&(gid, name, smart)) = MOBILE_GROUPS.iter().find(|g| g.0 == id) else {
        return classic_not_found();
    };
    let inner = lock(&s.inner);
    let members: Vec<String> = inner
        .mobiles
        .values()
        .filter(|m| m.groups().iter().any(|g| g.0 == gid))
        .map(|m| {
            format!(
                "<mobile_device><id>{}</id><name>{}</name><mac_address/><udid>{}</udid>\
                 <wifi_mac_address/><serial_number>{}</serial_number></mobile_device>",
                m.id,
                escape(&m.name),
                m.udid,
                m.serial
            )
        })
        .collect();
    group(
        "mobile_device_group",
        "mobile_devices",
        gid,
        name,
        smart,
        &members,
    )
}

fn group(
    root: &str,
    list: &str,
    id: &str,
    name: &str,
    smart: bool,
    members: &[String],
) -> Response {
    // Criteria and site carry `<id>`/`<name>` elements of their own, as in Jamf: a reader
    // must take member ids from the member list only.
    xml(
        format!(
            "<{root}><id>{id}</id><name>{name}</name><is_smart>{smart}</is_smart>\
             <site><id>-1</id><name>None</name></site><criteria><size>{crit}</size>{criterion}\
             </criteria><{list}><size>{n}</size>{members}</{list}></{root}>",
            crit = usize::from(smart),
            criterion = if smart {
                "<criterion><name>Managed</name><priority>0</priority><and_or>and</and_or>\
                 <search_type>is</search_type><value>Managed</value></criterion>"
            } else {
                ""
            },
            n = members.len(),
            members = members.concat(),
        ),
        StatusCode::OK,
    )
}
