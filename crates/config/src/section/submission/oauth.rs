//! `[submission.oauth]`: OAUTHBEARER and XOAUTH2 through token
//! introspection (RFC 7662).

use crate::check::Checker;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[submission.oauth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    /// `introspection_url`: the RFC 7662 endpoint (https).
    pub introspection_url: Option<String>,
    /// `client_id`: our client id at the endpoint.
    pub client_id: Option<String>,
    /// `client_secret_file`: a file holding our client secret.
    pub client_secret_file: Option<String>,
    /// `required_scope`: a scope the token must carry (e.g. a mail scope).
    pub required_scope: Option<String>,
    /// `username_claim`: the response member naming the user (default
    /// "username"; "sub" or "email" are common).
    pub username_claim: Option<String>,
    /// `cache_ttl`: how long an active token is remembered, never past its
    /// expiry (default "60s"; "0s": ask every time).
    pub cache_ttl: Option<String>,
    /// `timeout`: connect and request timeout (default "10s").
    pub timeout: Option<String>,
    /// `max_in_flight`: introspection requests at once; more get 454 4.7.0
    /// without a request (default 8).
    pub max_in_flight: Option<u32>,
    /// `breaker_failures`: consecutive endpoint failures that open the
    /// circuit breaker (default 5; 0: never).
    pub breaker_failures: Option<u32>,
    /// `breaker_open`: how long the open breaker answers 454 without a
    /// request before one probe goes through (default "30s").
    pub breaker_open: Option<String>,
    /// `ca_file`: extra trust anchors (PEM) for a private identity
    /// provider; the system roots are used otherwise.
    pub ca_file: Option<String>,
}

/// `[submission.oauth]`: token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OAuth {
    /// The https introspection endpoint.
    pub introspection_url: String,
    /// Our client id.
    pub client_id: String,
    /// The file with our client secret (read at start).
    pub client_secret_file: PathBuf,
    /// A scope tokens must carry; `None` (absent or empty): any active
    /// token will do.
    pub required_scope: Option<String>,
    /// The response member that names the user.
    pub username_claim: String,
    /// How long an active token is remembered (never past its expiry).
    pub cache_ttl: Duration,
    /// Connect and request timeout.
    pub timeout: Duration,
    /// Introspection requests at once, at most.
    pub max_in_flight: u32,
    /// Consecutive endpoint failures that open the circuit breaker (0:
    /// never).
    pub breaker_failures: u32,
    /// How long the open breaker refuses before one probe.
    pub breaker_open: Duration,
    /// Extra trust anchors for the endpoint; `None`: the system roots only.
    pub ca_file: Option<PathBuf>,
}

/// The endpoint and our credentials there, each required.
struct Endpoint {
    url: Option<String>,
    client_id: Option<String>,
    secret: Option<PathBuf>,
}

/// `[submission.oauth]`: the endpoint must be https; id and secret file
/// are required. `None` when one of them is missing (recorded).
pub(crate) fn build(o: &OAuthFile, c: &mut Checker) -> Option<OAuth> {
    let endpoint = endpoint(o, c);
    let username_claim = o
        .username_claim
        .clone()
        .unwrap_or_else(|| "username".into());
    if username_claim.is_empty() {
        c.fail("submission.oauth.username_claim", "must not be empty");
    }
    let cache_ttl = c.duration(
        "submission.oauth.cache_ttl",
        &o.cache_ttl,
        Duration::from_secs(60),
    );
    let timeout = c.duration(
        "submission.oauth.timeout",
        &o.timeout,
        Duration::from_secs(10),
    );
    let max_in_flight = c.positive("submission.oauth.max_in_flight", o.max_in_flight, 8);
    let breaker_open = c.duration(
        "submission.oauth.breaker_open",
        &o.breaker_open,
        Duration::from_secs(30),
    );
    if breaker_open.is_zero() {
        c.fail(
            "submission.oauth.breaker_open",
            "must be longer than zero (breaker_failures = 0 turns the breaker off)",
        );
    }
    Some(OAuth {
        introspection_url: endpoint.url?,
        client_id: endpoint.client_id?,
        client_secret_file: endpoint.secret?,
        required_scope: o.required_scope.clone().filter(|s| !s.is_empty()),
        username_claim,
        cache_ttl,
        timeout,
        max_in_flight,
        breaker_failures: o.breaker_failures.unwrap_or(5),
        breaker_open,
        ca_file: o.ca_file.as_deref().map(PathBuf::from),
    })
}

/// `introspection_url` (https only: tokens are never sent in clear),
/// `client_id` and `client_secret_file`.
fn endpoint(o: &OAuthFile, c: &mut Checker) -> Endpoint {
    let url = match o.introspection_url.as_deref() {
        None => {
            c.fail("submission.oauth.introspection_url", "is required");
            None
        }
        Some(u) if !u.starts_with("https://") || u.len() <= "https://".len() => {
            c.fail(
                "submission.oauth.introspection_url",
                format!("{u:?} is not an https:// URL (tokens are never sent in clear)"),
            );
            None
        }
        Some(u) => Some(u.to_string()),
    };
    let client_id = match o.client_id.as_deref() {
        Some(id) if !id.is_empty() => Some(id.to_string()),
        _ => {
            c.fail("submission.oauth.client_id", "is required");
            None
        }
    };
    let secret = match o.client_secret_file.as_deref() {
        Some(f) if !f.is_empty() => Some(PathBuf::from(f)),
        _ => {
            c.fail(
                "submission.oauth.client_secret_file",
                "is required (a file holding the client secret)",
            );
            None
        }
    };
    Endpoint {
        url,
        client_id,
        secret,
    }
}
