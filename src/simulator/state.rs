//! The simulator's shared state and the machinery around every request: tokens, fault
//! injection, the load model, request and connection counting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::config::{SimConfig, SimStats};
use super::fleet::{self, ApiVersion, SimComputer};
use super::{events, mobile};

pub(crate) struct Inner {
    pub(super) fleet: BTreeMap<i64, SimComputer>,
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) rng: fastrand::Rng,
    pub(super) stats: SimStats,
    pub(super) outage_left: u64,
    /// Requests that passed the fault check so far (for `outage_after`).
    pub(super) fault_checks: u64,
    pub(super) auth_requests: u64,
    /// Ids whose records are served malformed (an unparseable `reportDate`).
    pub(super) corrupt: std::collections::HashSet<i64>,
    /// Computers whose data Jamf cannot process: any answer holding more than their GENERAL
    /// section is a 500 (for a whole list page, as Jamf does).
    pub(super) broken: std::collections::HashSet<i64>,
    /// Mobile devices the same: `/api/v2/mobile-devices/detail` answers 500, or with
    /// `exception-handling=LENIENT` the device with its sections beyond GENERAL `null`.
    pub(super) broken_mobiles: std::collections::HashSet<i64>,
    pub(super) mobiles: BTreeMap<i64, mobile::SimMobile>,
    /// Mobile device ids whose XML is served truncated.
    pub(super) corrupt_mobiles: std::collections::HashSet<i64>,
    /// Computers served odd ([`super::odd`]), and mobile devices' Classic XML.
    pub(super) odd: HashMap<i64, super::odd::Oddity>,
    pub(super) odd_mobiles: HashMap<i64, super::odd::Oddity>,
    pub(super) searches: BTreeMap<i64, mobile::SimSearch>,
    pub(super) next_search_id: i64,
    /// Devices deleted after the search index saw them: listed by searches, 404 on fetch.
    pub(super) vanished: BTreeMap<i64, mobile::SimMobile>,
    /// Computers missing from list pages while their detail record still answers (a listing
    /// glitch, e.g. a mis-scoped site).
    pub(super) unlisted: std::collections::HashSet<i64>,
    /// The same for mobile devices (Classic list and Jamf Pro API pages).
    pub(super) unlisted_mobiles: std::collections::HashSet<i64>,
    /// While set and in the future: latency ×10 and half the requests answer 503.
    pub(super) brownout_until: Option<Instant>,
    /// Every request: time since start, requests in flight when it arrived, status.
    pub(super) timeline: Vec<(Duration, u64, u16)>,
    pub(super) started: Instant,
    /// Webhooks configured through `/JSSResource/webhooks`.
    pub(super) webhooks: BTreeMap<i64, events::SimWebhook>,
    pub(super) next_webhook_id: i64,
    /// Events to emit, when `webhook_url` is set.
    pub(super) events: Option<tokio::sync::mpsc::UnboundedSender<events::SimEvent>>,
}

impl Inner {
    pub(super) fn emit_computer(&self, name: &'static str, id: i64) {
        if let (Some(tx), Some(c)) = (&self.events, self.fleet.get(&id)) {
            let _ = tx.send(events::SimEvent {
                name,
                jss_id: id,
                udid: c.udid.clone(),
                serial: c.serial.clone(),
                device_name: c.name.clone(),
            });
        }
    }

    pub(super) fn emit_mobile(&self, name: &'static str, id: i64) {
        if let (Some(tx), Some(m)) = (&self.events, self.mobiles.get(&id)) {
            let _ = tx.send(events::SimEvent {
                name,
                jss_id: id,
                udid: m.udid.clone(),
                serial: m.serial.clone(),
                device_name: m.name.clone(),
            });
        }
    }
}

