//! Errors of the Jamf client, classified so callers can branch on them.
//!
//! Invariant: no variant carries a token, secret or credential; `Display` text is safe to log.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum JamfError {
    /// The credentials were refused (401, or 400 `invalid_client` on the token endpoint).
    /// Fatal: retrying cannot help.
    #[error("Jamf refused the credentials ({status}) at {endpoint}: check client_id/client_secret or username/password")]
    AuthFailed { status: u16, endpoint: &'static str },
    /// 401 even after renewing the token (twice in a row).
    #[error("Jamf answered 401 Unauthorized at {endpoint} even with a fresh token")]
    Unauthorized { endpoint: &'static str },
    #[error("Jamf answered 403 Forbidden at {endpoint}: the API role lacks a privilege")]
    Forbidden { endpoint: &'static str },
    #[error("Jamf answered 404 Not Found at {endpoint}")]
    NotFound { endpoint: &'static str },
    #[error("Jamf answered 409 Conflict at {endpoint}")]
    Conflict { endpoint: &'static str },
    #[error("Jamf answered 400 Bad Request at {endpoint}: {detail}")]
    BadRequest {
        endpoint: &'static str,
        detail: String,
    },
    /// 429 from the Jamf platform gateway.
    #[error("Jamf throttled the request (429) at {endpoint}")]
    Throttled {
        endpoint: &'static str,
        retry_after: Option<Duration>,
    },
    /// HTTP 500 whose body names `policies.ratelimit.QuotaViolation` (Jamf Cloud throttling).
    #[error("Jamf throttled the request (QuotaViolation) at {endpoint}")]
    QuotaViolation { endpoint: &'static str },
    #[error("Jamf answered {status} at {endpoint}")]
    Server { status: u16, endpoint: &'static str },
    #[error("request to {endpoint} timed out")]
    Timeout { endpoint: &'static str },
    /// No connection could be made (refused, DNS, TLS handshake).
    #[error("cannot connect for {endpoint}: {message}")]
    Connect {
        endpoint: &'static str,
        message: String,
    },
    /// This client never reached the server and was asked to give up at once
    /// ([`crate::config::JamfSettings::fail_fast`], the one-shot CLI).
    #[error("Jamf at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("transport error at {endpoint}: {message}")]
    Transport {
        endpoint: &'static str,
        message: String,
    },
    #[error("cannot decode the answer of {endpoint}: {message}")]
    Decode {
        endpoint: &'static str,
        message: String,
    },
    #[error("unexpected status {status} at {endpoint}")]
    Unexpected { status: u16, endpoint: &'static str },
    #[error(
        "gave up on {endpoint} after {attempts} attempts over {elapsed:.1?}; last error: {last}"
    )]
    RetriesExhausted {
        endpoint: &'static str,
        attempts: u32,
        elapsed: Duration,
        last: Box<JamfError>,
    },
}

impl JamfError {
    /// Whether retrying the same idempotent request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            JamfError::Throttled { .. }
                | JamfError::QuotaViolation { .. }
                | JamfError::Server { .. }
                | JamfError::Timeout { .. }
                | JamfError::Transport { .. }
                | JamfError::Connect { .. }
        )
    }

    /// Short, bounded label for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            JamfError::AuthFailed { .. } => "auth_failed",
            JamfError::Unauthorized { .. } => "unauthorized",
            JamfError::Forbidden { .. } => "forbidden",
            JamfError::NotFound { .. } => "not_found",
            JamfError::Conflict { .. } => "conflict",
            JamfError::BadRequest { .. } => "bad_request",
            JamfError::Throttled { .. } => "throttled_429",
            JamfError::QuotaViolation { .. } => "quota_violation",
            JamfError::Server { status: 500, .. } => "server_500",
            JamfError::Server { status: 502, .. } => "server_502",
            JamfError::Server { status: 503, .. } => "server_503",
            JamfError::Server { status: 504, .. } => "server_504",
            JamfError::Server { .. } => "server_other",
            JamfError::Timeout { .. } => "timeout",
            JamfError::Transport { .. } | JamfError::Connect { .. } => "transport",
            JamfError::Unreachable { .. } => "unreachable",
            JamfError::Decode { .. } => "decode",
            JamfError::Unexpected { .. } => "unexpected",
            JamfError::RetriesExhausted { .. } => "retries_exhausted",
        }
    }

    /// A timeout or gateway timeout (the page was too heavy), or a plain 500 (Jamf answers one
    /// for a whole page when one device's data is broken): try a smaller page.
    pub fn asks_for_smaller_pages(&self) -> bool {
        matches!(
            self,
            JamfError::Timeout { .. }
                | JamfError::Server {
                    status: 504 | 500,
                    ..
                }
        )
    }

    /// Jamf answered, but not with a usable record: a plain 500 (broken device data), an
    /// answer that does not decode, an unexpected status; also as the last error of exhausted
    /// retries. Such a failure is isolated to the devices asked for (recorded, retried next
    /// run) instead of failing the run; throttling, timeouts, gateways and transport errors are
    /// the server's or the network's and still fail it.
    pub fn is_record_specific(&self) -> bool {
        match self {
            JamfError::Server { status: 500, .. }
            | JamfError::Decode { .. }
            | JamfError::Unexpected { .. } => true,
            JamfError::RetriesExhausted { last, .. } => last.is_record_specific(),
            _ => false,
        }
    }

    /// The server was never reached (see [`JamfError::Unreachable`]), also through exhausted
    /// retries: trying another kind against it is pointless.
    pub fn is_unreachable(&self) -> bool {
        match self {
            JamfError::Unreachable { .. } => true,
            JamfError::RetriesExhausted { last, .. } => last.is_unreachable(),
            _ => false,
        }
    }

    /// True for a 404, also when it is the last error of exhausted retries.
    pub fn is_not_found(&self) -> bool {
        match self {
            JamfError::NotFound { .. } => true,
            JamfError::RetriesExhausted { last, .. } => last.is_not_found(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_seen_through_exhausted_retries() {
        let nf = JamfError::NotFound { endpoint: "x" };
        assert!(nf.is_not_found());
        let wrapped = JamfError::RetriesExhausted {
            endpoint: "x",
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(nf),
        };
        assert!(wrapped.is_not_found());
        assert!(!JamfError::Forbidden { endpoint: "x" }.is_not_found());
    }
}
