//! SMTP AUTH with OAuth 2.0 bearer tokens: the client responses of the SASL
//! mechanisms OAUTHBEARER (RFC 7628 §3.1) and XOAUTH2 (Google's format),
//! the JSON error challenge of a failed attempt (RFC 7628 §3.2.2), and the
//! check of a token by OAuth 2.0 Token Introspection (RFC 7662) against a
//! configured HTTPS endpoint, with a small cache of positive answers.
//!
//! Threat model: the client response comes from an unauthenticated network
//! peer (after TLS), so the parsers take any bytes without panicking, cap
//! every length and accept only the RFC 6750 §2.1 `b64token` alphabet for
//! the token, which therefore never carries anything but itself into the
//! introspection request or the logs (tokens are never logged). A token is
//! good only when the authorization server says so over PKIX-validated
//! HTTPS: `active` true, inside its `exp` / `nbf` window by our injected
//! clock, with the required scope and a user name. Anything else the
//! endpoint does (transport failure, non-200 status, a body that is not a
//! small JSON object) is a *temporary* failure, never a success. The cache
//! is keyed by the SHA-256 of the token (the token itself is not kept),
//! holds only positive answers, is bounded in size and never keeps an
//! answer past the token's `exp`; a revoked token can therefore be accepted
//! for at most the configured TTL.
//!
//! A client must not be able to turn us into an amplifier against the
//! identity provider: every request goes through the one pooled HTTPS
//! client the introspector was built with, at most
//! [`IntrospectionSettings::max_in_flight`] at once (over it:
//! [`OAuthError::Busy`] at once, no request), and a circuit breaker
//! ([`crate::breaker`]) stops asking an endpoint that keeps failing
//! ([`OAuthError::CircuitOpen`]) until its open time has passed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::breaker::{Admission, Breaker, BreakerSettings, BreakerState};
use base64::Engine as _;
use portcullis_types::{Clock, error_chain};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value};

/// The longest decoded client response accepted (a token of
/// [`MAX_TOKEN_LEN`] plus the user and the framing).
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;

/// The longest bearer token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The longest user name (authorization identity or introspected claim)
/// accepted, in bytes.
pub const MAX_USER_LEN: usize = 1024;

/// The largest introspection response body read; a longer body is an
/// endpoint failure and is not read further.
pub const MAX_INTROSPECTION_BODY: usize = 64 * 1024;

/// The most token answers the introspection cache holds.
pub const MAX_CACHE_ENTRIES: usize = 10_000;

/// Introspection requests in flight at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// The response member naming the user by default (RFC 7662 §2.2).
pub const DEFAULT_USERNAME_CLAIM: &str = "username";

/// Why a bearer-token authentication failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The client response (or the token handed to
    /// [`Introspector::check`]) does not follow the mechanism's syntax; the
    /// text says which rule was broken and never contains client data.
    #[error("malformed client response: {0}")]
    Malformed(&'static str),
    /// The authorization server says the token is not active, or it is
    /// expired (`exp`) or not yet valid (`nbf`) by our clock.
    #[error("the token is not active")]
    Inactive,
    /// The token does not carry the required scope.
    #[error("the token lacks the required scope")]
    Scope,
    /// The introspection response names no user in the configured claim
    /// (missing, not a string, empty, too long or with control characters).
    #[error("the introspection response names no user")]
    NoUser,
    /// The introspection endpoint could not give an answer: transport or
    /// TLS failure, a status other than 200, a body that is not JSON, too
    /// large, or without a boolean `active`. Temporary: the client should
    /// try again later (SMTP 454 4.7.0).
    #[error("introspection endpoint failure: {0}")]
    Endpoint(String),
    /// [`IntrospectionSettings::max_in_flight`] requests are already
    /// waiting for the endpoint: not asked. Temporary (454 4.7.0).
    #[error("too many introspection requests in flight")]
    Busy,
    /// The circuit breaker is open after repeated endpoint failures: not
    /// asked. Temporary (454 4.7.0).
    #[error("the introspection endpoint keeps failing; not asked for now")]
    CircuitOpen,
}

impl OAuthError {
    /// True for failures that say nothing about the token (the endpoint
    /// could not be asked, or was not): [`OAuthError::Endpoint`],
    /// [`OAuthError::Busy`] and [`OAuthError::CircuitOpen`].
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            OAuthError::Endpoint(_) | OAuthError::Busy | OAuthError::CircuitOpen
        )
    }

    /// `endpoint`, `busy` or `breaker_open` for a temporary failure (log
    /// fields and metric labels); `None` for a verdict on the token.
    pub fn temporary_reason(&self) -> Option<&'static str> {
        match self {
            OAuthError::Endpoint(_) => Some("endpoint"),
            OAuthError::Busy => Some("busy"),
            OAuthError::CircuitOpen => Some("breaker_open"),
            _ => None,
        }
    }
}

/// What a bearer-token mechanism's client response carries.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerResponse {
    /// The user the client asks to act as: OAUTHBEARER's authorization
    /// identity (`a=`, decoded) or XOAUTH2's `user=`; never empty, at most
    /// [`MAX_USER_LEN`] bytes, without control characters. The caller
    /// compares it with the user the token belongs to.
    pub user: Option<String>,
    /// The bearer token: 1 to [`MAX_TOKEN_LEN`] bytes of the RFC 6750 §2.1
    /// `b64token` alphabet. Hidden by `Debug`.
    pub token: String,
}

