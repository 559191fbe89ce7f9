//! The simulator's HTTP API: auth, version, computers inventory (list and detail), and the
//! `/_sim/*` control endpoints; Classic and mobile endpoints live in [`super::classic`].

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::fleet::{self, ApiVersion, SimComputer};
use super::state::{
    api_error, count_requests, invalid_filter, lock, not_found, unauthorized, Inner, ListQuery,
    SimState, SimulatedCost,
};
use super::{classic, groups, touch, webhooks};

pub(super) fn router(state: Arc<SimState>) -> Router {
    let mut router = Router::new();
    for (version, v) in [
        (ApiVersion::V1, "v1"),
        (ApiVersion::V3, "v3"),
        (ApiVersion::V4, "v4"),
    ] {
        router = router
            .route(
                &format!("/api/{v}/computers-inventory"),
                get(move |s, h, q| inventory(s, h, q, version)),
            )
            .route(
                &format!("/api/{v}/computers-inventory-detail/{{id}}"),
                get(move |s, h, id| detail(s, h, id, version)),
            );
    }
    router
        .route("/api/v1/oauth/token", post(oauth_v1))
        .route("/api/oauth/token", post(oauth_legacy))
        .route("/api/v1/auth/token", post(user_token))
        .route("/api/v1/auth/keep-alive", post(keep_alive))
        .route("/api/v1/auth/invalidate-token", post(invalidate))
        .route("/api/v1/jamf-pro-version", get(version))
        .route(
            "/api/v2/mobile-devices/detail",
            get(super::mobile_api::pro_detail),
        )
        .merge(classic_routes(state.clone()))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/touch", post(sim_touch))
        .route("/_sim/revoke", post(sim_revoke))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The Classic API (`/JSSResource`), behind its own auth and fault gate.
fn classic_routes(state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/JSSResource/advancedmobiledevicesearches",
            get(classic::list_searches),
        )
        .route(
            "/JSSResource/advancedmobiledevicesearches/id/{id}",
            get(classic::get_search_by_id)
                .post(classic::create_search)
                .put(classic::update_search)
                .delete(classic::delete_search),
        )
        .route(
            "/JSSResource/advancedmobiledevicesearches/name/{name}",
            get(classic::get_search_by_name),
        )
        .route("/JSSResource/mobiledevices", get(classic::list_devices))
        .route(
            "/JSSResource/mobiledevices/id/{id}",
            get(classic::mobile_device),
        )
        .route("/JSSResource/computergroups", get(groups::computer_groups))
        .route(
            "/JSSResource/computergroups/id/{id}",
            get(groups::computer_group),
        )
        .route(
            "/JSSResource/mobiledevicegroups",
            get(groups::mobile_groups),
        )
        .route(
            "/JSSResource/mobiledevicegroups/id/{id}",
            get(groups::mobile_group),
        )
        .route("/JSSResource/webhooks", get(webhooks::list))
        .route(
            "/JSSResource/webhooks/id/{id}",
            get(webhooks::get_one)
                .post(webhooks::write)
                .put(webhooks::write),
        )
        .route_layer(middleware::from_fn_with_state(state, classic::gate))
}

#[derive(Deserialize)]
struct OAuthForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn oauth_v1(State(s): State<Arc<SimState>>, form: Form<OAuthForm>) -> Response {
    if lock(&s.cfg).legacy_oauth_only {
        return not_found().await;
    }
    oauth(&s, form.0)
}

async fn oauth_legacy(State(s): State<Arc<SimState>>, form: Form<OAuthForm>) -> Response {
    oauth(&s, form.0)
}

fn oauth(s: &SimState, form: OAuthForm) -> Response {
    let ok = {
        let cfg = lock(&s.cfg);
        form.grant_type.as_deref() == Some("client_credentials")
            && form.client_id.as_deref() == Some(cfg.client_id.as_str())
            && form.client_secret.as_deref() == Some(cfg.client_secret.as_str())
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "Client authentication failed"})),
        )
            .into_response();
    }
    let (token, ttl) = s.issue_token();
    Json(json!({
        "access_token": token,
        "scope": "api-role:2",
        "token_type": "Bearer",
        "expires_in": ttl
    }))
    .into_response()
}

fn user_token_body(token: String, ttl: u64) -> Response {
    let expires = Utc::now() + chrono::Duration::seconds(ttl as i64);
    Json(json!({
        "token": token,
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }))
    .into_response()
}

async fn user_token(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = {
        let cfg = lock(&s.cfg);
        creds.as_deref() == Some(format!("{}:{}", cfg.username, cfg.password).as_str())
    };
    if !ok {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            "Unauthorized",
            None,
        );
    }
    let (token, ttl) = s.issue_token();
    user_token_body(token, ttl)
}

async fn keep_alive(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let Some(old) = s.authorize(&headers) else {
        return unauthorized();
    };
    lock(&s.inner).tokens.remove(&old);
    let (token, ttl) = s.issue_token();
    user_token_body(token, ttl)
}

async fn invalidate(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    match s.authorize(&headers) {
        Some(t) => {
            lock(&s.inner).tokens.remove(&t);
            StatusCode::NO_CONTENT.into_response()
        }
        None => unauthorized(),
    }
}

async fn version(State(s): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    let v = lock(&s.cfg).version.clone();
    Json(json!({ "version": v })).into_response()
}