pub struct SimState {
    pub(super) cfg: Mutex<SimConfig>,
    pub(super) inner: Mutex<Inner>,
    pub(super) in_flight: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) token_seq: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the simulator's data inconsistent in a way
    // that matters for a test double; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) async fn count_requests(
    State(s): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let sticky = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains(STICKY_COOKIE));
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let arrived = Instant::now();
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let brownout = {
        let mut inner = lock(&s.inner);
        inner.stats.requests += 1;
        inner.stats.with_sticky_cookie += u64::from(sticky);
        inner.stats.last_user_agent = agent;
        *inner.stats.by_endpoint.entry(endpoint).or_default() += 1;
        inner.stats.peak_in_flight = inner.stats.peak_in_flight.max(now);
        inner.brownout_until.is_some_and(|t| Instant::now() < t)
    };
    let (base, capacity, overload) = {
        let cfg = lock(&s.cfg);
        (cfg.latency_ms, cfg.capacity, cfg.overload_factor)
    };
    // The load model: slower above capacity, ten times slower in a brown-out.
    let mut latency = base as f64;
    if capacity > 0 && now > capacity {
        latency *= 1.0 + overload * (now - capacity) as f64;
    }
    if brownout {
        latency *= 10.0;
    }
    let mut resp = if brownout && fastrand::bool() {
        lock(&s.inner).stats.faults_injected += 1;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>503 Service Unavailable</body></html>",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    // The answer leaves `latency` (plus the page's simulated cost) after the request arrived:
    // the real work of building it is part of that time, as a real server's response time
    // includes its own work, so a client measured against `latency` is measured fairly.
    let cost = resp
        .extensions_mut()
        .remove::<SimulatedCost>()
        .map_or(Duration::ZERO, |c| c.0);
    let answer_at = arrived + Duration::from_micros((latency * 1000.0) as u64) + cost;
    answer_on_time(answer_at).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    if lock(&s.cfg).clock_offset_secs != 0 {
        // hyper adds a Date header only when the answer has none.
        let date = s.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = header::HeaderValue::from_str(&date) {
            resp.headers_mut().insert(header::DATE, v);
        }
    }
    {
        let mut inner = lock(&s.inner);
        let at = inner.started.elapsed();
        inner.timeline.push((at, now, resp.status().as_u16()));
        let served = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
        inner.stats.service_us = inner.stats.service_us.saturating_add(served);
    }
    if !sticky && lock(&s.cfg).sticky_sessions {
        // Jamf Cloud pins a client to one cluster node with this cookie.
        if let Ok(v) = header::HeaderValue::from_str(&format!("{STICKY_COOKIE}=node-1; Path=/")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Waits until `at`, to within a fraction of a millisecond: tokio's timer rounds up to the next
/// millisecond tick (20 ms would be served in 20.5–21 on average, 5% over the latency every
/// bench bound assumes), so its sleep ends short of `at` and a blocking thread sleeps the rest.
async fn answer_on_time(at: Instant) {
    const TICK: Duration = Duration::from_millis(2);
    if at.saturating_duration_since(Instant::now()) > TICK {
        tokio::time::sleep_until((at - TICK).into()).await;
    }
    let rest = at.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        // A failed join only means the rest was not waited for.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Server time a handler simulates on top of the latency (a list page's per-record cost); the
/// request middleware waits it out before answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimulatedCost(pub Duration);

impl SimulatedCost {
    /// `us` microseconds per record and section for a page.
    pub(crate) fn per_record(us: u64, records: usize, sections: usize) -> SimulatedCost {
        let total = us.saturating_mul((records.saturating_mul(sections)) as u64);
        SimulatedCost(Duration::from_micros(total))
    }
}

pub(crate) const STICKY_COOKIE: &str = "jpro-ingress";

pub(crate) fn api_error(
    status: StatusCode,
    code: &str,
    description: &str,
    field: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({
            "httpStatus": status.as_u16(),
            "errors": [{"code": code, "description": description, "id": "0", "field": field}]
        })),
    )
        .into_response()
}

pub(crate) fn unauthorized() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_TOKEN",
        "Unauthorized",
        None,
    )
}

pub(super) async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found", None)
}

impl SimState {
    /// The simulated server's clock (real time plus the configured offset).
    pub(super) fn now(&self) -> DateTime<Utc> {
        let offset = lock(&self.cfg).clock_offset_secs;
        Utc::now() + chrono::Duration::seconds(offset.clamp(-86_400 * 365, 86_400 * 365))
    }

