//! The Jamf Pro client: authentication, the connection limit, retries and the inventory calls.
//!
//! Invariants:
//! - every request, token calls included, passes the [`Limiter`], so Jamf never sees more than
//!   `max_concurrency` (≤ 5) of our requests at once;
//! - one token is shared by all workers and renewed ahead of expiry under a lock, so a renewal
//!   happens once, not once per worker; every attempt (each retry too) reads the current
//!   token, so none goes out with a token that expired during a backoff or a wait for a
//!   connection; a 401 renews and replays, and two 401s in a row after renewals are final;
//! - only idempotent work is retried, with exponential backoff and full jitter inside a
//!   per-request time budget; 400/403/404 are never retried; a bad credential is fatal;
//! - latency is measured per attempt (backoff sleeps never count) and labelled by endpoint
//!   template; nothing secret reaches a log line, an error or a metric.

pub mod classic;
pub mod error;
pub mod models;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use url::Url;

use crate::config::{ApiVersion, Credentials, JamfSettings, RetryConfig};
use crate::limiter::Limiter;
use crate::pacing::Signal;
use crate::telemetry::metric;
pub use error::JamfError;
use models::{AuthTokenV1, InventoryPage, JamfProVersion, OAuthTokenResponse};

/// Identifies us to Jamf administrators reading their access logs.
/// Idle connections are closed after this; shorter than common server keep-alive timeouts.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub const USER_AGENT: &str = concat!("jamf-sync/", env!("CARGO_PKG_VERSION"));

/// One request, described independently of any attempt at it.
struct Request<'a> {
    method: Method,
    /// Template for metrics and errors, e.g. `/api/v4/computers-inventory-detail/{id}`.
    endpoint: &'static str,
    /// Path relative to the server URL, without a leading slash.
    path: String,
    query: &'a [(&'a str, String)],
    form: Option<&'a [(&'a str, &'a str)]>,
    auth: AuthMode<'a>,
    accept: &'static str,
    /// Content type and body (Classic XML writes).
    body: Option<(&'static str, &'a str)>,
    /// Overrides the client's request timeout (search evaluation can take minutes).
    timeout: Option<Duration>,
    /// A list page the caller can ask for at a smaller size: a timeout or 504 is returned at
    /// once instead of being retried at the same size.
    shrinkable: bool,
}

/// An authenticated call, independent of any attempt at it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub endpoint: &'static str,
    pub path: String,
    pub query: &'a [(&'a str, String)],
    pub accept: &'static str,
    pub body: Option<(&'static str, &'a str)>,
    pub timeout: Option<Duration>,
    pub shrinkable: bool,
}

impl<'a> Call<'a> {
    /// A JSON GET.
    pub fn get(endpoint: &'static str, path: String, query: &'a [(&'a str, String)]) -> Self {
        Call {
            method: Method::GET,
            endpoint,
            path,
            query,
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        }
    }
}

enum AuthMode<'a> {
    None,
    Basic(&'a str, &'a SecretString),
    Bearer(&'a SecretString),
    /// The client's shared token, read afresh for every attempt: a retry after a backoff, or
    /// after a long wait for a connection, never goes out with a token that expired meanwhile.
    Session,
}

/// The shared token as one attempt uses it.
struct SessionToken {
    value: SecretString,
    generation: u64,
    expires_at: Instant,
}

/// A token Jamf refuses although we hold it valid (revoked, or expired early) is renewed and
/// the request replayed at once; after this many 401s in a row the refusal stands.
const MAX_REAUTHENTICATIONS: u32 = 2;

/// A token this close to expiry when a connection slot frees up is renewed before sending.
const TOKEN_SEND_GUARD: Duration = Duration::from_millis(250);

#[derive(Clone)]
struct Token {
    value: SecretString,
    expires_at: Instant,
    lifetime: Duration,
}

struct TokenState {
    current: Option<Token>,
    /// Bumped on every renewal so a 401 only discards the token it was answered with.
    generation: u64,
}

/// The Jamf Pro API client shared by all workers of a run.
pub struct JamfClient {
    http: reqwest::Client,
    base: Url,
    settings: JamfSettings,
    limiter: Arc<Limiter>,
    token: Mutex<TokenState>,
    /// Older servers have only `/api/oauth/token`; remembered after the first 404.
    legacy_oauth_path: AtomicBool,
    inventory_version: Mutex<Option<ApiVersion>>,
    /// Set once Jamf accepted our credentials (for `/readyz`).
    authenticated: AtomicBool,
}

impl std::fmt::Debug for JamfClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JamfClient")
            .field("base", &self.base.as_str())
            .field("max_concurrency", &self.limiter.max())
            .finish_non_exhaustive()
    }
}