impl std::fmt::Debug for BearerResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerResponse")
            .field("user", &self.user)
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .finish()
    }
}

/// Parses an OAUTHBEARER client response (RFC 7628 §3.1), given the
/// base64-DECODED bytes: a GS2 header `n,` or `y,` (`p=`, channel binding,
/// is refused) with an optional authorization identity `a=<saslname>,`,
/// then `\x01`, key/value pairs each ending in `\x01` (`auth=Bearer
/// <token>` required, `host=` and `port=` checked, other well-formed keys
/// ignored, no key twice), and a final `\x01`. The scheme `Bearer` is
/// case-insensitive. A lone `\x01` (the client's answer to an error
/// challenge, §3.2.3) is not a credential and is `Malformed` too.
pub fn parse_oauthbearer(decoded: &[u8]) -> Result<BearerResponse, OAuthError> {
    let text = response_text(decoded)?;
    if text == "\x01" {
        return Err(OAuthError::Malformed(
            "a lone separator ends a failed exchange",
        ));
    }
    // RFC 5801 §4: gs2-cb-flag "," [gs2-authzid] ","
    let rest = if let Some(rest) = text.strip_prefix("n,") {
        rest
    } else if let Some(rest) = text.strip_prefix("y,") {
        rest
    } else if text.starts_with("p=") {
        return Err(OAuthError::Malformed("channel binding is not supported"));
    } else {
        return Err(OAuthError::Malformed("bad GS2 header flag"));
    };
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or(OAuthError::Malformed("unterminated GS2 header"))?;
    let user = if authzid.is_empty() {
        None
    } else {
        let name = authzid
            .strip_prefix("a=")
            .ok_or(OAuthError::Malformed("bad GS2 authorization identity"))?;
        Some(decode_saslname(name)?)
    };
    // RFC 7628 §3.1: client-resp = (gs2-header kvsep *kvpair kvsep)
    let pairs = rest
        .strip_prefix('\x01')
        .ok_or(OAuthError::Malformed("no separator after the GS2 header"))?;
    let mut auth = None;
    let mut host = false;
    let mut port = false;
    for (key, value) in kvpairs(pairs)? {
        match key {
            "auth" => set_once(&mut auth, value)?,
            "host" => {
                once(&mut host)?;
                if value.is_empty() {
                    return Err(OAuthError::Malformed("empty host"));
                }
            }
            "port" => {
                once(&mut port)?;
                if value.is_empty()
                    || value.len() > 5
                    || !value.bytes().all(|b| b.is_ascii_digit())
                    || value.parse::<u16>().is_err()
                {
                    return Err(OAuthError::Malformed("bad port"));
                }
            }
            // Later extensions define more keys; a well-formed pair we do not
            // know is ignored.
            _ => {}
        }
    }
    let auth = auth.ok_or(OAuthError::Malformed("no auth key"))?;
    Ok(BearerResponse {
        user,
        token: bearer_token(auth)?,
    })
}

/// Parses an XOAUTH2 client response (Google's format), given the
/// base64-DECODED bytes: `user=<user>\x01auth=Bearer <token>\x01\x01`. Both
/// keys are required, each once (in either order); other well-formed keys
/// are ignored. The scheme `Bearer` is case-insensitive.
pub fn parse_xoauth2(decoded: &[u8]) -> Result<BearerResponse, OAuthError> {
    let text = response_text(decoded)?;
    let mut user = None;
    let mut auth = None;
    for (key, value) in kvpairs(text)? {
        match key {
            "user" => set_once(&mut user, value)?,
            "auth" => set_once(&mut auth, value)?,
            _ => {}
        }
    }
    let user = user.ok_or(OAuthError::Malformed("no user key"))?;
    let auth = auth.ok_or(OAuthError::Malformed("no auth key"))?;
    Ok(BearerResponse {
        user: Some(checked_user(user)?.to_owned()),
        token: bearer_token(auth)?,
    })
}

