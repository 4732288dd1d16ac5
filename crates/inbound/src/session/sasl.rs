//! What an SMTP AUTH exchange hands to the driver and back: the
//! credentials to check ([`AuthCheck`]), the driver's answer
//! ([`AuthOutcome`]), and where an exchange waits for the client
//! ([`AuthStep`]). The exchange itself is in `auth.rs`.

use portcullis_submission::lockout::Lock;
use portcullis_submission::oauth::BearerResponse;
use portcullis_submission::scram::{ClientFirst, ScramServer};
use std::fmt;

/// The bearer-token mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMechanism {
    /// RFC 7628.
    OAuthBearer,
    /// Google's XOAUTH2.
    XOAuth2,
}

impl BearerMechanism {
    /// The SASL name.
    pub fn as_str(self) -> &'static str {
        match self {
            BearerMechanism::OAuthBearer => "OAUTHBEARER",
            BearerMechanism::XOAuth2 => "XOAUTH2",
        }
    }
}

/// Credentials (or a step of an exchange) for the driver to check.
pub enum AuthCheck {
    /// PLAIN or LOGIN: a user name and a password (or app password).
    Password {
        /// The user name (authentication identity).
        user: String,
        /// The password. Never logged: `Debug` hides it.
        password: String,
    },
    /// SCRAM-SHA-256 client-first-message: look up the user's secret (a
    /// fake one for an unknown user) and answer
    /// [`AuthOutcome::ScramChallenge`], or refuse.
    ScramStart(Box<ClientFirst>),
    /// SCRAM-SHA-256 client-final-message: verify the proof.
    ScramFinal {
        /// The exchange so far.
        server: Box<ScramServer>,
        /// The client-final-message.
        message: String,
    },
    /// OAUTHBEARER or XOAUTH2: introspect the token.
    Bearer {
        /// Which mechanism.
        mechanism: BearerMechanism,
        /// The user asked for and the token.
        response: BearerResponse,
    },
}

impl AuthCheck {
    /// The user name the client gave (empty when it gave none), for logs
    /// and the lockout.
    pub fn user(&self) -> &str {
        match self {
            AuthCheck::Password { user, .. } => user,
            AuthCheck::ScramStart(first) => first.username(),
            AuthCheck::ScramFinal { server, .. } => server.username(),
            AuthCheck::Bearer { response, .. } => response.user.as_deref().unwrap_or(""),
        }
    }

    /// The SASL mechanism name.
    pub fn mechanism(&self) -> &'static str {
        match self {
            AuthCheck::Password { .. } => "PLAIN/LOGIN",
            AuthCheck::ScramStart(_) | AuthCheck::ScramFinal { .. } => "SCRAM-SHA-256",
            AuthCheck::Bearer { mechanism, .. } => mechanism.as_str(),
        }
    }
}

impl fmt::Debug for AuthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCheck")
            .field("mechanism", &self.mechanism())
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

/// The driver's answer to an [`AuthCheck`].
#[derive(Debug)]
pub enum AuthOutcome {
    /// Authenticated as `user`: 235.
    Success {
        /// The user.
        user: String,
    },
    /// SCRAM: send server-first-message and wait for client-final.
    ScramChallenge {
        /// The exchange state.
        server: Box<ScramServer>,
        /// server-first-message.
        server_first: String,
    },
    /// SCRAM proof verified: send server-final-message as a 334 challenge;
    /// 235 follows the client's empty response (RFC 4954 §4).
    ScramSuccess {
        /// The user.
        user: String,
        /// server-final-message.
        server_final: String,
    },
    /// Bad credentials: 535 5.7.8 (after `challenge`, a 334 error the
    /// client answers first, for the bearer mechanisms); with `lockout`,
    /// then 421 4.7.0 and close.
    Failed {
        /// A base64 334 challenge to send first (RFC 7628 §3.2.2).
        challenge: Option<String>,
        /// The lockout this failure started.
        lockout: Option<Lock>,
    },
    /// The address or user is locked out: 421 4.7.0 and close.
    Locked(Lock),
    /// The check could not be made (password hashing saturated, token
    /// introspection busy or failing): 454 4.7.0. It counts as a failed
    /// attempt of the session (RFC 4954 leaves the count to the server; a
    /// client must not retry for free); with `lockout`, then 421 4.7.0 and
    /// close.
    Temporary {
        /// The address lockout this attempt started.
        lockout: Option<Lock>,
    },
}

/// Where an AUTH exchange is waiting for a client response line.
#[derive(Clone)]
pub(crate) enum AuthStep {
    /// PLAIN without an initial response: `334 ` sent.
    Plain,
    /// LOGIN: the user name is asked for.
    LoginUser,
    /// LOGIN: the password is asked for.
    LoginPassword(String),
    /// SCRAM: `334 ` sent, client-first-message expected.
    ScramFirst,
    /// SCRAM: server-first-message sent, client-final-message expected.
    ScramFinal(Box<ScramServer>),
    /// SCRAM: server-final-message sent, an empty response expected.
    ScramDone(String),
    /// OAUTHBEARER/XOAUTH2 without an initial response: `334 ` sent.
    Bearer(BearerMechanism),
    /// A bearer failure challenge was sent; any response gets the 535.
    FailAfterChallenge(Option<Lock>),
}