/// Installs the process-wide TLS crypto provider (ring) once; reqwest and sqlx share it.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl JamfClient {
    pub fn new(settings: JamfSettings) -> Result<Self, JamfError> {
        install_crypto_provider();
        let limiter = Arc::new(Limiter::new(
            settings.max_concurrency,
            POOL_IDLE_TIMEOUT,
            settings.pacing.clone(),
        ));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .cookie_store(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // With at most `max` requests in flight, more idle connections are never needed;
            // capping them keeps the open-connection count within Jamf's limit too.
            .pool_max_idle_per_host(limiter.max() as usize)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connector_layer(limiter.connection_gate())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| JamfError::Transport {
                endpoint: "(client setup)",
                message: error_chain(&e),
            })?;
        let mut base = settings.url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Self {
            http,
            base,
            settings,
            limiter,
            token: Mutex::new(TokenState {
                current: None,
                generation: 0,
            }),
            legacy_oauth_path: AtomicBool::new(false),
            inventory_version: Mutex::new(None),
            authenticated: AtomicBool::new(false),
        })
    }

    pub fn instance(&self) -> &str {
        &self.settings.instance
    }

    /// Whether Jamf has accepted our credentials at least once.
    pub fn has_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    pub fn max_concurrency(&self) -> u32 {
        self.limiter.max()
    }

    /// The adaptive limit right now.
    pub fn concurrency_limit(&self) -> u32 {
        self.limiter.limit()
    }

    /// GET returning decoded JSON, authenticated, retried.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: String,
        query: &[(&str, String)],
    ) -> Result<T, JamfError> {
        let body = self.get(endpoint, path, query).await?;
        serde_json::from_slice(&body).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }

    /// Authenticated GET; a 401 renews the token and replays.
    pub async fn get(
        &self,
        endpoint: &'static str,
        path: String,
        query: &[(&str, String)],
    ) -> Result<Bytes, JamfError> {
        self.call(Call::get(endpoint, path, query)).await
    }

    /// Authenticated call with retries; a 401 renews the token and replays (see
    /// [`MAX_REAUTHENTICATIONS`]).
    pub async fn call(&self, call: Call<'_>) -> Result<Bytes, JamfError> {
        let req = Request {
            method: call.method.clone(),
            endpoint: call.endpoint,
            path: call.path.clone(),
            query: call.query,
            form: None,
            auth: AuthMode::Session,
            accept: call.accept,
            body: call.body,
            timeout: call.timeout,
            shrinkable: call.shrinkable,
        };
        self.execute(&req).await
    }

    /// Executes one request with retries and backoff inside the per-request budget.
    async fn execute(&self, req: &Request<'_>) -> Result<Bytes, JamfError> {
        let budget = Duration::from_secs(self.settings.retry.budget_secs);
        // Time on the wire and in backoff; waiting for a slot under the pacing limit is our
        // own doing, not the server's, and does not use up the budget.
        let mut spent = Duration::ZERO;
        let mut attempt: u32 = 0;
        let mut refused: u32 = 0;
        loop {
            let session = match req.auth {
                // Boxed: renewing the token executes a request itself.
                AuthMode::Session => Some(Box::pin(self.bearer()).await?),
                _ => None,
            };
            let t0 = Instant::now();
            let Some((result, queued)) = self.attempt(req, session.as_ref()).await else {
                continue; // the token went stale while waiting for a connection
            };
            spent += t0.elapsed().saturating_sub(queued);
            let err = match result {
                Ok(body) => return Ok(body),
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
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) if req.shrinkable && e.asks_for_smaller_pages() => return Err(e),
                Err(e) => {
                    // Past the auth check: only 401s in a row count against the renewals.
                    refused = 0;
                    e
                }
            };
            let delay = backoff_delay(&self.settings.retry, attempt, &err);
            attempt += 1;
            if spent + delay > budget {
                return Err(JamfError::RetriesExhausted {
                    endpoint: req.endpoint,
                    attempts: attempt,
                    elapsed: spent,
                    last: Box::new(err),
                });
            }
            spent += delay;
            let reason = err.reason();
            metrics::counter!(metric::HTTP_RETRIES, "endpoint" => req.endpoint, "reason" => reason)
                .increment(1);
            metrics::histogram!(metric::BACKOFF_SECONDS, "reason" => reason)
                .record(delay.as_secs_f64());
            metrics::counter!(metric::BACKOFF_SECONDS_TOTAL, "reason" => reason)
                .increment(delay.as_millis() as u64 / 1000);
            tracing::debug!(endpoint = req.endpoint, attempt, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Drops the token a 401 answered, unless another worker has already renewed it.
    async fn discard_token(&self, generation: u64) {
        let mut st = self.token.lock().await;
        if st.generation == generation {
            st.current = None;
        }
    }

    /// One attempt: holds a connection permit only while on the wire. Also returns how long it
    /// waited for the permit. `session` is the shared token for [`AuthMode::Session`]; `None`
    /// means nothing was sent because that token is (about to be) expired.
    async fn attempt(
        &self,
        req: &Request<'_>,
        session: Option<&SessionToken>,
    ) -> Option<(Result<Bytes, JamfError>, Duration)> {
        let url = match self.base.join(&req.path) {
            Ok(u) => u,
            Err(e) => {
                return Some((
                    Err(JamfError::Transport {
                        endpoint: req.endpoint,
                        message: format!("bad path: {e}"),
                    }),
                    Duration::ZERO,
                ))
            }
        };
        let mut rb = self
            .http
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
        let permit = self.limiter.acquire().await;
        let queued = queued_at.elapsed();
        if session.is_some_and(|t| Instant::now() + TOKEN_SEND_GUARD >= t.expires_at) {
            // Expired while waiting for a connection: renew (holding no slot) and try again.
            drop(permit);
            return None;
        }
        let t0 = Instant::now();
        let result = async {
            let resp = rb.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let latency = t0.elapsed().as_secs_f64();
        drop(permit);
        let method = method_label(&req.method);
        let (class, outcome) = match result {
            Ok((status, headers, body)) => (
                status_class(status),
                classify(req.endpoint, status, &headers, body),
            ),
            Err(e) if e.is_timeout() => {
                self.limiter.connection_lost();
                (
                    "timeout",
                    Err(JamfError::Timeout {
                        endpoint: req.endpoint,
                    }),
                )
            }
            Err(e) => {
                // The connection carrying this attempt is gone.
                self.limiter.connection_lost();
                (
                    "error",
                    Err(JamfError::Transport {
                        endpoint: req.endpoint,
                        message: error_chain(&e.without_url()),
                    }),
                )
            }
        };
        metrics::histogram!(metric::HTTP_REQUEST_DURATION, "endpoint" => req.endpoint, "method" => method, "status" => class)
            .record(latency);
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
            Err(JamfError::Transport { .. } | JamfError::Server { .. }) => Signal::Neutral,
            Err(_) => Signal::Ok,
        };
        self.limiter
            .observe(req.endpoint, Duration::from_secs_f64(latency), signal);
        metrics::counter!(metric::HTTP_REQUESTS, "endpoint" => req.endpoint, "method" => method, "status" => class)
            .increment(1);
        Some((outcome, queued))
    }

    /// The current bearer token and its generation, renewed ahead of expiry.
    async fn bearer(&self) -> Result<SessionToken, JamfError> {
        // Holding the lock across the renewal is the single-flight: other workers wait for the
        // one renewal instead of starting their own.
        let mut st = self.token.lock().await;
        if let Some(t) = &st.current {
            // Never less than the send guard: a token `attempt` would refuse to send must be
            // renewed here, or a small configured margin would loop between the two.
            let margin = self
                .settings
                .token_refresh_margin
                .min(t.lifetime / 2)
                .max(TOKEN_SEND_GUARD);
            if Instant::now() + margin < t.expires_at {
                return Ok(SessionToken {
                    value: t.value.clone(),
                    generation: st.generation,
                    expires_at: t.expires_at,
                });
            }
        }
        let previous = st.current.take();
        let token = self.obtain_token(previous).await?;
        self.authenticated.store(true, Ordering::Relaxed);
        st.generation += 1;
        let session = SessionToken {
            value: token.value.clone(),
            generation: st.generation,
            expires_at: token.expires_at,
        };
        st.current = Some(token);
        Ok(session)
    }

    async fn obtain_token(&self, previous: Option<Token>) -> Result<Token, JamfError> {
        match &self.settings.credentials {
            Credentials::ApiClient {
                client_id,
                client_secret,
            } => self.oauth_token(client_id, client_secret).await,
            Credentials::User { username, password } => {
                if let Some(prev) = previous.filter(|p| Instant::now() < p.expires_at) {
                    match self.keep_alive(&prev.value).await {
                        Ok(t) => return Ok(t),
                        Err(e) => {
                            tracing::debug!(error = %e, "keep-alive failed; requesting a new token")
                        }
                    }
                }
                self.user_token(username, password).await
            }
        }
    }

    async fn oauth_token(&self, id: &str, secret: &SecretString) -> Result<Token, JamfError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret.expose_secret()),
        ];
        let mut legacy = self.legacy_oauth_path.load(Ordering::Relaxed);
        loop {
            let (endpoint, path) = if legacy {
                ("/api/oauth/token", "api/oauth/token")
            } else {
                ("/api/v1/oauth/token", "api/v1/oauth/token")
            };
            let req = Request {
                method: Method::POST,
                endpoint,
                path: path.into(),
                query: &[],
                form: Some(&form),
                auth: AuthMode::None,
                accept: "application/json",
                body: None,
                timeout: None,
                shrinkable: false,
            };
            match self.execute(&req).await {
                Ok(body) => {
                    let t: OAuthTokenResponse =
                        serde_json::from_slice(&body).map_err(|e| JamfError::Decode {
                            endpoint,
                            message: e.to_string(),
                        })?;
                    metrics::counter!(metric::TOKEN_REFRESHES, "method" => "oauth").increment(1);
                    let lifetime = Duration::from_secs(t.expires_in.max(1) as u64);
                    return Ok(Token {
                        value: SecretString::from(t.access_token),
                        expires_at: Instant::now() + lifetime,
                        lifetime,
                    });
                }
                Err(JamfError::NotFound { .. }) if !legacy => {
                    tracing::info!("{endpoint} not found; using /api/oauth/token (older Jamf Pro)");
                    legacy = true;
                    self.legacy_oauth_path.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(auth_failure(e, endpoint)),
            }
        }
    }

    async fn user_token(&self, user: &str, password: &SecretString) -> Result<Token, JamfError> {
        let endpoint = "/api/v1/auth/token";
        let req = Request {
            method: Method::POST,
            endpoint,
            path: "api/v1/auth/token".into(),
            query: &[],
            form: None,
            auth: AuthMode::Basic(user, password),
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        };
        let body = self
            .execute(&req)
            .await
            .map_err(|e| auth_failure(e, endpoint))?;
        metrics::counter!(metric::TOKEN_REFRESHES, "method" => "user").increment(1);
        user_token_from(endpoint, &body)
    }

    async fn keep_alive(&self, current: &SecretString) -> Result<Token, JamfError> {
        let endpoint = "/api/v1/auth/keep-alive";
        let req = Request {
            method: Method::POST,
            endpoint,
            path: "api/v1/auth/keep-alive".into(),
            query: &[],
            form: None,
            auth: AuthMode::Bearer(current),
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        };
        let body = self.execute(&req).await?;
        metrics::counter!(metric::TOKEN_REFRESHES, "method" => "keep_alive").increment(1);
        user_token_from(endpoint, &body)
    }

    /// Invalidates the current token (call on exit) so it cannot be reused if leaked.
    pub async fn invalidate_token(&self) {
        let token = self.token.lock().await.current.take();
        let Some(token) = token else { return };
        let req = Request {
            method: Method::POST,
            endpoint: "/api/v1/auth/invalidate-token",
            path: "api/v1/auth/invalidate-token".into(),
            query: &[],
            form: None,
            auth: AuthMode::Bearer(&token.value),
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        };
        // Best effort, single attempt: we are exiting and the token expires anyway.
        if let Some((Err(e), _)) = self.attempt(&req, None).await {
            tracing::debug!(error = %e, "token invalidation failed");
        }
    }

    /// `GET /api/v1/jamf-pro-version`, e.g. `11.30.1-t1784555528405`.
    pub async fn server_version(&self) -> Result<Option<String>, JamfError> {
        let v: JamfProVersion = self
            .get_json(
                "/api/v1/jamf-pro-version",
                "api/v1/jamf-pro-version".into(),
                &[],
            )
            .await?;
        Ok(v.version)
    }

    /// The computers-inventory version to use: configured, or detected from the server version.
    pub async fn inventory_version(&self) -> Result<ApiVersion, JamfError> {
        let mut cached = self.inventory_version.lock().await;
        if let Some(v) = *cached {
            return Ok(v);
        }
        let v = match self.settings.api_version {
            ApiVersion::Auto => {
                let version = self.server_version().await?;
                let picked = version_for(version.as_deref());
                tracing::info!(server_version = ?version, api = ?picked, "detected Jamf Pro version");
                picked
            }
            fixed => fixed,
        };
        *cached = Some(v);
        Ok(v)
    }

    /// After a 404 on the inventory endpoint, step down to the next older version (auto only).
    pub async fn step_down_inventory_version(&self) -> Option<ApiVersion> {
        if self.settings.api_version != ApiVersion::Auto {
            return None;
        }
        let mut cached = self.inventory_version.lock().await;
        let next = match *cached {
            Some(ApiVersion::V4) => ApiVersion::V3,
            Some(ApiVersion::V3) => ApiVersion::V1,
            _ => return None,
        };
        tracing::warn!(?next, "inventory endpoint not found; stepping down");
        *cached = Some(next);
        Some(next)
    }

    /// One page of `computers-inventory` with sections inline.
    pub async fn computers_page(
        &self,
        version: ApiVersion,
        sections: &[String],
        page_size: u32,
        filter: Option<&str>,
        shrinkable: bool,
    ) -> Result<InventoryPage, JamfError> {
        let (endpoint, path) = inventory_endpoint(version);
        let mut query: Vec<(&str, String)> =
            sections.iter().map(|s| ("section", s.clone())).collect();
        // Keyset paging: always page 0, the filter's `id>` moves forward.
        query.push(("page", "0".into()));
        query.push(("page-size", page_size.to_string()));
        query.push(("sort", "id:asc".into()));
        if let Some(f) = filter {
            query.push(("filter", f.to_string()));
        }
        self.page(endpoint, path.into(), &query, shrinkable).await
    }

    async fn page(
        &self,
        endpoint: &'static str,
        path: String,
        query: &[(&str, String)],
        shrinkable: bool,
    ) -> Result<InventoryPage, JamfError> {
        let mut call = Call::get(endpoint, path, query);
        call.shrinkable = shrinkable;
        let body = self.call(call).await?;
        serde_json::from_slice(&body).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }

    /// `computers-inventory-detail/{id}`: every section of one computer, raw.
    pub async fn computer_detail(
        &self,
        version: ApiVersion,
        id: i64,
    ) -> Result<Box<RawValue>, JamfError> {
        let (endpoint, prefix) = match version {
            ApiVersion::V1 => ("/api/v1/computers-inventory-detail/{id}", "api/v1"),
            ApiVersion::V3 => ("/api/v3/computers-inventory-detail/{id}", "api/v3"),
            ApiVersion::V4 | ApiVersion::Auto => {
                ("/api/v4/computers-inventory-detail/{id}", "api/v4")
            }
        };
        let body = self
            .get(
                endpoint,
                format!("{prefix}/computers-inventory-detail/{id}"),
                &[],
            )
            .await?;
        let text = String::from_utf8(body.to_vec()).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })?;
        RawValue::from_string(text).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }
}

