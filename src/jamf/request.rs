//! One request to Jamf as data: what to send and how to authenticate it, described apart from
//! any attempt at it (the transport makes the attempts; authentication builds its own token
//! requests from the same description).

use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;

/// One request, described independently of any attempt at it.
pub(super) struct Request<'a> {
    pub method: Method,
    /// Template for metrics and errors, e.g. `/api/v4/computers-inventory-detail/{id}`.
    pub endpoint: &'static str,
    /// Path relative to the server URL, without a leading slash.
    pub path: String,
    pub query: &'a [(&'a str, String)],
    pub form: Option<&'a [(&'a str, &'a str)]>,
    pub auth: AuthMode<'a>,
    pub accept: &'static str,
    /// Content type and body (Classic XML writes).
    pub body: Option<(&'static str, &'a str)>,
    /// Overrides the client's request timeout (search evaluation can take minutes).
    pub timeout: Option<Duration>,
    /// A list page the caller can ask for at a smaller size: a timeout or 504 is returned at
    /// once instead of being retried at the same size.
    pub shrinkable: bool,
}

impl<'a> Request<'a> {
    /// A POST without a body other than `form`, as the token endpoints take.
    pub fn post(endpoint: &'static str, path: &str, auth: AuthMode<'a>) -> Self {
        Request {
            method: Method::POST,
            endpoint,
            path: path.into(),
            query: &[],
            form: None,
            auth,
            accept: "application/json",
            body: None,
            timeout: None,
            shrinkable: false,
        }
    }
}

pub(super) enum AuthMode<'a> {
    None,
    Basic(&'a str, &'a SecretString),
    Bearer(&'a SecretString),
    /// The client's shared token, read afresh for every attempt: a retry after a backoff, or
    /// after a long wait for a connection, never goes out with a token that expired meanwhile.
    Session,
}
