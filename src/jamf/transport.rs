//! One request to Jamf, end to end: attempts through the limiter, classification of answers,
//! retries with backoff inside the per-request budget, and the metrics of every attempt.
//!
//! Invariants: a connection permit is held only while an attempt is on the wire; latency is
//! measured per attempt (queueing and backoff never count); only retryable errors are retried
//! and never past the budget (a `Retry-After` that does not fit fails the request at once);
//! durations computed from the server's answers saturate instead of overflowing; an answer
//! body is read up to `jamf.max_response_mb` and no further; redirects are followed only
//! within the origin and never on authentication calls (a credential never goes elsewhere).
//! The first retry of a request is logged at warn (one line per backoff episode), so an
//! unreachable or struggling server is never silent at the default log level.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;

use super::auth::{SessionToken, MAX_REAUTHENTICATIONS, TOKEN_SEND_GUARD};
use super::pacing::{self, Signal};
use super::request::{AuthMode, Request};
use super::{error_chain, JamfClient, JamfError};
use crate::config::RetryConfig;
use crate::telemetry::metric;

/// A successful answer and when the attempt that got it was sent, in Jamf's clock
/// ([`JamfClient::jamf_time`]): records read from it are as new as that instant.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Bytes,
    pub requested_at: DateTime<Utc>,
}

/// What one attempt produced: the outcome, how long it queued for a permit, when it was sent.
struct Attempt {
    outcome: Result<Bytes, JamfError>,
    queued: Duration,
    sent_at: DateTime<Utc>,
}

