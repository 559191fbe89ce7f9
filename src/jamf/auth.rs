//! Bearer tokens: obtained with an API client (OAuth client credentials) or a user account,
//! shared by every request of a client, renewed ahead of expiry.
//!
//! Invariants: one renewal at a time (single flight under the token lock), never one per
//! worker; a token is never sent within [`TOKEN_SEND_GUARD`] of its expiry; a 401 discards
//! only the token it answered; refused credentials are fatal ([`JamfError::AuthFailed`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use super::models::{AuthTokenV1, OAuthTokenResponse};
use super::request::{AuthMode, Request};
use super::{JamfClient, JamfError};
use crate::config::Credentials;
use crate::telemetry::metric;

/// A token Jamf refuses although we hold it valid (revoked, or expired early) is renewed and
/// the request replayed at once; after this many 401s in a row the refusal stands.
pub(super) const MAX_REAUTHENTICATIONS: u32 = 2;

/// A token this close to expiry when a connection slot frees up is renewed before sending.
pub(super) const TOKEN_SEND_GUARD: Duration = Duration::from_millis(250);

/// Longest token lifetime believed; a server claiming more is held to this.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The shared token as one attempt uses it.
pub(super) struct SessionToken {
    pub value: SecretString,
    pub generation: u64,
    pub expires_at: Instant,
}

#[derive(Clone)]
struct Token {
    value: SecretString,
    expires_at: Instant,
    lifetime: Duration,
}

impl Token {
    fn new(value: String, lifetime: Duration) -> Token {
        let lifetime = lifetime.clamp(Duration::from_secs(1), MAX_TOKEN_LIFETIME);
        Token {
            value: SecretString::from(value),
            expires_at: Instant::now() + lifetime,
            lifetime,
        }
    }
}

#[derive(Default)]
pub(super) struct TokenState {
    current: Option<Token>,
    /// Bumped on every renewal so a 401 only discards the token it was answered with.
    generation: u64,
}

impl JamfClient {
    /// The current bearer token and its generation, renewed ahead of expiry.
    pub(super) async fn bearer(&self) -> Result<SessionToken, JamfError> {
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
        let token = match self.obtain_token(previous).await {
            // A rotated secret: the file holds a new one; one more try with it.
            Err(e @ JamfError::AuthFailed { .. }) => match self.reread_secret() {
                true => self.obtain_token(None).await?,
                false => return Err(e),
            },
            other => other?,
        };
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

    /// Drops the token a 401 answered, unless another worker has already renewed it.
    pub(super) async fn discard_token(&self, generation: u64) {
        let mut st = self.token.lock().await;
        if st.generation == generation {
            st.current = None;
        }
    }

    /// The credentials in effect: the configured ones, with the secret re-read from its file
    /// once Jamf refused the configured one.
    fn credentials(&self) -> Credentials {
        let mut c = self.settings.credentials.clone();
        let rotated = self
            .rotated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(fresh) = rotated {
            match &mut c {
                Credentials::ApiClient { client_secret, .. } => *client_secret = fresh,
                Credentials::User { password, .. } => *password = fresh,
            }
        }
        c
    }

    /// After Jamf refused the credentials: reads the secret's file again; `true` when it now
    /// holds a different secret (rotated without a restart), which is used from then on.
    fn reread_secret(&self) -> bool {
        let Some(path) = &self.settings.secret_file else {
            return false;
        };
        let fresh = match crate::config::read_secret_file("secret file", path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the secret file again");
                return false;
            }
        };
        let current = match self.credentials() {
            Credentials::ApiClient { client_secret, .. } => client_secret,
            Credentials::User { password, .. } => password,
        };
        if fresh.expose_secret() == current.expose_secret() {
            return false;
        }
        *self.rotated.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        tracing::info!(
            instance = self.instance(),
            "Jamf refused the credentials and the secret file holds a new secret: using it"
        );
        true
    }

    async fn obtain_token(&self, previous: Option<Token>) -> Result<Token, JamfError> {
        match &self.credentials() {
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
            let mut req = Request::post(endpoint, path, AuthMode::None);
            req.form = Some(&form);
            match self.execute(&req).await {
                Ok(answer) => {
                    let t: OAuthTokenResponse =
                        serde_json::from_slice(&answer.body).map_err(|e| JamfError::Decode {
                            endpoint,
                            message: e.to_string(),
                        })?;
                    metrics::counter!(metric::TOKEN_REFRESHES, "jamf_instance" => self.instance().to_string(), "method" => "oauth").increment(1);
                    let lifetime = Duration::from_secs(t.expires_in.max(1).unsigned_abs());
                    return Ok(Token::new(t.access_token, lifetime));
                }
                Err(JamfError::NotFound { .. }) if !legacy => {
                    tracing::info!("{endpoint} not found; using /api/oauth/token (older Jamf Pro)");
                    legacy = true;
                    self.legacy_oauth_path.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(auth_failure(e, endpoint, self.instance())),
            }
        }
    }

    async fn user_token(&self, user: &str, password: &SecretString) -> Result<Token, JamfError> {
        let endpoint = "/api/v1/auth/token";
        let req = Request::post(
            endpoint,
            "api/v1/auth/token",
            AuthMode::Basic(user, password),
        );
        let answer = self
            .execute(&req)
            .await
            .map_err(|e| auth_failure(e, endpoint, self.instance()))?;
        metrics::counter!(metric::TOKEN_REFRESHES, "jamf_instance" => self.instance().to_string(), "method" => "user")
            .increment(1);
        user_token_from(endpoint, &answer.body)
    }

    async fn keep_alive(&self, current: &SecretString) -> Result<Token, JamfError> {
        let endpoint = "/api/v1/auth/keep-alive";
        let req = Request::post(
            endpoint,
            "api/v1/auth/keep-alive",
            AuthMode::Bearer(current),
        );
        let answer = self.execute(&req).await?;
        metrics::counter!(metric::TOKEN_REFRESHES, "jamf_instance" => self.instance().to_string(), "method" => "keep_alive")
            .increment(1);
        user_token_from(endpoint, &answer.body)
    }

    /// Invalidates the current token (call on exit) so it cannot be reused if leaked.
    pub async fn invalidate_token(&self) {
        let token = self.token.lock().await.current.take();
        let Some(token) = token else { return };
        let req = Request::post(
            "/api/v1/auth/invalidate-token",
            "api/v1/auth/invalidate-token",
            AuthMode::Bearer(&token.value),
        );
        // Best effort, single attempt: we are exiting and the token expires anyway.
        if let Err(e) = self.attempt_once(&req).await {
            tracing::debug!(error = %e, "token invalidation failed");
        }
    }
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
        .and_then(super::decode::parse_jamf_time)
        .map(|exp| exp - chrono::Utc::now())
        .and_then(|d| d.to_std().ok())
        .filter(|d| *d >= Duration::from_secs(1) && *d <= MAX_TOKEN_LIFETIME)
        .unwrap_or(Duration::from_secs(20 * 60));
    Ok(Token::new(t.token, lifetime))
}

fn auth_failure(e: JamfError, endpoint: &'static str, instance: &str) -> JamfError {
    let status = match e {
        JamfError::Unauthorized { .. } => 401,
        JamfError::BadRequest { .. } => 400,
        other => return other,
    };
    metrics::counter!(metric::AUTH_FAILURES, "jamf_instance" => instance.to_string()).increment(1);
    JamfError::AuthFailed { status, endpoint }
}
