//! SMTP AUTH (RFC 4954), over TLS only: PLAIN (RFC 4616), LOGIN,
//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and, with `[submission.oauth]`,
//! OAUTHBEARER (RFC 7628) and XOAUTH2. CRAM-MD5 is not offered: it needs
//! the password stored in a recoverable form and rests on HMAC-MD5.
//!
//! The session decodes the exchange; everything that needs the users file,
//! the lockout state, argon2 or an HTTP request is the driver's:
//! [`Event::CheckAuth`], answered by [`Session::auth_checked`]. An address
//! locked out by the brute-force defence is refused at the AUTH command,
//! before any credential is sent.

use super::sasl::{AuthCheck, AuthOutcome, AuthStep, BearerMechanism};
use super::{Event, Session, State, reply};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_config::Role;
use portcullis_submission::lockout::Lock;
use portcullis_submission::oauth;
use portcullis_submission::scram;
use smtp_proto::{AUTH_LOGIN, AUTH_OAUTHBEARER, AUTH_PLAIN, AUTH_SCRAM_SHA_256, AUTH_XOAUTH2};
use std::time::{Duration, Instant};

/// `334` prompts of LOGIN: "Username:" and "Password:" in base64.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

enum Decoded {
    Ok(Vec<u8>),
    Cancelled,
    Bad,
}

fn decode(text: &str) -> Decoded {
    let text = text.trim();
    if text == "*" {
        return Decoded::Cancelled;
    }
    // RFC 4954 §4: "=" is an empty initial response.
    if text == "=" {
        return Decoded::Ok(Vec::new());
    }
    match STANDARD.decode(text) {
        Ok(bytes) => Decoded::Ok(bytes),
        Err(_) => Decoded::Bad,
    }
}

fn decode_text(text: &str) -> Decoded {
    match decode(text) {
        Decoded::Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Decoded::Ok(s.into_bytes()),
            Err(_) => Decoded::Bad,
        },
        other => other,
    }
}

/// "N minutes" (rounded up, at least one) for a reply text.
pub(super) fn minutes(d: Duration) -> String {
    match d.as_secs().div_ceil(60).max(1) {
        1 => "1 minute".to_string(),
        n => format!("{n} minutes"),
    }
}

impl Session {
    /// True when AUTH is offered now: on a listener with AUTH, after TLS.
    pub(super) fn auth_offered(&self) -> bool {
        self.cfg.auth && self.tls.is_some()
    }

