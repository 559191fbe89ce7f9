//! The Classic API (`/JSSResource`, XML) as jamf-sync needs it: advanced mobile device
//! searches, mobile device records and lists, computer and mobile device groups with their
//! members, and webhooks.
//!
//! Invariants: every answer is read through [`xml_to_json`] or, for an evaluated search that
//! can list a whole fleet, streamed through [`walk`] (both bounded, never panicking); a
//! malformed answer is a [`JamfError::Decode`] naming the endpoint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;

use super::decode::parse_classic_time;
use super::xml::{walk, xml_to_json};
use super::{Call, JamfClient, JamfError};
use crate::domain::Kind;

impl JamfClient {
    async fn classic_text(&self, call: Call<'_>) -> Result<(String, DateTime<Utc>), JamfError> {
        let endpoint = call.endpoint;
        let answer = self.call(call).await?;
        // `Vec::from` takes the buffer over instead of copying it (a fleet-sized list is big).
        let text = String::from_utf8(Vec::from(answer.body)).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })?;
        Ok((text, answer.requested_at))
    }

    fn classic_call<'a>(
        method: Method,
        endpoint: &'static str,
        path: String,
        body: Option<&'a str>,
    ) -> Call<'a> {
        Call {
            method,
            endpoint,
            path,
            query: &[],
            accept: "application/xml",
            body: body.map(|b| ("application/xml", b)),
            timeout: None,
            shrinkable: false,
        }
    }

    /// A Classic GET, parsed by `parse`.
    async fn classic_get<T>(
        &self,
        endpoint: &'static str,
        path: String,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, JamfError> {
        let (xml, _) = self
            .classic_text(Self::classic_call(Method::GET, endpoint, path, None))
            .await?;
        parse(&xml).map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// `(id, name)` of every advanced mobile device search (listing does not evaluate them).
    pub async fn advanced_searches(&self) -> Result<Vec<(i64, String)>, JamfError> {
        self.classic_get(
            "/JSSResource/advancedmobiledevicesearches",
            "JSSResource/advancedmobiledevicesearches".into(),
            |xml| parse_named_list(xml, "advanced_mobile_device_search"),
        )
        .await
    }

    /// Creates an advanced mobile device search; 409 when the name exists.
    pub async fn create_search(&self, xml: &str) -> Result<i64, JamfError> {
        let endpoint = "/JSSResource/advancedmobiledevicesearches/id/{id}";
        let (answer, _) = self
            .classic_text(Self::classic_call(
                Method::POST,
                endpoint,
                "JSSResource/advancedmobiledevicesearches/id/0".into(),
                Some(xml),
            ))
            .await?;
        parse_created_id(&answer).map_err(|message| JamfError::Decode { endpoint, message })
    }

    pub async fn update_search(&self, id: i64, xml: &str) -> Result<(), JamfError> {
        self.classic_text(Self::classic_call(
            Method::PUT,
            "/JSSResource/advancedmobiledevicesearches/id/{id}",
            format!("JSSResource/advancedmobiledevicesearches/id/{id}"),
            Some(xml),
        ))
        .await
        .map(|_| ())
    }

    /// Reads (and so evaluates, on the server) an advanced search.
    pub async fn evaluate_search(
        &self,
        id: i64,
        timeout: Duration,
    ) -> Result<SearchResult, JamfError> {
        let endpoint = "/JSSResource/advancedmobiledevicesearches/id/{id}";
        let mut call = Self::classic_call(
            Method::GET,
            endpoint,
            format!("JSSResource/advancedmobiledevicesearches/id/{id}"),
            None,
        );
        call.timeout = Some(timeout);
        let (xml, _) = self.classic_text(call).await?;
        parse_search_results(&xml).map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// `(id, name)` of every webhook configured in Jamf.
    pub async fn webhooks(&self) -> Result<Vec<(i64, String)>, JamfError> {
        self.classic_get(
            "/JSSResource/webhooks",
            "JSSResource/webhooks".into(),
            |xml| parse_named_list(xml, "webhook"),
        )
        .await
    }

    /// Creates (`id` `None`) or updates a webhook from its Classic XML; returns its id.
    pub async fn put_webhook(&self, id: Option<i64>, xml: &str) -> Result<i64, JamfError> {
        let endpoint = "/JSSResource/webhooks/id/{id}";
        let (method, path) = match id {
            Some(id) => (Method::PUT, format!("JSSResource/webhooks/id/{id}")),
            None => (Method::POST, "JSSResource/webhooks/id/0".to_string()),
        };
        let (answer, _) = self
            .classic_text(Self::classic_call(method, endpoint, path, Some(xml)))
            .await?;
        match id {
            Some(id) => Ok(id),
            None => {
                parse_created_id(&answer).map_err(|message| JamfError::Decode { endpoint, message })
            }
        }
    }

    /// Every mobile device id (`GET /JSSResource/mobiledevices`, one request, no evaluation).
    pub async fn mobile_device_ids(&self) -> Result<Vec<i64>, JamfError> {
        self.classic_get(
            "/JSSResource/mobiledevices",
            "JSSResource/mobiledevices".into(),
            parse_device_list,
        )
        .await
    }

    /// One mobile device's full record, as XML, and when it was requested.
    pub async fn mobile_device_xml(&self, id: i64) -> Result<(String, DateTime<Utc>), JamfError> {
        self.classic_text(Self::classic_call(
            Method::GET,
            "/JSSResource/mobiledevices/id/{id}",
            format!("JSSResource/mobiledevices/id/{id}"),
            None,
        ))
        .await
    }
}

/// A computer or mobile device group as Jamf lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
    pub smart: bool,
}

/// Where one kind's groups are in the Classic API, and the elements their records use.
struct GroupApi {
    /// `JSSResource/<path>` lists them, `JSSResource/<path>/id/{id}` is one group.
    path: &'static str,
    list_endpoint: &'static str,
    record_endpoint: &'static str,
    /// A group's element (in the list and as a record's root).
    item: &'static str,
    /// A record's member list and member elements.
    members: &'static str,
    member: &'static str,
}

fn group_api(kind: Kind) -> &'static GroupApi {
    static COMPUTERS: GroupApi = GroupApi {
        path: "computergroups",
        list_endpoint: "/JSSResource/computergroups",
        record_endpoint: "/JSSResource/computergroups/id/{id}",
        item: "computer_group",
        members: "computers",
        member: "computer",
    };
    static MOBILE_DEVICES: GroupApi = GroupApi {
        path: "mobiledevicegroups",
        list_endpoint: "/JSSResource/mobiledevicegroups",
        record_endpoint: "/JSSResource/mobiledevicegroups/id/{id}",
        item: "mobile_device_group",
        members: "mobile_devices",
        member: "mobile_device",
    };
    match kind {
        Kind::Computers => &COMPUTERS,
        Kind::MobileDevices => &MOBILE_DEVICES,
    }
}