/// Classic API calls (XML) and the Jamf Pro API mobile-device listing.
impl JamfClient {
    async fn classic_text(&self, call: Call<'_>) -> Result<String, JamfError> {
        let endpoint = call.endpoint;
        let body = self.call(call).await?;
        String::from_utf8(body.to_vec()).map_err(|e| JamfError::Decode {
            endpoint,
            message: e.to_string(),
        })
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

    /// `(id, name)` of every advanced mobile device search.
    pub async fn advanced_searches(&self) -> Result<Vec<(i64, String)>, JamfError> {
        let endpoint = "/JSSResource/advancedmobiledevicesearches";
        let xml = self
            .classic_text(Self::classic_call(
                Method::GET,
                endpoint,
                "JSSResource/advancedmobiledevicesearches".into(),
                None,
            ))
            .await?;
        classic::parse_named_list(&xml, "advanced_mobile_device_search")
            .map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// Creates an advanced mobile device search; 409 when the name exists.
    pub async fn create_search(&self, xml: &str) -> Result<i64, JamfError> {
        let endpoint = "/JSSResource/advancedmobiledevicesearches/id/{id}";
        let answer = self
            .classic_text(Self::classic_call(
                Method::POST,
                endpoint,
                "JSSResource/advancedmobiledevicesearches/id/0".into(),
                Some(xml),
            ))
            .await?;
        classic::parse_created_id(&answer)
            .map_err(|message| JamfError::Decode { endpoint, message })
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
    ) -> Result<Vec<classic::SearchHit>, JamfError> {
        let endpoint = "/JSSResource/advancedmobiledevicesearches/id/{id}";
        let mut call = Self::classic_call(
            Method::GET,
            endpoint,
            format!("JSSResource/advancedmobiledevicesearches/id/{id}"),
            None,
        );
        call.timeout = Some(timeout);
        let xml = self.classic_text(call).await?;
        classic::parse_search_results(&xml)
            .map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// `(id, name)` of every webhook configured in Jamf.
    pub async fn webhooks(&self) -> Result<Vec<(i64, String)>, JamfError> {
        let endpoint = "/JSSResource/webhooks";
        let xml = self
            .classic_text(Self::classic_call(
                Method::GET,
                endpoint,
                "JSSResource/webhooks".into(),
                None,
            ))
            .await?;
        classic::parse_named_list(&xml, "webhook")
            .map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// Creates (`id` `None`) or updates a webhook from its Classic XML; returns its id.
    pub async fn put_webhook(&self, id: Option<i64>, xml: &str) -> Result<i64, JamfError> {
        let endpoint = "/JSSResource/webhooks/id/{id}";
        let (method, path) = match id {
            Some(id) => (Method::PUT, format!("JSSResource/webhooks/id/{id}")),
            None => (Method::POST, "JSSResource/webhooks/id/0".to_string()),
        };
        let answer = self
            .classic_text(Self::classic_call(method, endpoint, path, Some(xml)))
            .await?;
        match id {
            Some(id) => Ok(id),
            None => classic::parse_created_id(&answer)
                .map_err(|message| JamfError::Decode { endpoint, message }),
        }
    }

    /// Every mobile device id (`GET /JSSResource/mobiledevices`, one request, no evaluation).
    pub async fn mobile_device_ids(&self) -> Result<Vec<i64>, JamfError> {
        let endpoint = "/JSSResource/mobiledevices";
        let xml = self
            .classic_text(Self::classic_call(
                Method::GET,
                endpoint,
                "JSSResource/mobiledevices".into(),
                None,
            ))
            .await?;
        classic::parse_device_list(&xml).map_err(|message| JamfError::Decode { endpoint, message })
    }

    /// One mobile device's full record, as XML.
    pub async fn mobile_device_xml(&self, id: i64) -> Result<String, JamfError> {
        self.classic_text(Self::classic_call(
            Method::GET,
            "/JSSResource/mobiledevices/id/{id}",
            format!("JSSResource/mobiledevices/id/{id}"),
            None,
        ))
        .await
    }

    /// One keyset page of `/api/v2/mobile-devices/detail`.
    pub async fn mobile_devices_page(
        &self,
        sections: &[&str],
        page_size: u32,
        filter: Option<&str>,
        shrinkable: bool,
    ) -> Result<InventoryPage, JamfError> {
        let mut query: Vec<(&str, String)> = sections
            .iter()
            .map(|s| ("section", s.to_string()))
            .collect();
        query.push(("page", "0".into()));
        query.push(("page-size", page_size.to_string()));
        query.push(("sort", "mobileDeviceId:asc".into()));
        if let Some(f) = filter {
            query.push(("filter", f.to_string()));
        }
        self.page(
            "/api/v2/mobile-devices/detail",
            "api/v2/mobile-devices/detail".into(),
            &query,
            shrinkable,
        )
        .await
    }
}

fn inventory_endpoint(version: ApiVersion) -> (&'static str, &'static str) {
    match version {
        ApiVersion::V1 => ("/api/v1/computers-inventory", "api/v1/computers-inventory"),
        ApiVersion::V3 => ("/api/v3/computers-inventory", "api/v3/computers-inventory"),
        ApiVersion::V4 | ApiVersion::Auto => {
            ("/api/v4/computers-inventory", "api/v4/computers-inventory")
        }
    }
}

/// v4 is current since 11.30.0; v3 on other 11.x servers (with a step down to v1 on 404).
pub fn version_for(version: Option<&str>) -> ApiVersion {
    let Some(v) = version else {
        return ApiVersion::V4;
    };
    match major_minor(v) {
        (m, _) if m > 11 => ApiVersion::V4,
        (11, n) if n >= 30 => ApiVersion::V4,
        (11, _) => ApiVersion::V3,
        _ => ApiVersion::V1,
    }
}

/// `(major, minor)` of a Jamf Pro version string such as `11.30.1-t1784555528405`.
pub fn major_minor(version: &str) -> (u32, u32) {
    let mut nums = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

fn user_token_from(endpoint: &'static str, body: &[u8]) -> Result<Token, JamfError> {
    let t: AuthTokenV1 = serde_json::from_slice(body).map_err(|e| JamfError::Decode {
        endpoint,
        message: e.to_string(),
    })?;
    // Jamf states the expiry as a server timestamp; convert to a lifetime with our clock, and
    // fall back to Jamf's default 20 minutes if the clocks disagree wildly.
    let lifetime = t
        .expires
        .as_deref()
        .and_then(models::parse_jamf_time)
        .map(|exp| exp - chrono::Utc::now())
        .and_then(|d| d.to_std().ok())
        .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(24 * 3600))
        .unwrap_or(Duration::from_secs(20 * 60));
    Ok(Token {
        value: SecretString::from(t.token),
        expires_at: Instant::now() + lifetime,
        lifetime,
    })
}

fn auth_failure(e: JamfError, endpoint: &'static str) -> JamfError {
    match e {
        JamfError::Unauthorized { .. } => {
            metrics::counter!(metric::AUTH_FAILURES).increment(1);
            JamfError::AuthFailed {
                status: 401,
                endpoint,
            }
        }
        JamfError::BadRequest { .. } => {
            metrics::counter!(metric::AUTH_FAILURES).increment(1);
            JamfError::AuthFailed {
                status: 400,
                endpoint,
            }
        }
        other => other,
    }
}

fn classify(
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
        Err(_) => String::from_utf8_lossy(body).into_owned(),
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

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_detection() {
        assert_eq!(version_for(Some("11.30.1-t1784555528405")), ApiVersion::V4);
        assert_eq!(version_for(Some("12.0.0")), ApiVersion::V4);
        assert_eq!(version_for(Some("11.20.0")), ApiVersion::V3);
        assert_eq!(version_for(Some("10.49.0")), ApiVersion::V1);
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