/// The server's challenge after a failed token (RFC 7628 §3.2.2), ready to
/// follow `334 `: the base64 of a JSON object with `status`
/// `invalid_token`, `schemes` `bearer` (as XOAUTH2 servers also send) and,
/// when given, the `scope` the token needs.
pub fn error_challenge(required_scope: Option<&str>) -> String {
    #[derive(serde::Serialize)]
    struct Challenge<'a> {
        status: &'static str,
        schemes: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<&'a str>,
    }
    let challenge = Challenge {
        status: "invalid_token",
        schemes: "bearer",
        scope: required_scope.filter(|s| !s.trim().is_empty()),
    };
    // Serializing a struct of strings cannot fail; the fallback keeps the
    // function total anyway.
    let json = serde_json::to_string(&challenge)
        .unwrap_or_else(|_| r#"{"status":"invalid_token","schemes":"bearer"}"#.to_owned());
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// The decoded client response as text, within [`MAX_RESPONSE_LEN`].
fn response_text(decoded: &[u8]) -> Result<&str, OAuthError> {
    if decoded.len() > MAX_RESPONSE_LEN {
        return Err(OAuthError::Malformed("client response too long"));
    }
    std::str::from_utf8(decoded).map_err(|_| OAuthError::Malformed("client response is not UTF-8"))
}

/// Splits `*kvpair kvsep` (RFC 7628 §3.1): pairs `key=value\x01`, then a
/// final `\x01`. Keys are `1*ALPHA`; values hold no control characters
/// other than HTAB, CR and LF.
fn kvpairs(text: &str) -> Result<Vec<(&str, &str)>, OAuthError> {
    let body = text
        .strip_suffix('\x01')
        .ok_or(OAuthError::Malformed("no final separator"))?;
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let body = body
        .strip_suffix('\x01')
        .ok_or(OAuthError::Malformed("unterminated key/value pair"))?;
    body.split('\x01')
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or(OAuthError::Malformed("key/value pair without '='"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(OAuthError::Malformed("bad key"));
            }
            if value
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
            {
                return Err(OAuthError::Malformed("control character in a value"));
            }
            Ok((key, value))
        })
        .collect()
}

/// Records the first value of a key; a second one is an error.
fn set_once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Result<(), OAuthError> {
    if slot.replace(value).is_some() {
        return Err(OAuthError::Malformed("a key appears twice"));
    }
    Ok(())
}

/// Notes that a key was seen; a second time is an error.
fn once(seen: &mut bool) -> Result<(), OAuthError> {
    if std::mem::replace(seen, true) {
        return Err(OAuthError::Malformed("a key appears twice"));
    }
    Ok(())
}

/// RFC 5801 §4 saslname: `=2C` is `,`, `=3D` is `=`, no other `=`.
fn decode_saslname(name: &str) -> Result<String, OAuthError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(OAuthError::Malformed(
                    "bad escape in the authorization identity",
                ));
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    checked_user(&out)?;
    Ok(out)
}

/// A user name from the client: not empty, not too long, no controls.
fn checked_user(user: &str) -> Result<&str, OAuthError> {
    if user.is_empty() {
        return Err(OAuthError::Malformed("empty user"));
    }
    if user.len() > MAX_USER_LEN {
        return Err(OAuthError::Malformed("user too long"));
    }
    if user.chars().any(char::is_control) {
        return Err(OAuthError::Malformed("control character in the user"));
    }
    Ok(user)
}