    pub(super) fn issue_token(&self) -> (String, u64) {
        let ttl = lock(&self.cfg).token_ttl_secs;
        let n = self.token_seq.fetch_add(1, Ordering::SeqCst);
        let token = format!("sim-token-{n}-{:016x}", fastrand::u64(..));
        let mut inner = lock(&self.inner);
        inner
            .tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        inner.stats.tokens_issued += 1;
        (token, ttl)
    }

    /// The caller's valid bearer token, if any; applies periodic revocation.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Option<String> {
        let revoke_every = lock(&self.cfg).faults.revoke_every;
        let mut inner = lock(&self.inner);
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let valid = token
            .as_ref()
            .is_some_and(|t| inner.tokens.get(t).is_some_and(|exp| *exp > Instant::now()));
        inner.auth_requests += 1;
        // A revocation (an admin action, a password change) takes effect for the requests
        // after this one.
        if revoke_every > 0 && inner.auth_requests.is_multiple_of(revoke_every) {
            inner.tokens.clear();
        }
        if valid {
            token
        } else {
            inner.stats.unauthorized += 1;
            None
        }
    }

    /// What an inventory endpoint of an API version checks first: whether this server's
    /// version serves it at all (404), then [`SimState::gate`].
    pub(super) async fn gate_version(
        &self,
        headers: &HeaderMap,
        version: ApiVersion,
    ) -> Option<Response> {
        if !self.supports(version) {
            return Some(not_found().await);
        }
        self.gate(headers).await
    }

    /// What an authenticated Jamf Pro API endpoint checks first: the token (401 in Jamf's
    /// JSON error shape), then injected faults.
    pub(super) async fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        if self.authorize(headers).is_none() {
            return Some(unauthorized());
        }
        self.fault().await
    }

    /// Draws an injected fault for this request, if any.
    pub(crate) async fn fault(&self) -> Option<Response> {
        let f = lock(&self.cfg).faults.clone();
        {
            let mut inner = lock(&self.inner);
            inner.fault_checks += 1;
            if inner.outage_left > 0 && inner.fault_checks > f.outage_after {
                inner.outage_left -= 1;
                inner.stats.faults_injected += 1;
                if f.outage_retry_after_secs > 0 {
                    return Some(
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(header::RETRY_AFTER, f.outage_retry_after_secs.to_string())],
                            "Too Many Requests",
                        )
                            .into_response(),
                    );
                }
                return Some(
                    (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
                );
            }
        }
        let r = fastrand::f64();
        let mut edge = 0.0;
        let mut hit = |rate: f64| {
            edge += rate;
            r < edge
        };
        let resp = if hit(f.rate_500) {
            Some(api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal Server Error",
                None,
            ))
        } else if hit(f.rate_502) {
            Some(
                (
                    StatusCode::BAD_GATEWAY,
                    "<html><body>502 Bad Gateway</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_503) {
            Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<html><body>503 Service Unavailable</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_504) {
            Some(
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "<html><body>504 Gateway Time-out</body></html>",
                )
                    .into_response(),
            )
        } else if hit(f.rate_quota) {
            Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"fault\":{\"faultstring\":\"Rate limit quota violation. Quota limit exceeded\",\"detail\":{\"errorcode\":\"policies.ratelimit.QuotaViolation\"}}}",
                )
                    .into_response(),
            )
        } else if hit(f.rate_429) {
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, f.retry_after_secs.to_string())],
                    "Too Many Requests",
                )
                    .into_response(),
            )
        } else if hit(f.rate_reset) {
            // Headers go out, then the connection dies mid-body.
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                Ok(bytes::Bytes::from_static(b"{\"totalCount\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ];
            Some(
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            )
        } else {
            None
        };
        if resp.is_some() {
            lock(&self.inner).stats.faults_injected += 1;
        } else if hit(f.rate_slow) {
            tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
        }
        resp
    }

    /// Whether the configured Jamf Pro version serves this computers-inventory version.
    pub(super) fn supports(&self, version: ApiVersion) -> bool {
        fleet::serves(&lock(&self.cfg).version, version)
    }
}