impl JamfClient {
    /// Executes one request with retries and backoff inside the per-request budget.
    pub(super) async fn execute(&self, req: &Request<'_>) -> Result<Answer, JamfError> {
        let budget = Duration::from_secs(self.settings.retry.budget_secs);
        // Time on the wire and in backoff; waiting for a slot under the pacing limit is our
        // own doing, not the server's, and does not use up the budget.
        let mut spent = Duration::ZERO;
        let mut attempt: u32 = 0;
        let mut refused: u32 = 0;
        let mut plain_500s: u32 = 0;
        loop {
            let session = match req.auth {
                // Boxed: renewing the token executes a request itself.
                AuthMode::Session => Some(Box::pin(self.bearer()).await?),
                _ => None,
            };
            let t0 = Instant::now();
            let Some(done) = self.attempt(req, session.as_ref()).await else {
                continue; // the token went stale while waiting for a connection
            };
            spent = spent.saturating_add(t0.elapsed().saturating_sub(done.queued));
            let err = match done.outcome {
                Ok(body) => {
                    if attempt > 0 {
                        tracing::info!(
                            endpoint = req.endpoint,
                            attempts = attempt + 1,
                            "Jamf request succeeded after retries"
                        );
                    }
                    return Ok(Answer {
                        body,
                        requested_at: self.jamf_time(done.sent_at),
                    });
                }
                Err(JamfError::Unauthorized { .. })
                    if refused < MAX_REAUTHENTICATIONS && session.is_some() =>
                {
                    refused += 1;
                    if let Some(used) = &session {
                        self.discard_token(used.generation).await;
                    }
                    tracing::debug!(
                        endpoint = req.endpoint,
                        "401 from Jamf; renewing the token and replaying"
                    );
                    continue;
                }
                Err(JamfError::Connect { message, .. })
                    if self.settings.fail_fast && !self.reached.load(Ordering::Relaxed) =>
                {
                    return Err(JamfError::Unreachable {
                        url: crate::config::mask_url(self.base.as_str()),
                        message,
                    });
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) if req.shrinkable && e.asks_for_smaller_pages() => return Err(e),
                Err(e) => {
                    // Past the auth check: only 401s in a row count against the renewals.
                    refused = 0;
                    e
                }
            };
            let delay = backoff_delay(&self.settings.retry, attempt, &err);
            attempt = attempt.saturating_add(1);
            if let JamfError::Server { status: 500, .. } = err {
                plain_500s += 1;
            }
            // Jamf answers a plain 500 for as long as a device's data is broken: a few tries
            // tell a glitch from that, the rest of the budget would only delay isolating it.
            if spent.saturating_add(delay) > budget || plain_500s >= MAX_PLAIN_500S {
                return Err(JamfError::RetriesExhausted {
                    endpoint: req.endpoint,
                    attempts: attempt,
                    elapsed: spent,
                    last: Box::new(err),
                });
            }
            spent += delay;
            let reason = err.reason();
            let instance = self.instance().to_string();
            metrics::counter!(metric::HTTP_RETRIES, "jamf_instance" => instance.clone(), "endpoint" => req.endpoint, "reason" => reason)
                .increment(1);
            metrics::histogram!(metric::BACKOFF_SECONDS, "jamf_instance" => instance.clone(), "reason" => reason)
                .record(delay.as_secs_f64());
            metrics::counter!(metric::BACKOFF_SECONDS_TOTAL, "jamf_instance" => instance, "reason" => reason)
                .increment(delay.as_secs());
            if attempt == 1 {
                tracing::warn!(endpoint = req.endpoint, error = %err, next_attempt_in = ?delay, "Jamf request failed; retrying with backoff");
            } else {
                tracing::debug!(endpoint = req.endpoint, attempt, ?delay, error = %err, "retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: holds a connection permit only while on the wire. `session` is the shared
    /// token for [`AuthMode::Session`]; `None` means nothing was sent because that token is
    /// (about to be) expired.
    async fn attempt(&self, req: &Request<'_>, session: Option<&SessionToken>) -> Option<Attempt> {
        let url = match self.base.join(&req.path) {
            Ok(u) => u,
            Err(e) => {
                return Some(Attempt {
                    outcome: Err(JamfError::Transport {
                        endpoint: req.endpoint,
                        message: format!("bad path: {e}"),
                    }),
                    queued: Duration::ZERO,
                    sent_at: Utc::now(),
                })
            }
        };
        let mut rb = self
            .http()
            .request(req.method.clone(), url)
            .header(ACCEPT, req.accept);
        if let Some((content_type, body)) = req.body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.to_string());
        }
        if let Some(t) = req.timeout {
            rb = rb.timeout(t);
        }
        if !req.query.is_empty() {
            rb = rb.query(req.query);
        }
        if let Some(form) = req.form {
            rb = rb.form(form);
        }
        rb = match &req.auth {
            AuthMode::None => rb,
            AuthMode::Basic(user, pass) => rb.basic_auth(user, Some(pass.expose_secret())),
            AuthMode::Bearer(token) => rb.bearer_auth(token.expose_secret()),
            // `execute` always passes the session token with this mode.
            AuthMode::Session => rb.bearer_auth(session?.value.expose_secret()),
        };
        let queued_at = Instant::now();
        let page_size = req
            .query
            .iter()
            .find(|(k, _)| *k == "page-size")
            .and_then(|(_, v)| v.parse().ok());
        let pacing_class = pacing::class_of_request(req.endpoint, page_size);
        let permit = self.limiter.acquire_for(Some(pacing_class)).await;
        let epoch = self.limiter.pacing().epoch();
        let queued = queued_at.elapsed();
        if session.is_some_and(|t| Instant::now() + TOKEN_SEND_GUARD >= t.expires_at) {
            // Expired while waiting for a connection: renew (holding no slot) and try again.
            drop(permit);
            return None;
        }
        let sent_at = Utc::now();
        let t0 = Instant::now();
        let limit = self.settings.max_response_bytes;
        let result = async {
            let mut resp = rb.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let declared = resp.content_length();
            if declared.is_some_and(|n| n > limit as u64) {
                return Ok((status, headers, None));
            }
            // Sized up front when declared: growing by doubling would briefly hold twice a
            // large answer.
            let mut body = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
            while let Some(chunk) = resp.chunk().await? {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Ok((status, headers, None));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, headers, Some(body.freeze())))
        }
        .await;
        let latency = t0.elapsed();
        drop(permit);
        let method = method_label(&req.method);
        if let Ok((_, headers, _)) = &result {
            self.reached.store(true, Ordering::Relaxed);
            if let Some(offset) = clock_offset(headers, sent_at, latency) {
                self.observe_clock(offset);
            }
        }
        let (class, outcome) = match result {
            Ok((status, headers, Some(body))) => (
                status_class(status),
                classify(req.endpoint, status, &headers, body),
            ),
            Ok((status, _, None)) => {
                // The rest of the body is left unread: that connection cannot be reused.
                self.limiter.connection_lost();
                (
                    status_class(status),
                    Err(JamfError::Decode {
                        endpoint: req.endpoint,
                        message: format!(
                            "the answer is larger than {} MiB (jamf.max_response_mb)",
                            limit >> 20
                        ),
                    }),
                )
            }
            Err(e) => {
                // The connection carrying this attempt is gone.
                self.limiter.connection_lost();
                if e.is_connect() && !e.is_timeout() {
                    (
                        "error",
                        Err(JamfError::Connect {
                            endpoint: req.endpoint,
                            message: error_chain(&e.without_url()),
                        }),
                    )
                } else if e.is_timeout() {
                    (
                        "timeout",
                        Err(JamfError::Timeout {
                            endpoint: req.endpoint,
                        }),
                    )
                } else {
                    (
                        "error",
                        Err(JamfError::Transport {
                            endpoint: req.endpoint,
                            message: error_chain(&e.without_url()),
                        }),
                    )
                }
            }
        };
        metrics::histogram!(metric::HTTP_REQUEST_DURATION, "jamf_instance" => self.instance().to_string(), "endpoint" => req.endpoint, "method" => method, "status" => class)
            .record(latency.as_secs_f64());
        let signal = match &outcome {
            Ok(_) => Signal::Ok,
            Err(
                JamfError::Throttled { .. }
                | JamfError::QuotaViolation { .. }
                | JamfError::Timeout { .. }
                | JamfError::Server {
                    status: 502..=504, ..
                },
            ) => Signal::BackPressure,
            Err(
                JamfError::Transport { .. } | JamfError::Connect { .. } | JamfError::Server { .. },
            ) => Signal::Neutral,
            Err(_) => Signal::Ok,
        };
        self.limiter.observe(pacing_class, latency, signal, epoch);
        metrics::counter!(metric::HTTP_REQUESTS, "jamf_instance" => self.instance().to_string(), "endpoint" => req.endpoint, "method" => method, "status" => class)
            .increment(1);
        Some(Attempt {
            outcome,
            queued,
            sent_at,
        })
    }

    /// One attempt without retries or token renewal (token invalidation on exit).
    pub(super) async fn attempt_once(&self, req: &Request<'_>) -> Result<(), JamfError> {
        match self.attempt(req, None).await {
            Some(a) => a.outcome.map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Jamf's clock minus ours: the `Date` header against the middle of the attempt. `None`
/// without a readable header; bounded to a year either way (a wild header cannot overflow
/// what is computed from it).
fn clock_offset(
    headers: &HeaderMap,
    sent_at: DateTime<Utc>,
    latency: Duration,
) -> Option<chrono::Duration> {
    let date = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let server = DateTime::parse_from_rfc2822(date).ok()?.with_timezone(&Utc);
    let half = chrono::Duration::from_std(latency / 2).ok()?;
    let ours = sent_at.checked_add_signed(half)?;
    let year = chrono::Duration::days(366);
    Some(server.signed_duration_since(ours).clamp(-year, year))
}

/// Attempts a request gets while Jamf answers a plain 500 (not a QuotaViolation).
const MAX_PLAIN_500S: u32 = 3;

/// Whether a path is one of the token calls, which carry credentials in their body or header.
fn is_auth_path(path: &str) -> bool {
    path.contains("/oauth/token") || path.contains("/api/v1/auth/")
}

/// Follows a redirect only to the same origin (scheme, host, port), never on a token call and
/// at most five times: credentials and tokens must never be re-sent anywhere else. A stopped
/// redirect answers the 3xx itself, which fails the request with a clear status.
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let follow = match attempt.previous().first() {
            Some(first) => {
                !is_auth_path(first.path())
                    && attempt.url().origin() == first.origin()
                    && attempt.previous().len() <= 5
            }
            None => false,
        };
        if follow {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Endpoint templates every request is labelled with; retries are counted per template.
pub const ENDPOINTS: &[&str] = &[
    "/api/v1/oauth/token",
    "/api/oauth/token",
    "/api/v1/auth/token",
    "/api/v1/auth/keep-alive",
    "/api/v1/jamf-pro-version",
    "/api/v1/computers-inventory",
    "/api/v3/computers-inventory",
    "/api/v4/computers-inventory",
    "/api/v1/computers-inventory-detail/{id}",
    "/api/v3/computers-inventory-detail/{id}",
    "/api/v4/computers-inventory-detail/{id}",
    "/api/v2/mobile-devices/detail",
    "/JSSResource/advancedmobiledevicesearches",
    "/JSSResource/advancedmobiledevicesearches/id/{id}",
    "/JSSResource/mobiledevices",
    "/JSSResource/mobiledevices/id/{id}",
    "/JSSResource/webhooks",
    "/JSSResource/webhooks/id/{id}",
];

/// Reasons a request is retried for (`reason` label of retries and backoff).
const RETRY_REASONS: &[&str] = &[
    "throttled_429",
    "quota_violation",
    "server_500",
    "server_502",
    "server_503",
    "server_504",
    "timeout",
    "transport",
];

/// Zero series for the client's counters, so the first retry or auth failure is seen by
/// `rate()` and `increase()`. Every client does it (cheap, idempotent): a process may install
/// its recorder after building its first client.
pub(super) fn init_metrics(instance: &str) {
    metrics::counter!(metric::AUTH_FAILURES, "jamf_instance" => instance.to_string()).increment(0);
    for method in ["oauth", "user", "keep_alive"] {
        metrics::counter!(metric::TOKEN_REFRESHES, "jamf_instance" => instance.to_string(), "method" => method).increment(0);
    }
    for reason in RETRY_REASONS {
        metrics::counter!(metric::BACKOFF_SECONDS_TOTAL, "jamf_instance" => instance.to_string(), "reason" => *reason)
            .increment(0);
        // Registered (at zero) by taking its handle.
        let _ = metrics::histogram!(metric::BACKOFF_SECONDS, "jamf_instance" => instance.to_string(), "reason" => *reason);
        for endpoint in ENDPOINTS {
            metrics::counter!(metric::HTTP_RETRIES, "jamf_instance" => instance.to_string(), "endpoint" => *endpoint, "reason" => *reason)
                .increment(0);
        }
    }
}

pub(super) fn classify(
    endpoint: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, JamfError> {
    if status.is_success() {
        return Ok(body);
    }
    Err(match status.as_u16() {
        400 => JamfError::BadRequest {
            endpoint,
            detail: error_detail(&body),
        },
        401 => JamfError::Unauthorized { endpoint },
        403 => JamfError::Forbidden { endpoint },
        404 => JamfError::NotFound { endpoint },
        409 => JamfError::Conflict { endpoint },
        429 => JamfError::Throttled {
            endpoint,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        500 if contains(&body, b"QuotaViolation") => JamfError::QuotaViolation { endpoint },
        s @ (500 | 502 | 503 | 504) => JamfError::Server {
            status: s,
            endpoint,
        },
        s => JamfError::Unexpected {
            status: s,
            endpoint,
        },
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// First error code/description of a Jamf API error body, bounded in length.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        errors: Option<Vec<Cause>>,
        error: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Cause {
        code: Option<String>,
        description: Option<String>,
        field: Option<String>,
    }
    let text = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => match (e.errors.and_then(|v| v.into_iter().next()), e.error) {
            (Some(c), _) => format!(
                "{} {} {}",
                c.code.unwrap_or_default(),
                c.field.unwrap_or_default(),
                c.description.unwrap_or_default()
            ),
            (None, Some(err)) => err,
            (None, None) => String::new(),
        },
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned(),
    };
    text.trim().chars().take(200).collect()
}

/// Full jitter under an exponentially growing ceiling; harder for QuotaViolation; never less
/// than a 429's `Retry-After`.
pub fn backoff_delay(policy: &RetryConfig, attempt: u32, err: &JamfError) -> Duration {
    let exp = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(policy.max_backoff_ms);
    let delay_ms = match err {
        // Throttling means the server needs relief: equal jitter with a raised ceiling, so the
        // pause is never close to zero.
        JamfError::QuotaViolation { .. } => {
            let ceil = exp.saturating_mul(u64::from(policy.quota_violation_multiplier));
            ceil / 2 + fastrand::u64(0..=ceil / 2)
        }
        _ => fastrand::u64(0..=exp),
    };
    let delay = Duration::from_millis(delay_ms);
    match err {
        JamfError::Throttled {
            retry_after: Some(ra),
            ..
        } => delay.max(*ra),
        _ => delay,
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_from_the_date_header() {
        let mut headers = HeaderMap::new();
        let sent = DateTime::parse_from_rfc3339("2026-12-03T17:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(clock_offset(&headers, sent, Duration::ZERO), None);
        headers.insert(
            reqwest::header::DATE,
            "Thu, 03 Dec 2026 16:50:00 GMT"
                .parse()
                .unwrap_or(reqwest::header::HeaderValue::from_static("")),
        );
        assert_eq!(
            clock_offset(&headers, sent, Duration::from_secs(2)),
            Some(-chrono::Duration::seconds(601)),
            "Jamf ten minutes behind, measured against the middle of the attempt"
        );
        headers.insert(
            reqwest::header::DATE,
            reqwest::header::HeaderValue::from_static("Fri, 01 Jan 9999 00:00:00 GMT"),
        );
        assert_eq!(
            clock_offset(&headers, sent, Duration::ZERO),
            Some(chrono::Duration::days(366)),
            "bounded"
        );
    }

    #[test]
    fn backoff_respects_retry_after_and_ceiling() {
        let p = RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            budget_secs: 10,
            quota_violation_multiplier: 4,
        };
        let server = JamfError::Server {
            status: 503,
            endpoint: "x",
        };
        for attempt in 0..30 {
            assert!(backoff_delay(&p, attempt, &server) <= Duration::from_millis(1000));
        }
        let t = JamfError::Throttled {
            endpoint: "x",
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(backoff_delay(&p, 0, &t) >= Duration::from_secs(3));
        let q = JamfError::QuotaViolation { endpoint: "x" };
        let d = backoff_delay(&p, 2, &q);
        assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1600));
        // A Retry-After at the largest number a header can hold neither panics nor wraps.
        let huge = JamfError::Throttled {
            endpoint: "x",
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        assert_eq!(
            backoff_delay(&p, u32::MAX, &huge),
            Duration::from_secs(u64::MAX)
        );
    }

    #[test]
    fn every_retryable_reason_is_initialised() {
        let errors = [
            JamfError::Throttled {
                endpoint: "x",
                retry_after: None,
            },
            JamfError::QuotaViolation { endpoint: "x" },
            JamfError::Timeout { endpoint: "x" },
            JamfError::Transport {
                endpoint: "x",
                message: String::new(),
            },
        ];
        let servers = [500, 502, 503, 504].map(|status| JamfError::Server {
            status,
            endpoint: "x",
        });
        for e in errors.iter().chain(&servers) {
            assert!(e.is_retryable());
            assert!(RETRY_REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }

    #[test]
    fn classify_quota_violation_and_retry_after() {
        let h = HeaderMap::new();
        let e = classify(
            "x",
            StatusCode::INTERNAL_SERVER_ERROR,
            &h,
            "policies.ratelimit.QuotaViolation".into(),
        );
        assert!(matches!(e, Err(JamfError::QuotaViolation { .. })));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, reqwest::header::HeaderValue::from_static("2"));
        let e = classify("x", StatusCode::TOO_MANY_REQUESTS, &h, "".into());
        assert!(matches!(
            e,
            Err(JamfError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(2)
        ));
        let e = classify("x", StatusCode::NOT_FOUND, &HeaderMap::new(), "".into());
        assert!(matches!(e, Err(ref e) if !e.is_retryable()));
    }
}