/// The token of an `auth` value: `Bearer 1*SP b64token` (RFC 6750 §2.1),
/// the scheme case-insensitive (RFC 7235 §2.1).
fn bearer_token(auth: &str) -> Result<String, OAuthError> {
    let (scheme, token) = auth
        .split_once(' ')
        .ok_or(OAuthError::Malformed("auth value is not 'Bearer <token>'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::Malformed("auth scheme is not Bearer"));
    }
    let token = token.trim_start_matches(' ');
    check_token(token)?;
    Ok(token.to_owned())
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`, here at most [`MAX_TOKEN_LEN`] bytes.
fn check_token(token: &str) -> Result<(), OAuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(OAuthError::Malformed("token too long"));
    }
    let body = token.trim_end_matches('=');
    if body.is_empty() {
        return Err(OAuthError::Malformed("empty token"));
    }
    let b64 =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
    if !body.bytes().all(b64) {
        return Err(OAuthError::Malformed("token is not a b64token"));
    }
    Ok(())
}

/// How to reach and judge the token introspection endpoint (RFC 7662).
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionSettings {
    /// The endpoint URL; only `https` is ever contacted.
    pub url: String,
    /// Our client identifier at the authorization server.
    pub client_id: String,
    /// Our client secret, sent with HTTP Basic authentication (RFC 7662
    /// §2.1, `client_secret_basic`: id and secret form-urlencoded first,
    /// RFC 6749 §2.3.1). Hidden by `Debug`.
    pub client_secret: String,
    /// Scopes (space-separated) that the response's `scope` list must all
    /// contain; `None` or blank: no requirement.
    pub required_scope: Option<String>,
    /// The response member naming the user: [`DEFAULT_USERNAME_CLAIM`]
    /// (`username`, RFC 7662 §2.2), or e.g. `sub` or `email`.
    pub username_claim: String,
    /// How long a positive answer is reused (never past the token's `exp`);
    /// zero: every check asks the endpoint.
    pub cache_ttl: Duration,
    /// Requests to the endpoint at once, at most (at least 1); a check
    /// over it is [`OAuthError::Busy`] without waiting.
    pub max_in_flight: usize,
    /// When the circuit breaker opens and for how long.
    pub breaker: BreakerSettings,
}

impl IntrospectionSettings {
    /// Settings for `url` with our client credentials, no required scope,
    /// the `username` claim, no cache, [`DEFAULT_MAX_IN_FLIGHT`] requests
    /// at once and the default breaker (5 failures, 30 s).
    pub fn new(url: &str, client_id: &str, client_secret: &str) -> IntrospectionSettings {
        IntrospectionSettings {
            url: url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            required_scope: None,
            username_claim: DEFAULT_USERNAME_CLAIM.to_owned(),
            cache_ttl: Duration::ZERO,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            breaker: BreakerSettings::default(),
        }
    }

    /// Checks what configuration validation should refuse: a URL that is
    /// not an absolute `https` URL with a host, an empty client id or an
    /// empty username claim. The message names the problem.
    pub fn validate(&self) -> Result<(), &'static str> {
        https_url(&self.url)?;
        if self.client_id.is_empty() {
            return Err("the client id is empty");
        }
        if self.username_claim.is_empty() {
            return Err("the username claim is empty");
        }
        Ok(())
    }

    /// The required scopes, one per element.
    fn required_scopes(&self) -> impl Iterator<Item = &str> {
        self.required_scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }
}

impl std::fmt::Debug for IntrospectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionSettings")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .field("required_scope", &self.required_scope)
            .field("username_claim", &self.username_claim)
            .field("cache_ttl", &self.cache_ttl)
            .field("max_in_flight", &self.max_in_flight)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// `url` parsed, if it is `https` with a host.
fn https_url(url: &str) -> Result<reqwest::Url, &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "the introspection URL does not parse")?;
    if parsed.scheme() != "https" {
        return Err("the introspection URL is not https");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the introspection URL has no host");
    }
    Ok(parsed)
}

/// Checks bearer tokens with a token introspection endpoint (RFC 7662),
/// caching positive answers. Share it behind an `Arc`.
pub struct Introspector {
    /// One client for every request: its connection pool is shared, so
    /// checks reuse TLS sessions with the endpoint instead of each opening
    /// its own.
    client: reqwest::Client,
    settings: IntrospectionSettings,
    clock: Arc<dyn Clock>,
    cache: Mutex<Cache>,
    in_flight: AtomicUsize,
    breaker: Breaker,
}

/// What the introspector is doing, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntrospectionStats {
    /// Requests waiting for the endpoint now.
    pub in_flight: usize,
    /// The circuit breaker's state now.
    pub breaker: BreakerState,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
}

/// A slot of [`IntrospectionSettings::max_in_flight`], given back on drop
/// (also when the check is abandoned mid-request).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// An introspector using `client`, the HTTPS client to use (build it
    /// with `portcullis_https::builder`, the server's one strict client:
    /// PKIX, TLS 1.2+, no redirects, timeouts), `settings`, and `clock` for
    /// `exp`, `nbf` and the cache.
    pub fn new(
        client: reqwest::Client,
        settings: IntrospectionSettings,
        clock: Arc<dyn Clock>,
    ) -> Introspector {
        let breaker = Breaker::new(settings.breaker);
        Introspector {
            client,
            settings,
            clock,
            cache: Mutex::new(Cache::default()),
            in_flight: AtomicUsize::new(0),
            breaker,
        }
    }

    /// Requests in flight, the breaker's state and how often it opened.
    pub fn stats(&self) -> IntrospectionStats {
        IntrospectionStats {
            in_flight: self.in_flight.load(Ordering::Acquire),
            breaker: self.breaker.state(self.clock.now()),
            breaker_opened: self.breaker.opened_total(),
        }
    }

    /// Takes a slot of `max_in_flight`, if one is free.
    fn slot(&self) -> Option<InFlight<'_>> {
        let max = self.settings.max_in_flight.max(1);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(&self.in_flight))
    }

    /// The settings this introspector was built with.
    pub fn settings(&self) -> &IntrospectionSettings {
        &self.settings
    }

    /// Checks `token` and returns the user it belongs to. POSTs
    /// `token=<t>&token_type_hint=access_token`
    /// (`application/x-www-form-urlencoded`, `Accept: application/json`,
    /// HTTP Basic client authentication) to the endpoint, unless a cached
    /// positive answer is still fresh. `Ok(user)` only when the response is
    /// a 200 `application/json` object of at most
    /// [`MAX_INTROSPECTION_BODY`] bytes with `"active": true`, `exp` (if
    /// present) in the future and `nbf` (if present) not in the future by
    /// the injected clock, every required scope in `scope`, and the username
    /// claim a non-empty string without control characters. A token outside
    /// the `b64token` alphabet or [`MAX_TOKEN_LEN`] is `Malformed` without
    /// asking the endpoint. A cached answer needs no request; otherwise
    /// the request needs a free slot of `max_in_flight` ([`OAuthError::Busy`]
    /// at once when none is) and a closed breaker
    /// ([`OAuthError::CircuitOpen`] while it is open); every endpoint
    /// failure, and every answer, is recorded by the breaker.
    pub async fn check(&self, token: &str) -> Result<String, OAuthError> {
        check_token(token)?;
        let key = token_key(token);
        if let Some(user) = self.cache_lock().get(&key, self.clock.now()) {
            tracing::debug!(%user, "bearer token accepted from the introspection cache");
            return Ok(user);
        }
        let Some(_slot) = self.slot() else {
            return Err(OAuthError::Busy);
        };
        let Some(admission) = self.breaker.admit(self.clock.now()) else {
            return Err(OAuthError::CircuitOpen);
        };
        if admission == Admission::Probe {
            tracing::info!("introspection circuit breaker: probing the endpoint");
        }
        let answer = self.introspect(token).await;
        let now = self.clock.now();
        // An answer that is not one (no boolean `active`, a bad date) is an
        // endpoint failure too.
        let judged =
            answer.and_then(|answer| judge(&answer, &self.settings, now).map(|u| (u, answer)));
        let endpoint_ok = !matches!(judged, Err(OAuthError::Endpoint(_)));
        if self.breaker.record(admission, endpoint_ok, now) {
            tracing::warn!(
                open_secs = self.settings.breaker.open_for.as_secs(),
                "introspection circuit breaker open: the endpoint keeps failing; bearer tokens get 454 without a request until a probe succeeds"
            );
        } else if admission == Admission::Probe && endpoint_ok {
            tracing::info!("introspection circuit breaker closed: the endpoint answers again");
        }
        let (user, answer) = judged?;
        if !self.settings.cache_ttl.is_zero() {
            let mut until = now.checked_add(self.settings.cache_ttl).unwrap_or(now);
            if let Some(exp) = numeric_date(&answer, "exp")? {
                until = until.min(exp);
            }
            self.cache_lock().insert(key, user.clone(), until, now);
        }
        tracing::debug!(%user, "bearer token accepted by the introspection endpoint");
        Ok(user)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One introspection request; the response object, or why there is
    /// none.
    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, OAuthError> {
        let endpoint = OAuthError::Endpoint;
        let url = https_url(&self.settings.url).map_err(|e| endpoint(e.to_owned()))?;
        // RFC 7662 §2.1: form parameters `token` and `token_type_hint`.
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut response = self
            .client
            .post(url)
            .header(AUTHORIZATION, self.basic_auth()?)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| endpoint(error_chain(&e)))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(endpoint(format!("HTTP status {}", status.as_u16())));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(endpoint(format!(
                "content type {content_type:?} is not application/json"
            )));
        }
        let too_large = || endpoint(format!("body larger than {MAX_INTROSPECTION_BODY} bytes"));
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_INTROSPECTION_BODY as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| endpoint(error_chain(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_INTROSPECTION_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err(endpoint("the body is not a JSON object".to_owned())),
            Err(e) => Err(endpoint(format!("the body is not JSON: {e}"))),
        }
    }

    /// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749
    /// §2.3.1), marked sensitive.
    fn basic_auth(&self) -> Result<HeaderValue, OAuthError> {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!(
            "{}:{}",
            encode(&self.settings.client_id),
            encode(&self.settings.client_secret)
        );
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| OAuthError::Endpoint("unusable client credentials".to_owned()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `application/json`, case-insensitive, parameters allowed.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Judges an introspection response (RFC 7662 §2.2) at time `now`: the
/// user, or why not.
fn judge(
    answer: &Map<String, Value>,
    settings: &IntrospectionSettings,
    now: SystemTime,
) -> Result<String, OAuthError> {
    match answer.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(OAuthError::Inactive),
        _ => {
            return Err(OAuthError::Endpoint(
                "\"active\" is missing or not a boolean".to_owned(),
            ));
        }
    }
    if numeric_date(answer, "exp")?.is_some_and(|exp| exp <= now) {
        return Err(OAuthError::Inactive);
    }
    if numeric_date(answer, "nbf")?.is_some_and(|nbf| nbf > now) {
        return Err(OAuthError::Inactive);
    }
    let granted = answer.get("scope").and_then(Value::as_str).unwrap_or("");
    if settings
        .required_scopes()
        .any(|needed| !granted.split(' ').any(|s| s == needed))
    {
        return Err(OAuthError::Scope);
    }
    match answer.get(&settings.username_claim) {
        Some(Value::String(user))
            if !user.is_empty()
                && user.len() <= MAX_USER_LEN
                && !user.chars().any(char::is_control) =>
        {
            Ok(user.clone())
        }
        _ => Err(OAuthError::NoUser),
    }
}

/// The member `name` as a NumericDate (seconds since the epoch, RFC 7519
/// §2), if present. Not a number: the endpoint misbehaves.
fn numeric_date(answer: &Map<String, Value>, name: &str) -> Result<Option<SystemTime>, OAuthError> {
    // A JSON null is taken as an absent member.
    let value = match answer.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let bad = || OAuthError::Endpoint(format!("\"{name}\" is not a NumericDate"));
    let number = value.as_number().ok_or_else(bad)?;
    let time = if let Some(secs) = number.as_u64() {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    } else if number.as_i64().is_some() {
        // Before the epoch: long past.
        Some(SystemTime::UNIX_EPOCH)
    } else {
        let secs = number.as_f64().filter(|s| s.is_finite()).ok_or_else(bad)?;
        if secs <= 0.0 {
            Some(SystemTime::UNIX_EPOCH)
        } else {
            Duration::try_from_secs_f64(secs)
                .ok()
                .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        }
    };
    // Beyond what SystemTime holds: as far in the future as it goes is not
    // representable, so refuse the answer rather than guess.
    time.map(Some).ok_or_else(bad)
}

/// The cache key of `token`: its SHA-256, so the token is not kept.
fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Positive introspection answers by token hash, each with the time it
/// stops being used.
#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], CacheEntry>,
}

struct CacheEntry {
    user: String,
    until: SystemTime,
}

impl Cache {
    /// The user of a fresh entry; a stale one is dropped.
    fn get(&mut self, key: &[u8; 32], now: SystemTime) -> Option<String> {
        let entry = self.entries.get(key)?;
        if now < entry.until {
            return Some(entry.user.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Stores an answer usable until `until`; when full, stale entries go
    /// first, then the one that would expire soonest.
    fn insert(&mut self, key: [u8; 32], user: String, until: SystemTime, now: SystemTime) {
        if until <= now {
            return;
        }
        if self.entries.len() >= MAX_CACHE_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| now < e.until);
            if self.entries.len() >= MAX_CACHE_ENTRIES {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| *k);
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, CacheEntry { user, until });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ya29.a0AfH6SMB-x_y~z+/9==";

    #[track_caller]
    fn bearer_ok(input: &[u8], user: Option<&str>, token: &str) {
        let got = parse_oauthbearer(input)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
        assert_eq!(
            got.user.as_deref(),
            user,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(got.token, token);
    }

    #[track_caller]
    fn bearer_bad(input: &[u8]) {
        let got = parse_oauthbearer(input);
        assert!(
            matches!(got, Err(OAuthError::Malformed(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[track_caller]
    fn xoauth2_ok(input: &[u8], user: &str, token: &str) {
        let got = parse_xoauth2(input)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
        assert_eq!(got.user.as_deref(), Some(user));
        assert_eq!(got.token, token);
    }

    #[track_caller]
    fn xoauth2_bad(input: &[u8]) {
        let got = parse_xoauth2(input);
        assert!(
            matches!(got, Err(OAuthError::Malformed(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn oauthbearer_accepts_rfc_7628_responses() {
        // RFC 7628 §4.1 (with host and port).
        bearer_ok(
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
            Some("user@example.com"),
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
        );
        // §4.2: no authzid.
        bearer_ok(b"n,,\x01auth=Bearer abc\x01\x01", None, "abc");
        bearer_ok(b"y,,\x01auth=Bearer abc\x01\x01", None, "abc");
        // The scheme is case-insensitive; more than one SP is allowed.
        bearer_ok(b"n,,\x01auth=bearer abc\x01\x01", None, "abc");
        bearer_ok(b"n,,\x01auth=BEARER   abc\x01\x01", None, "abc");
        // The full b64token alphabet.
        bearer_ok(
            format!("n,,\x01auth=Bearer {TOKEN}\x01\x01").as_bytes(),
            None,
            TOKEN,
        );
        // saslname escapes (RFC 5801).
        bearer_ok(
            b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01",
            Some("a,b=c"),
            "t",
        );
        // Unknown well-formed keys are ignored.
        bearer_ok(b"n,,\x01mthd=POST\x01auth=Bearer t\x01\x01", None, "t");
        // UTF-8 authorization identity.
        bearer_ok(
            "n,a=jörg@example.test,\x01auth=Bearer t\x01\x01".as_bytes(),
            Some("jörg@example.test"),
            "t",
        );
    }

    #[test]
    fn oauthbearer_refuses_malformed_responses() {
        let long_token = format!(
            "n,,\x01auth=Bearer {}\x01\x01",
            "a".repeat(MAX_TOKEN_LEN + 1)
        );
        let long_user = format!(
            "n,a={},\x01auth=Bearer t\x01\x01",
            "u".repeat(MAX_USER_LEN + 1)
        );
        let huge = vec![b'a'; MAX_RESPONSE_LEN + 1];
        let cases: &[&[u8]] = &[
            b"",
            b"\x01",
            b"n",
            b"n,",
            b"n,,",
            b"n,,\x01",
            b"n,,\x01\x01",
            // Channel binding is refused.
            b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
            b"x,,\x01auth=Bearer t\x01\x01",
            b"N,,\x01auth=Bearer t\x01\x01",
            // authzid problems.
            b"n,b=user,\x01auth=Bearer t\x01\x01",
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=x=2,\x01auth=Bearer t\x01\x01",
            b"n,a=x=41,\x01auth=Bearer t\x01\x01",
            b"n,a=x\x02y,\x01auth=Bearer t\x01\x01",
            // Missing separators.
            b"n,,auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01auth=Bearer t",
            b"n,,\x01auth=Bearer t\x01\x01\x01",
            b"n,,\x01\x01auth=Bearer t\x01\x01",
            // Pair syntax.
            b"n,,\x01auth\x01\x01",
            b"n,,\x01=Bearer t\x01\x01",
            b"n,,\x01au th=Bearer t\x01\x01",
            b"n,,\x01auth1=x\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x00\x01\x01",
            b"n,,\x01auth=Bearer t\x7f\x01\x01",
            // auth value.
            b"n,,\x01host=h\x01\x01",
            b"n,,\x01auth=\x01\x01",
            b"n,,\x01auth=Bearer\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01auth=Bearer ==\x01\x01",
            b"n,,\x01auth=Basic dXNlcjpwYXNz\x01\x01",
            b"n,,\x01auth=Bearerabc\x01\x01",
            b"n,,\x01auth= Bearer abc\x01\x01",
            b"n,,\x01auth=Bearer a b\x01\x01",
            b"n,,\x01auth=Bearer a=b\x01\x01",
            b"n,,\x01auth=Bearer abc \x01\x01",
            b"n,,\x01auth=Bearer a%62\x01\x01",
            b"n,,\x01auth=Bearer a\tb\x01\x01",
            "n,,\x01auth=Bearer t\u{e9}\x01\x01".as_bytes(),
            // Duplicates.
            b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
            b"n,,\x01host=a\x01host=b\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=1\x01port=2\x01auth=Bearer t\x01\x01",
            // host and port.
            b"n,,\x01host=\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=65536\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=-1\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=+25\x01auth=Bearer t\x01\x01",
            b"n,,\x01port=0000025\x01auth=Bearer t\x01\x01",
            // Not UTF-8.
            b"n,a=\xff,\x01auth=Bearer t\x01\x01",
            long_token.as_bytes(),
            long_user.as_bytes(),
            &huge,
        ];
        for case in cases {
            bearer_bad(case);
        }
        // The limit itself is fine.
        let at_limit = format!("n,,\x01auth=Bearer {}\x01\x01", "a".repeat(MAX_TOKEN_LEN));
        bearer_ok(at_limit.as_bytes(), None, &"a".repeat(MAX_TOKEN_LEN));
    }

    #[test]
    fn xoauth2_accepts_googles_format() {
        xoauth2_ok(
            b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdGxhc3RhLmNvbQo\x01\x01",
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdGxhc3RhLmNvbQo",
        );
        xoauth2_ok(b"auth=bearer t\x01user=u\x01\x01", "u", "t");
        xoauth2_ok(b"user=u\x01vendor=x\x01auth=Bearer t\x01\x01", "u", "t");
    }

    #[test]
    fn xoauth2_refuses_malformed_responses() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x01",
            b"\x01\x01",
            b"user=u\x01\x01",
            b"auth=Bearer t\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=u\x01auth=Bearer t\x01",
            b"user=u\x01auth=Bearer t",
            b"user=u\x01auth=Bearer t\x01\x01\x01",
            b"user=u\x01auth=Bearer\x01\x01",
            b"user=u\x01auth=Basic t\x01\x01",
            b"user=u\x01auth=Bearer t!\x01\x01",
            b"user=u\x01user=v\x01auth=Bearer t\x01\x01",
            b"user=u\x01auth=Bearer t\x01auth=Bearer t\x01\x01",
            b"user=u\rx\x01auth=Bearer t\x01\x01",
            b"user=u\x01\x01auth=Bearer t\x01\x01",
            b"us er=u\x01auth=Bearer t\x01\x01",
            b"user=\xc3\x01auth=Bearer t\x01\x01",
        ];
        for case in cases {
            xoauth2_bad(case);
        }
    }

    /// Every prefix and every one-byte change of valid responses is handled
    /// without a panic (and a strict prefix is never accepted).
    #[test]
    fn no_panic_on_mangled_input() {
        let valid: [&[u8]; 2] = [
            b"n,a=u=2Cser@example.com,\x01host=h\x01port=587\x01auth=Bearer abc=\x01\x01",
            b"user=u@example.com\x01auth=Bearer abc=\x01\x01",
        ];
        let interesting = [0u8, 1, b',', b'=', b' ', b'a', b'2', b'C', 0x80, 0xff];
        for input in valid {
            for end in 0..input.len() {
                assert!(parse_oauthbearer(&input[..end]).is_err());
                assert!(parse_xoauth2(&input[..end]).is_err());
            }
            for i in 0..input.len() {
                for b in interesting {
                    let mut mangled = input.to_vec();
                    mangled[i] = b;
                    let _ = parse_oauthbearer(&mangled);
                    let _ = parse_xoauth2(&mangled);
                    mangled.insert(i, b);
                    let _ = parse_oauthbearer(&mangled);
                    let _ = parse_xoauth2(&mangled);
                }
            }
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let response = parse_xoauth2(b"user=u\x01auth=Bearer secret-token\x01\x01").unwrap();
        let text = format!("{response:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("12 bytes"), "{text}");
        let settings = IntrospectionSettings::new("https://as.test/i", "id", "hunter2");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn error_challenge_is_base64_json() {
        let decode = |s: String| -> Value {
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_eq!(
            decode(error_challenge(Some("mail \"send\""))),
            serde_json::json!({"status": "invalid_token", "schemes": "bearer", "scope": "mail \"send\""})
        );
        assert_eq!(
            decode(error_challenge(None)),
            serde_json::json!({"status": "invalid_token", "schemes": "bearer"})
        );
        assert_eq!(
            decode(error_challenge(Some(" "))),
            serde_json::json!({"status": "invalid_token", "schemes": "bearer"})
        );
    }

    #[test]
    fn settings_validation() {
        let mut s = IntrospectionSettings::new("https://as.example.test/introspect", "id", "s");
        assert_eq!(s.validate(), Ok(()));
        for url in [
            "http://as.example.test/i",
            "as.example.test/i",
            "https://",
            "",
        ] {
            s.url = url.to_owned();
            assert!(s.validate().is_err(), "{url}");
        }
        s.url = "https://as.example.test/i".to_owned();
        s.client_id.clear();
        assert!(s.validate().is_err());
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[track_caller]
    fn judged(answer: Value, settings: &IntrospectionSettings) -> Result<String, OAuthError> {
        let Value::Object(map) = answer else {
            panic!("not an object")
        };
        judge(&map, settings, at(1_000))
    }

    /// What a judged answer's error must satisfy.
    type Expect = fn(&OAuthError) -> bool;

    #[test]
    fn judging_introspection_answers() {
        use serde_json::json;
        let mut s = IntrospectionSettings::new("https://as.test/i", "id", "s");
        s.required_scope = Some("smtp".to_owned());
        let ok = |r: Result<String, OAuthError>| r.unwrap();
        let base = json!({"active": true, "username": "u", "scope": "openid smtp"});
        assert_eq!(ok(judged(base.clone(), &s)), "u");
        let with = |key: &str, value: Value| {
            let mut v = base.clone();
            v[key] = value;
            v
        };
        assert_eq!(ok(judged(with("exp", json!(1001)), &s)), "u");
        assert_eq!(ok(judged(with("exp", json!(1000.5)), &s)), "u");
        assert_eq!(ok(judged(with("nbf", json!(1000)), &s)), "u");
        let cases: Vec<(Value, Expect)> = vec![
            (with("active", json!(false)), |e| {
                matches!(e, OAuthError::Inactive)
            }),
            (with("active", json!("true")), OAuthError::is_temporary),
            (
                json!({"username": "u", "scope": "smtp"}),
                OAuthError::is_temporary,
            ),
            (with("exp", json!(1000)), |e| {
                matches!(e, OAuthError::Inactive)
            }),
            (with("exp", json!(-5)), |e| {
                matches!(e, OAuthError::Inactive)
            }),
            (with("exp", json!(999.9)), |e| {
                matches!(e, OAuthError::Inactive)
            }),
            (with("exp", json!("2030")), OAuthError::is_temporary),
            (with("exp", json!(1e300)), OAuthError::is_temporary),
            (with("nbf", json!(1001)), |e| {
                matches!(e, OAuthError::Inactive)
            }),
            (with("scope", json!("smtpx openid")), |e| {
                matches!(e, OAuthError::Scope)
            }),
            (with("scope", json!(["smtp"])), |e| {
                matches!(e, OAuthError::Scope)
            }),
            (with("scope", Value::Null), |e| {
                matches!(e, OAuthError::Scope)
            }),
            (with("username", json!("")), |e| {
                matches!(e, OAuthError::NoUser)
            }),
            (with("username", json!(7)), |e| {
                matches!(e, OAuthError::NoUser)
            }),
            (with("username", json!("a\nb")), |e| {
                matches!(e, OAuthError::NoUser)
            }),
            (with("username", Value::Null), |e| {
                matches!(e, OAuthError::NoUser)
            }),
        ];
        for (answer, expected) in cases {
            let got = judged(answer.clone(), &s);
            assert!(got.as_ref().is_err_and(expected), "{answer}: {got:?}");
        }
        // Several required scopes must all be granted; none required: any.
        s.required_scope = Some("smtp openid".to_owned());
        assert_eq!(ok(judged(base.clone(), &s)), "u");
        s.required_scope = Some("smtp admin".to_owned());
        assert!(matches!(judged(base.clone(), &s), Err(OAuthError::Scope)));
        s.required_scope = None;
        assert_eq!(
            ok(judged(json!({"active": true, "username": "u"}), &s)),
            "u"
        );
        s.username_claim = "sub".to_owned();
        assert!(matches!(judged(base.clone(), &s), Err(OAuthError::NoUser)));
        assert_eq!(ok(judged(with("sub", json!("s-1")), &s)), "s-1");
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut cache = Cache::default();
        let key = |i: usize| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        cache.insert(key(0), "u".into(), at(10), at(0));
        assert_eq!(cache.get(&key(0), at(9)).as_deref(), Some("u"));
        assert_eq!(cache.get(&key(0), at(10)), None);
        assert!(cache.entries.is_empty());
        // Never stored when already stale.
        cache.insert(key(0), "u".into(), at(5), at(5));
        assert!(cache.entries.is_empty());
        for i in 0..MAX_CACHE_ENTRIES {
            cache.insert(key(i), "u".into(), at(100 + i as u64), at(0));
        }
        assert_eq!(cache.entries.len(), MAX_CACHE_ENTRIES);
        // Full: the entry that would expire soonest goes.
        cache.insert(key(MAX_CACHE_ENTRIES), "v".into(), at(1_000_000), at(0));
        assert_eq!(cache.entries.len(), MAX_CACHE_ENTRIES);
        assert_eq!(cache.get(&key(0), at(1)), None);
        assert_eq!(cache.get(&key(1), at(1)).as_deref(), Some("u"));
        // Full again: every stale entry goes at once.
        cache.insert(
            key(MAX_CACHE_ENTRIES + 1),
            "w".into(),
            at(1_000_000),
            at(150),
        );
        assert_eq!(cache.entries.len(), MAX_CACHE_ENTRIES - 49);
    }

    #[test]
    fn token_key_is_sha256() {
        assert_eq!(
            token_key("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }
}