    /// The mechanisms advertised after EHLO (when AUTH is offered).
    pub(super) fn auth_mechanisms(&self) -> &'static [u8] {
        if self.cfg.oauth {
            b"AUTH PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2"
        } else {
            b"AUTH PLAIN LOGIN SCRAM-SHA-256"
        }
    }

    /// The user this session authenticated as.
    pub fn authenticated(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// The client's address.
    pub fn peer(&self) -> std::net::IpAddr {
        self.peer
    }

    pub(super) fn auth(
        &mut self,
        mechanism: u64,
        initial: &str,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let bearer = match mechanism {
            AUTH_OAUTHBEARER if self.cfg.oauth => Some(BearerMechanism::OAuthBearer),
            AUTH_XOAUTH2 if self.cfg.oauth => Some(BearerMechanism::XOAuth2),
            _ => None,
        };
        if !self.cfg.auth {
            self.error(out, 502, (5, 5, 1), "AUTH not available");
        } else if self.tls.is_none() && self.cfg.role == Role::Submission {
            // RFC 6409/8314: on port 587 nothing but STARTTLS comes first.
            self.error(out, 530, (5, 7, 0), "Must issue a STARTTLS command first");
        } else if self.tls.is_none() {
            // RFC 4954 §4 / RFC 5248: credentials only over TLS.
            self.error(
                out,
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            );
        } else if self.helo.is_none() {
            self.error(out, 503, (5, 5, 1), "Send EHLO first");
        } else if self.auth_user.is_some() {
            self.error(out, 503, (5, 5, 1), "Already authenticated");
        } else if self.tx.is_some() {
            self.error(
                out,
                503,
                (5, 5, 1),
                "AUTH not permitted during a mail transaction",
            );
        } else if let Some(lock) = self.cfg.guard.locked(self.peer, None, Instant::now()) {
            // Refused before any credential is sent: no work for a locked
            // address, and nothing learnt.
            self.stats.auth_locked += 1;
            tracing::warn!(
                scope = lock.scope.as_str(),
                remaining_secs = lock.remaining.as_secs(),
                "AUTH refused: locked out"
            );
            self.locked_out(lock, out);
        } else if mechanism == AUTH_PLAIN {
            if initial.is_empty() {
                self.challenge("", AuthStep::Plain, out);
            } else {
                return self.auth_plain(initial, out);
            }
        } else if mechanism == AUTH_LOGIN {
            if initial.is_empty() {
                self.login_prompt(AuthStep::LoginUser, out);
            } else {
                return self.auth_response(AuthStep::LoginUser, initial, out);
            }
        } else if mechanism == AUTH_SCRAM_SHA_256 {
            if initial.is_empty() {
                self.challenge("", AuthStep::ScramFirst, out);
            } else {
                return self.auth_response(AuthStep::ScramFirst, initial, out);
            }
        } else if let Some(m) = bearer {
            if initial.is_empty() {
                self.challenge("", AuthStep::Bearer(m), out);
            } else {
                return self.auth_response(AuthStep::Bearer(m), initial, out);
            }
        } else {
            self.error(out, 504, (5, 5, 4), "Unrecognized authentication type");
        }
        self.closed_event()
    }

    /// A `334` challenge (base64 text) and the step that reads the answer.
    fn challenge(&mut self, b64: &str, step: AuthStep, out: &mut Vec<u8>) {
        out.extend_from_slice(b"334 ");
        out.extend_from_slice(b64.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.state = State::Auth(step);
    }

    fn login_prompt(&mut self, step: AuthStep, out: &mut Vec<u8>) {
        let prompt = if matches!(step, AuthStep::LoginUser) {
            USERNAME
        } else {
            PASSWORD
        };
        self.challenge(prompt, step, out);
    }

    /// A response line while an exchange is waiting (`line` without CRLF).
    pub(super) fn auth_response(
        &mut self,
        step: AuthStep,
        line: &str,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        self.state = State::Command;
        match step {
            AuthStep::Plain => self.auth_plain(line, out),
            AuthStep::LoginUser => match decode_text(line) {
                Decoded::Ok(user) => {
                    let user = String::from_utf8_lossy(&user).into_owned();
                    self.login_prompt(AuthStep::LoginPassword(user), out);
                    None
                }
                other => self.bad_response(other, out),
            },
            AuthStep::LoginPassword(user) => match decode_text(line) {
                Decoded::Ok(password) => {
                    let password = String::from_utf8_lossy(&password).into_owned();
                    self.check(AuthCheck::Password { user, password })
                }
                other => self.bad_response(other, out),
            },
            AuthStep::ScramFirst => match decode_text(line) {
                Decoded::Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    match scram::client_first(&text) {
                        Ok(first) => self.check(AuthCheck::ScramStart(Box::new(first))),
                        Err(e) => self.malformed(&e.to_string(), out),
                    }
                }
                other => self.bad_response(other, out),
            },
            AuthStep::ScramFinal(server) => match decode_text(line) {
                Decoded::Ok(bytes) => self.check(AuthCheck::ScramFinal {
                    server,
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                }),
                other => self.bad_response(other, out),
            },
            AuthStep::ScramDone(user) => {
                if line.trim().is_empty() {
                    self.authenticated_as(user, out);
                } else {
                    // RFC 4954 §4: the response to a final challenge is
                    // empty; anything else (including "*") cancels.
                    self.error(out, 501, (5, 7, 0), "Authentication cancelled");
                }
                self.closed_event()
            }
            AuthStep::Bearer(mechanism) => match decode(line) {
                Decoded::Ok(bytes) => {
                    let parsed = match mechanism {
                        BearerMechanism::OAuthBearer => oauth::parse_oauthbearer(&bytes),
                        BearerMechanism::XOAuth2 => oauth::parse_xoauth2(&bytes),
                    };
                    match parsed {
                        Ok(response) => self.check(AuthCheck::Bearer {
                            mechanism,
                            response,
                        }),
                        Err(e) => self.malformed(&e.to_string(), out),
                    }
                }
                other => self.bad_response(other, out),
            },
            AuthStep::FailAfterChallenge(lockout) => {
                self.auth_failed(lockout, out);
                self.closed_event()
            }
        }
    }

    fn auth_plain(&mut self, text: &str, out: &mut Vec<u8>) -> Option<Event> {
        let message = match decode_text(text) {
            Decoded::Ok(m) => String::from_utf8_lossy(&m).into_owned(),
            other => return self.bad_response(other, out),
        };
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        let mut parts = message.splitn(3, '\0');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(password)) => {
                if !authz.is_empty() && authz != user {
                    // Acting as another user is not supported: a failure.
                    return self.check(AuthCheck::Password {
                        user: user.to_string(),
                        password: String::new(),
                    });
                }
                self.check(AuthCheck::Password {
                    user: user.to_string(),
                    password: password.to_string(),
                })
            }
            _ => self.malformed("malformed PLAIN response", out),
        }
    }

    /// A response that decoded but does not parse: 501, and the exchange
    /// ends (it is not a guess at a password, so not a failure).
    fn malformed(&mut self, why: &str, out: &mut Vec<u8>) -> Option<Event> {
        self.stats.syntax_errors += 1;
        tracing::info!(reason = why, "malformed AUTH response");
        self.error(out, 501, (5, 5, 2), "Malformed authentication response");
        self.closed_event()
    }

    fn bad_response(&mut self, d: Decoded, out: &mut Vec<u8>) -> Option<Event> {
        match d {
            Decoded::Cancelled => self.error(out, 501, (5, 7, 0), "Authentication cancelled"),
            _ => self.error(out, 501, (5, 5, 2), "Invalid base64 data"),
        }
        self.closed_event()
    }

    fn check(&mut self, check: AuthCheck) -> Option<Event> {
        self.state = State::CheckingAuth;
        Some(Event::CheckAuth(Box::new(check)))
    }

    fn authenticated_as(&mut self, user: String, out: &mut Vec<u8>) {
        self.auth_user = Some(user);
        reply(out, 235, (2, 7, 0), "Authentication successful");
    }

    fn locked_out(&mut self, lock: Lock, out: &mut Vec<u8>) {
        reply(
            out,
            421,
            (4, 7, 0),
            format_args!(
                "{} Too many failed authentication attempts; try again in {}",
                self.cfg.hostname,
                minutes(lock.remaining)
            ),
        );
        self.state = State::Closed;
    }

    /// 535 5.7.8; then 421 4.7.0 and close at a lockout or after
    /// `[submission] max_auth_failures` failures in this session.
    fn auth_failed(&mut self, lockout: Option<Lock>, out: &mut Vec<u8>) {
        reply(out, 535, (5, 7, 8), "Authentication credentials invalid");
        self.count_failure(lockout, out);
    }

    /// 454 4.7.0 (RFC 4954 §6); counted like a failure.
    fn auth_temporary(&mut self, lockout: Option<Lock>, out: &mut Vec<u8>) {
        reply(
            out,
            454,
            (4, 7, 0),
            "Temporary authentication failure, try again later",
        );
        self.count_failure(lockout, out);
    }

    /// Counts a failed attempt of this session, after its reply: 421 4.7.0
    /// and close at a lockout or at `[submission] max_auth_failures`.
    fn count_failure(&mut self, lockout: Option<Lock>, out: &mut Vec<u8>) {
        self.auth_failures += 1;
        if let Some(lock) = lockout {
            self.locked_out(lock, out);
        } else if self.auth_failures >= self.cfg.submission.max_auth_failures {
            reply(
                out,
                421,
                (4, 7, 0),
                format_args!(
                    "{} Too many failed authentication attempts, closing connection",
                    self.cfg.hostname
                ),
            );
            self.state = State::Closed;
        }
    }

    /// The driver checked an [`Event::CheckAuth`]: writes the reply (or the
    /// next challenge) for `outcome`.
    pub fn auth_checked(&mut self, outcome: AuthOutcome, out: &mut Vec<u8>) {
        if !matches!(self.state, State::CheckingAuth) {
            return;
        }
        self.state = State::Command;
        match outcome {
            AuthOutcome::Success { user } => self.authenticated_as(user, out),
            AuthOutcome::ScramChallenge {
                server,
                server_first,
            } => {
                let b64 = STANDARD.encode(server_first);
                self.challenge(&b64, AuthStep::ScramFinal(server), out);
            }
            AuthOutcome::ScramSuccess { user, server_final } => {
                let b64 = STANDARD.encode(server_final);
                self.challenge(&b64, AuthStep::ScramDone(user), out);
            }
            AuthOutcome::Failed {
                challenge: Some(challenge),
                lockout,
            } => self.challenge(&challenge, AuthStep::FailAfterChallenge(lockout), out),
            AuthOutcome::Failed {
                challenge: None,
                lockout,
            } => self.auth_failed(lockout, out),
            AuthOutcome::Locked(lock) => {
                self.stats.auth_locked += 1;
                self.locked_out(lock, out);
            }
            AuthOutcome::Temporary { lockout } => self.auth_temporary(lockout, out),
        }
    }

    /// Failed AUTH attempts so far in this session.
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }
}