/// Group ids are Jamf's numbers; anything else must not reach a path.
fn numeric(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_digit())
}

impl JamfClient {
    /// Every group of a kind (`GET /JSSResource/computergroups` or `/mobiledevicegroups`).
    pub async fn groups(&self, kind: Kind) -> Result<Vec<GroupRef>, JamfError> {
        let api = group_api(kind);
        self.classic_get(
            api.list_endpoint,
            format!("JSSResource/{}", api.path),
            |xml| parse_group_list(xml, &format!("{}s", api.item), api.item),
        )
        .await
    }

    /// The ids of a group's members; `None` when the group is gone (404).
    pub async fn group_members(&self, kind: Kind, id: &str) -> Result<Option<Vec<i64>>, JamfError> {
        let api = group_api(kind);
        if !numeric(id) {
            return Err(JamfError::Decode {
                endpoint: api.record_endpoint,
                message: format!("group id {id:?} is not a number"),
            });
        }
        let path = format!("JSSResource/{}/id/{id}", api.path);
        match self
            .classic_get(api.record_endpoint, path, |xml| {
                parse_group_members(xml, api.item, kind)
            })
            .await
        {
            Ok(ids) => Ok(Some(ids)),
            Err(JamfError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `(id, name, is_smart)` of every `<item>` of a Classic group list `<root>`.
pub fn parse_group_list(xml: &str, root: &str, item: &str) -> Result<Vec<GroupRef>, String> {
    let mut groups = Vec::new();
    let mut current: Option<GroupRef> = None;
    let found = walk(xml, |parents, name, text| {
        if parents.len() == 2 && parents[1] == item {
            let g = current.get_or_insert_with(GroupRef::default);
            match name {
                "id" => g.id = text.trim().to_string(),
                "name" => g.name = text.to_string(),
                "is_smart" => g.smart = text.trim() == "true",
                _ => {}
            }
        } else if parents.len() == 1 && name == item {
            let g = current.take().unwrap_or_default();
            if !numeric(&g.id) {
                return Err(format!("a listed group has no numeric <id> ({:?})", g.name));
            }
            groups.push(g);
        }
        Ok(())
    })?;
    if found != root {
        return Err(format!("expected <{root}>, got <{found}>"));
    }
    Ok(groups)
}

/// The member ids of a Classic group record: only `<computers><computer><id>` (or
/// `<mobile_devices><mobile_device><id>`) count; the group's own id, its site and its criteria
/// have `<id>`s too.
pub fn parse_group_members(xml: &str, root: &str, kind: Kind) -> Result<Vec<i64>, String> {
    let api = group_api(kind);
    let (list, member) = (api.members, api.member);
    let mut ids = Vec::new();
    let found = walk(xml, |parents, name, text| {
        if name == "id" && parents.len() == 3 && parents[1] == list && parents[2] == member {
            ids.push(
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("a member id {:?} is not a number", text.trim()))?,
            );
        }
        Ok(())
    })?;
    if found != root {
        return Err(format!("expected <{root}>, got <{found}>"));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// One row of an evaluated advanced search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: i64,
    /// The "Last Inventory Update" display field, when it parsed.
    pub last_inventory_update: Option<DateTime<Utc>>,
}

/// One criterion of an advanced search, as Jamf evaluated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criterion {
    pub name: String,
    pub search_type: String,
    pub value: String,
}

impl Criterion {
    /// `Last Inventory Update` `less than x days ago` `days`: the one jamf-sync sets.
    pub fn window(days: u32) -> Self {
        Criterion {
            name: "Last Inventory Update".into(),
            search_type: "less than x days ago".into(),
            value: days.to_string(),
        }
    }

    /// Equal as Jamf compares them: names and types without regard to case.
    pub fn same(&self, other: &Criterion) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.search_type.eq_ignore_ascii_case(&other.search_type)
            && self.value.trim() == other.value.trim()
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{} {} {}`", self.name, self.search_type, self.value)
    }
}

/// An evaluated advanced mobile device search: the criteria it was evaluated with and the
/// devices it found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchResult {
    pub criteria: Vec<Criterion>,
    pub hits: Vec<SearchHit>,
}

/// Reads an evaluated advanced mobile device search, streaming: the document is never held
/// as a tree, so memory grows with the number of hits only.
pub fn parse_search_results(xml: &str) -> Result<SearchResult, String> {
    let mut out = SearchResult::default();
    let mut criterion = Criterion::default();
    let (mut id, mut liu) = (None, None);
    let root = walk(xml, |parents, name, text| {
        match (parents.get(1).map(String::as_str), parents.len()) {
            (Some("criteria"), 3) => match name {
                "name" => criterion.name = text.trim().to_string(),
                "search_type" => criterion.search_type = text.trim().to_string(),
                "value" => criterion.value = text.trim().to_string(),
                _ => {}
            },
            (Some("criteria"), 2) if name == "criterion" => {
                out.criteria.push(std::mem::take(&mut criterion));
            }
            (Some("mobile_devices"), 3) if name == "id" => id = text.trim().parse::<i64>().ok(),
            // Jamf turns the display name's spaces into underscores, not always consistently.
            (Some("mobile_devices"), 3) if name.eq_ignore_ascii_case("last_inventory_update") => {
                liu = parse_classic_time(text);
            }
            (Some("mobile_devices"), 2) if name == "mobile_device" => {
                let id = id.take().ok_or("a listed device has no numeric <id>")?;
                out.hits.push(SearchHit {
                    id,
                    last_inventory_update: liu.take(),
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    if root != "advanced_mobile_device_search" {
        return Err(format!(
            "expected <advanced_mobile_device_search>, got <{root}>"
        ));
    }
    Ok(out)
}

/// Ids of `GET /JSSResource/mobiledevices` (`<mobile_devices><size>…<mobile_device><id>…`).
pub fn parse_device_list(xml: &str) -> Result<Vec<i64>, String> {
    // Streamed: the list names every device of the fleet.
    let mut ids = Vec::new();
    let mut id = None;
    let root = walk(xml, |parents, name, text| {
        match (parents.len(), name) {
            (2, "id") if parents[1] == "mobile_device" => id = text.trim().parse::<i64>().ok(),
            (1, "mobile_device") => {
                ids.push(
                    id.take()
                        .ok_or("a listed mobile device has no numeric <id>")?,
                );
            }
            _ => {}
        }
        Ok(())
    })?;
    if root != "mobile_devices" {
        return Err(format!("expected <mobile_devices>, got <{root}>"));
    }
    Ok(ids)
}

/// `(id, name)` of every `<item>` in a Classic list, e.g. `advanced_mobile_device_search` (the
/// list does not evaluate searches) or `webhook`.
pub fn parse_named_list(xml: &str, item: &str) -> Result<Vec<(i64, String)>, String> {
    let (_, json) = xml_to_json(xml)?;
    let items = match json {
        Value::Array(items) => items,
        Value::Object(map) => map
            .into_iter()
            .find(|(k, _)| k == item)
            .map(|(_, v)| match v {
                Value::Array(a) => a,
                other => vec![other],
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.trim().parse().ok()?;
            let name = item.get("name")?.as_str()?.to_string();
            Some((id, name))
        })
        .collect())
}

/// The id in a create/update answer: `<advanced_mobile_device_search><id>123</id>…`.
pub fn parse_created_id(xml: &str) -> Result<i64, String> {
    let (_, json) = xml_to_json(xml)?;
    json.get("id")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "no <id> in the answer".to_string())
}

/// Whole days for `Last Inventory Update` `less than x days ago` covering everything since
/// `since`: rounded up, plus one day because Jamf may evaluate by calendar day in the server's
/// time zone. Devices older than `since` are dropped again on our side.
pub fn search_window_days(now: DateTime<Utc>, since: DateTime<Utc>) -> u32 {
    let secs = (now - since).num_seconds().max(0);
    let days = (secs + 86_399) / 86_400;
    (days.max(1) + 1).min(i64::from(u32::MAX)) as u32
}

/// The advanced search definition jamf-sync owns: one optional date criterion, and the
/// display fields the sync reads.
pub fn search_xml(name: &str, window_days: Option<u32>) -> String {
    let name = quick_xml::escape::escape(name);
    let criteria = match window_days {
        Some(days) => format!(
            "<criteria><size>1</size><criterion><name>Last Inventory Update</name>\
             <priority>0</priority><and_or>and</and_or><search_type>less than x days ago</search_type>\
             <value>{days}</value><opening_paren>false</opening_paren>\
             <closing_paren>false</closing_paren></criterion></criteria>"
        ),
        None => "<criteria><size>0</size></criteria>".to_string(),
    };
    format!(
        "<advanced_mobile_device_search><name>{name}</name>{criteria}\
         <display_fields><size>2</size><display_field><name>Last Inventory Update</name></display_field>\
         <display_field><name>UDID</name></display_field></display_fields>\
         </advanced_mobile_device_search>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn groups_and_their_members_are_read_from_the_right_elements() {
        let list = "<?xml version=\"1.0\"?><computer_groups><size>2</size>\
            <computer_group><id>1</id><name>All &amp; Managed</name><is_smart>true</is_smart></computer_group>\
            <computer_group><id>7</id><name>Pilot</name><is_smart>false</is_smart></computer_group>\
            </computer_groups>";
        let groups = parse_group_list(list, "computer_groups", "computer_group");
        assert_eq!(
            groups,
            Ok(vec![
                GroupRef {
                    id: "1".into(),
                    name: "All & Managed".into(),
                    smart: true
                },
                GroupRef {
                    id: "7".into(),
                    name: "Pilot".into(),
                    smart: false
                },
            ])
        );
        assert!(parse_group_list(list, "mobile_device_groups", "mobile_device_group").is_err());
        let bad = "<computer_groups><size>1</size><computer_group><name>x</name></computer_group></computer_groups>";
        assert!(parse_group_list(bad, "computer_groups", "computer_group").is_err());

        let group = "<computer_group><id>9</id><name>G</name><is_smart>true</is_smart>\
            <site><id>-1</id><name>None</name></site><criteria><size>1</size><criterion>\
            <name>Managed</name></criterion></criteria><computers><size>3</size>\
            <computer><id>12</id><name>a</name></computer><computer><id>3</id></computer>\
            <computer><id>12</id></computer></computers></computer_group>";
        assert_eq!(
            parse_group_members(group, "computer_group", Kind::Computers),
            Ok(vec![3, 12])
        );
        assert!(parse_group_members(group, "mobile_device_group", Kind::MobileDevices).is_err());
        let bad = group.replace("<id>3</id>", "<id>three</id>");
        assert!(parse_group_members(&bad, "computer_group", Kind::Computers).is_err());
        let empty = "<mobile_device_group><id>2</id><mobile_devices><size>0</size></mobile_devices></mobile_device_group>";
        assert_eq!(
            parse_group_members(empty, "mobile_device_group", Kind::MobileDevices),
            Ok(vec![])
        );
    }

    #[test]
    fn window_days_at_boundaries() {
        let now = t("2026-11-24T00:00:00Z");
        // Anything within the last day: 1 day, +1 for calendar-day evaluation.
        assert_eq!(search_window_days(now, now), 2);
        assert_eq!(search_window_days(now, t("2026-11-23T23:59:59Z")), 2);
        assert_eq!(search_window_days(now, t("2026-11-23T00:00:00Z")), 2);
        // One second past a whole day rounds up.
        assert_eq!(search_window_days(now, t("2026-11-22T23:59:59Z")), 3);
        assert_eq!(search_window_days(now, t("2026-11-17T00:00:00Z")), 8);
        // A cursor in the future (clock skew) still asks for at least a day.
        assert_eq!(search_window_days(now, t("2026-11-25T00:00:00Z")), 2);
    }

    #[test]
    fn device_list_is_read_streaming() {
        let xml =
            "<mobile_devices><size>2</size><mobile_device><id>4</id><name>a</name></mobile_device>\
                   <mobile_device><id> 9 </id><name>b</name></mobile_device></mobile_devices>";
        assert_eq!(parse_device_list(xml), Ok(vec![4, 9]));
        assert_eq!(
            parse_device_list("<mobile_devices><size>0</size></mobile_devices>"),
            Ok(vec![])
        );
        assert!(parse_device_list(
            "<mobile_devices><mobile_device><name>x</name></mobile_device></mobile_devices>"
        )
        .is_err());
        assert!(parse_device_list("<computers></computers>").is_err());
    }

    #[test]
    fn search_results_and_list() {
        let xml = "<advanced_mobile_device_search><id>3</id><name>n</name>\
                   <criteria><size>1</size><criterion><name>Last Inventory Update</name><priority>0</priority>\
                   <and_or>and</and_or><search_type>less than x days ago</search_type><value>2</value>\
                   </criterion></criteria><mobile_devices><size>2</size>\
                   <mobile_device><id>1</id><name>a</name><udid>u</udid><Last_Inventory_Update>2026-11-20 10:00:00</Last_Inventory_Update></mobile_device>\
                   <mobile_device><id>2</id><name>b</name><Last_Inventory_Update>gibberish</Last_Inventory_Update></mobile_device>\
                   </mobile_devices></advanced_mobile_device_search>";
        let result = parse_search_results(xml).unwrap_or_default();
        assert_eq!(result.criteria, vec![Criterion::window(2)]);
        let hits = result.hits;
        assert_eq!(hits.len(), 2);
        assert_eq!(
            hits[0].last_inventory_update,
            Some(t("2026-11-20T10:00:00Z"))
        );
        assert_eq!(hits[1].last_inventory_update, None);
        let list = "<advanced_mobile_device_searches><size>2</size><advanced_mobile_device_search><id>1</id><name>x</name></advanced_mobile_device_search>\
                    <advanced_mobile_device_search><id>9</id><name>jamf-sync: a &amp; b</name></advanced_mobile_device_search></advanced_mobile_device_searches>";
        assert_eq!(
            parse_named_list(list, "advanced_mobile_device_search").unwrap_or_default(),
            vec![(1, "x".to_string()), (9, "jamf-sync: a & b".to_string())]
        );
        assert_eq!(
            parse_created_id(
                "<advanced_mobile_device_search><id>123</id></advanced_mobile_device_search>"
            ),
            Ok(123)
        );
    }
}