/// The query of a Jamf Pro API list endpoint, read the way Jamf reads it.
pub(super) struct ListQuery {
    pub sections: Vec<String>,
    pub page: usize,
    pub page_size: usize,
    pub sort: Option<String>,
    pub filter: Option<super::rsql::Expr>,
    /// `exception-handling=LENIENT` (`/api/v2/mobile-devices/detail`).
    pub lenient: bool,
}

impl ListQuery {
    /// `section` (repeated or comma-joined; GENERAL when absent, each checked with `known`),
    /// 0-based `page`, `page-size` (clamped to 2000 without a word, as Jamf does), `sort` and
    /// an RSQL `filter`. A bad value is Jamf's 400 answer (boxed: it is large, and rare).
    pub fn parse(
        raw: Option<String>,
        known: impl Fn(&str) -> bool,
    ) -> Result<ListQuery, Box<Response>> {
        let mut q = ListQuery {
            sections: Vec::new(),
            page: 0,
            page_size: 100,
            sort: None,
            filter: None,
            lenient: false,
        };
        let bad = |name: &str, value: &str| {
            api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAMETER_VALUE",
                &format!("Invalid value {value:?}"),
                Some(name),
            )
        };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "section" => q
                    .sections
                    .extend(v.split(',').map(|p| p.trim().to_string())),
                "page" => q.page = v.parse().map_err(|_| Box::new(bad("page", &v)))?,
                "page-size" => {
                    let n: usize = v.parse().map_err(|_| Box::new(bad("page-size", &v)))?;
                    q.page_size = n.clamp(1, 2000);
                }
                "sort" => q.sort = Some(v.into_owned()),
                "exception-handling" => q.lenient = v.eq_ignore_ascii_case("LENIENT"),
                "filter" if !v.is_empty() => {
                    q.filter = Some(super::rsql::parse(&v).map_err(|e| {
                        Box::new(api_error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_RSQL_FILTER",
                            &e,
                            Some("filter"),
                        ))
                    })?)
                }
                _ => {}
            }
        }
        if q.sections.is_empty() {
            q.sections.push("GENERAL".into());
        }
        if let Some(sec) = q.sections.iter().find(|s| !known(s)) {
            return Err(Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAMETER_VALUE",
                &format!("Invalid section value: {sec}"),
                Some("section"),
            )));
        }
        Ok(q)
    }

    /// This query's page of `matched`.
    pub fn page_of<'a, T>(&self, matched: &'a [T]) -> impl Iterator<Item = &'a T> {
        matched
            .iter()
            .skip(self.page.saturating_mul(self.page_size))
            .take(self.page_size)
    }
}

/// A filter that names a field the endpoint cannot filter on: Jamf's 400.
pub(super) fn invalid_filter(field: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD",
        &format!("Invalid filter: {field}"),
        Some("filter"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::simulator::{SimConfig, Simulator};

    /// One answered request on a fresh connection, then how long until the server closes it
    /// (`None`: still open after 3 s).
    async fn closed_after(idle_timeout_ms: u64) -> Option<Duration> {
        let cfg = SimConfig {
            idle_timeout_ms,
            computers: 1,
            ..SimConfig::default()
        };
        let sim = match Simulator::start(cfg, 0).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let mut s = match tokio::net::TcpStream::connect(sim.addr).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let request = b"GET /api/v1/jamf-pro-version HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(s.write_all(request).await.is_ok());
        let mut buf = vec![0u8; 4096];
        assert!(
            matches!(s.read(&mut buf).await, Ok(n) if n > 0),
            "an answer"
        );
        let t = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        sim.stop().await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_))).then(|| t.elapsed())
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
        let closed = closed_after(1000).await;
        assert!(
            closed.is_some_and(|d| d >= Duration::from_millis(900)),
            "{closed:?}"
        );
        assert_eq!(closed_after(0).await, None, "no timeout: kept open");
    }
}