async fn inventory(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    version: ApiVersion,
) -> Response {
    if let Some(r) = s.gate_version(&headers, version).await {
        return r;
    }
    let q = match ListQuery::parse(query, |sec| fleet::section_in(version, sec)) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (page_timeout_above, per_record_us) = {
        let cfg = lock(&s.cfg);
        (cfg.page_timeout_above, cfg.per_record_section_us)
    };
    if page_timeout_above > 0 && q.page_size > page_timeout_above {
        return (
            StatusCode::GATEWAY_TIMEOUT,
            "<html><body>504 Gateway Time-out</body></html>",
        )
            .into_response();
    }
    // Jamf's default order, which is not stable while data changes.
    let sort = q.sort.as_deref().unwrap_or("general.name:asc");
    let mut keys: Vec<(String, bool)> = Vec::new();
    for part in sort.split(',') {
        let (field, dir) = part.split_once(':').unwrap_or((part, "asc"));
        if fleet::sort_key(&SimComputer::placeholder(), field).is_none() {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("Invalid sort field: {field}"),
                Some("sort"),
            );
        }
        keys.push((field.to_string(), dir.eq_ignore_ascii_case("desc")));
    }
    let section_refs: Vec<&str> = q.sections.iter().map(String::as_str).collect();
    let (total, results) = {
        let inner = lock(&s.inner);
        let mut matched: Vec<&SimComputer> = Vec::new();
        for c in super::rsql::within(&inner.fleet, q.filter.as_ref(), "id")
            .filter(|c| !inner.unlisted.contains(&c.id))
        {
            match q.filter.as_ref().map(|e| c.matches(e, version)) {
                None | Some(Ok(true)) => matched.push(c),
                Some(Ok(false)) => {}
                Some(Err(field)) => return invalid_filter(&field),
            }
        }
        matched.sort_by(|a, b| {
            for (field, desc) in &keys {
                let (Some(x), Some(y)) = (fleet::sort_key(a, field), fleet::sort_key(b, field))
                else {
                    continue;
                };
                let o = fleet::cmp_values(&x, &y);
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let page: Vec<&SimComputer> = q.page_of(&matched).copied().collect();
        let beyond_general = section_refs.iter().any(|s| *s != "GENERAL");
        if beyond_general && page.iter().any(|c| inner.broken.contains(&c.id)) {
            return broken_data();
        }
        let results: Vec<serde_json::Value> = page
            .into_iter()
            .map(|c| corrupted(&inner, c.id, c.render(version, &section_refs)))
            .collect();
        (matched.len(), results)
    };
    let cost = SimulatedCost::per_record(per_record_us, results.len(), section_refs.len());
    let (churn, enrol, leave) = {
        let cfg = lock(&s.cfg);
        (cfg.churn_per_page, cfg.enrol_per_page, cfg.leave_per_page)
    };
    {
        let mut inner = lock(&s.inner);
        touch(&mut inner, churn);
        for _ in 0..enrol {
            super::enrol(&mut inner, chrono::Duration::zero());
        }
        super::leave(&mut inner, leave);
    }
    let mut resp = json_answer(&json!({ "totalCount": total, "results": results }));
    resp.extensions_mut().insert(cost);
    resp
}

/// A JSON answer whose records may hold odd text ([`super::odd::json_text`]).
fn json_answer(v: &serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::odd::json_text(v),
    )
        .into_response()
}

/// Jamf's answer when a device's data cannot be processed.
fn broken_data() -> Response {
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNEXPECTED_ERROR",
        "An unexpected error occurred while processing device data",
        None,
    )
}

fn corrupted(inner: &Inner, id: i64, mut v: serde_json::Value) -> serde_json::Value {
    if let Some(odd) = inner.odd.get(&id) {
        super::odd::computer(*odd, id, &mut v);
    }
    if inner.corrupt.contains(&id) {
        if let Some(g) = v.get_mut("general").and_then(|g| g.as_object_mut()) {
            g.insert("reportDate".into(), json!("last Tuesday"));
        } else if let Some(o) = v.as_object_mut() {
            o.insert("general".into(), json!({"reportDate": "last Tuesday"}));
        }
    }
    v
}

impl SimComputer {
    fn placeholder() -> SimComputer {
        SimComputer::generate(0, &mut fastrand::Rng::with_seed(0), Utc::now())
    }
}

async fn detail(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    version: ApiVersion,
) -> Response {
    if let Some(r) = s.gate_version(&headers, version).await {
        return r;
    }
    let all: Vec<&str> = fleet::SECTIONS.iter().map(|(n, _, _)| *n).collect();
    let id = id.parse::<i64>().ok();
    if id.is_some_and(|id| {
        let inner = lock(&s.inner);
        inner.broken.contains(&id) && inner.fleet.contains_key(&id)
    }) {
        return broken_data();
    }
    let found = id.and_then(|id| {
        let inner = lock(&s.inner);
        inner
            .fleet
            .get(&id)
            .map(|c| corrupted(&inner, id, c.render(version, &all)))
    });
    match found {
        Some(v) => json_answer(&v),
        None => api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Computer not found",
            Some("id"),
        ),
    }
}

async fn sim_stats(State(s): State<Arc<SimState>>) -> Response {
    Json(lock(&s.inner).stats.clone()).into_response()
}

#[derive(Deserialize)]
struct TouchQuery {
    count: Option<usize>,
}

async fn sim_touch(
    State(s): State<Arc<SimState>>,
    q: axum::extract::Query<TouchQuery>,
) -> Response {
    let ids = touch(&mut lock(&s.inner), q.count.unwrap_or(1));
    Json(json!({ "touched": ids })).into_response()
}

async fn sim_revoke(State(s): State<Arc<SimState>>) -> Response {
    lock(&s.inner).tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}
