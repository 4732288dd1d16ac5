//! SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, over TLS only.
//! The session decodes the exchange; the password check (argon2, slow) is
//! the driver's: [`Event::CheckAuth`], answered by [`Session::auth_checked`].

use super::{Event, Session, State, reply};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use std::fmt;

/// Credentials to check.
pub struct AuthCheck {
    /// The user name (authentication identity).
    pub user: String,
    /// The password. Never logged: `Debug` hides it.
    pub password: String,
}

impl fmt::Debug for AuthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCheck")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where an AUTH exchange is waiting for a client response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthStep {
    /// PLAIN without an initial response: `334 ` sent.
    Plain,
    /// LOGIN: the user name is asked for.
    LoginUser,
    /// LOGIN: the password is asked for.
    LoginPassword(String),
}

/// `334` prompts of LOGIN: "Username:" and "Password:" in base64.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

enum Decoded {
    Ok(String),
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
        return Decoded::Ok(String::new());
    }
    match STANDARD.decode(text).ok().map(String::from_utf8) {
        Some(Ok(s)) => Decoded::Ok(s),
        _ => Decoded::Bad,
    }
}

impl Session {
    /// True when AUTH is offered now: on a listener with AUTH, after TLS.
    pub(super) fn auth_offered(&self) -> bool {
        self.cfg.auth && self.tls.is_some()
    }

    /// The user this session authenticated as.
    pub fn authenticated(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    pub(super) fn auth(
        &mut self,
        mechanism: u64,
        initial: &str,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        if !self.cfg.auth {
            self.error(out, 502, (5, 5, 1), "AUTH not available");
        } else if self.tls.is_none() {
            // RFC 4954 §4 / RFC 5248: PLAIN and LOGIN need encryption.
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
        } else if mechanism == AUTH_PLAIN {
            if initial.is_empty() {
                out.extend_from_slice(b"334 \r\n");
                self.state = State::Auth(AuthStep::Plain);
            } else {
                return self.auth_plain(initial, out);
            }
        } else if mechanism == AUTH_LOGIN {
            if initial.is_empty() {
                self.login_prompt(AuthStep::LoginUser, out);
            } else {
                return self.auth_response(AuthStep::LoginUser, initial, out);
            }
        } else {
            self.error(out, 504, (5, 5, 4), "Unrecognized authentication type");
        }
        self.closed_event()
    }

    fn login_prompt(&mut self, step: AuthStep, out: &mut Vec<u8>) {
        let prompt = if step == AuthStep::LoginUser {
            USERNAME
        } else {
            PASSWORD
        };
        out.extend_from_slice(format!("334 {prompt}\r\n").as_bytes());
        self.state = State::Auth(step);
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
            AuthStep::LoginUser => match decode(line) {
                Decoded::Ok(user) => {
                    self.login_prompt(AuthStep::LoginPassword(user), out);
                    None
                }
                other => self.bad_response(other, out),
            },
            AuthStep::LoginPassword(user) => match decode(line) {
                Decoded::Ok(password) => self.check(user, password),
                other => self.bad_response(other, out),
            },
        }
    }

    fn auth_plain(&mut self, text: &str, out: &mut Vec<u8>) -> Option<Event> {
        let message = match decode(text) {
            Decoded::Ok(m) => m,
            other => return self.bad_response(other, out),
        };
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        let mut parts = message.splitn(3, '\0');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(password)) => {
                if !authz.is_empty() && authz != user {
                    // Acting as another user is not supported: a failure.
                    return self.check(String::new(), String::new());
                }
                self.check(user.to_string(), password.to_string())
            }
            _ => {
                self.error(out, 501, (5, 5, 2), "Malformed PLAIN response");
                self.closed_event()
            }
        }
    }

    fn bad_response(&mut self, d: Decoded, out: &mut Vec<u8>) -> Option<Event> {
        match d {
            Decoded::Cancelled => self.error(out, 501, (5, 7, 0), "Authentication cancelled"),
            _ => self.error(out, 501, (5, 5, 2), "Invalid base64 data"),
        }
        self.closed_event()
    }

    fn check(&mut self, user: String, password: String) -> Option<Event> {
        self.state = State::CheckingAuth(user.clone());
        Some(Event::CheckAuth(Box::new(AuthCheck { user, password })))
    }

    /// The driver checked the credentials of [`Event::CheckAuth`]: 235 on
    /// success; 535 5.7.8 otherwise, and after
    /// `[submission] max_auth_failures` failures 421 4.7.0 and close.
    pub fn auth_checked(&mut self, ok: bool, out: &mut Vec<u8>) {
        let State::CheckingAuth(user) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        if ok {
            self.auth_user = Some(user);
            reply(out, 235, (2, 7, 0), "Authentication successful");
            return;
        }
        self.auth_failures += 1;
        reply(out, 535, (5, 7, 8), "Authentication credentials invalid");
        if self.auth_failures >= self.cfg.submission.max_auth_failures {
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

    /// Failed AUTH attempts so far in this session.
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }
}
