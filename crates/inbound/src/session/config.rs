//! What a session knows about the server: the settings every session of
//! a listener shares.

use portcullis_config::{BareNewline, Limits, Relay, Role, Submission, TlsRequiredNo};
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::rate::SendRate;
use std::sync::Arc;

/// What a session needs to know about the server; shared by all sessions of
/// a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name.
    pub hostname: String,
    /// Greeting text after the host name.
    pub banner: String,
    /// The listener's role.
    pub role: Role,
    /// Limits.
    pub limits: Limits,
    /// Relay policy.
    pub relay: Relay,
    /// Bare CR/LF policy for message data.
    pub bare_newline: BareNewline,
    /// True when STARTTLS can be offered.
    pub tls_available: bool,
    /// Sender verification on this listener (`[verify]`).
    pub verify: VerifyScope,
    /// What the screen (`portcullis-screen`) asks of this listener's
    /// sessions.
    pub screen: ScreenScope,
    /// True when AUTH is offered (after TLS) on this listener.
    pub auth: bool,
    /// `[submission]`: failure limit and who may send as whom.
    pub submission: Submission,
    /// True when OAUTHBEARER and XOAUTH2 are offered (`[submission.oauth]`).
    pub oauth: bool,
    /// Failed-AUTH accounting shared by every session.
    pub guard: Arc<AuthGuard>,
    /// Per-user sending rate shared by every session.
    pub rate: Arc<SendRate>,
    /// Whose `TLS-Required: No` is honoured (`[delivery] tls_required_no`).
    pub tls_required_no: TlsRequiredNo,
}

/// Whose mail a listener verifies (SPF, DKIM, DMARC, ARC) and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyScope {
    /// Verify messages (role `smtp` with `[verify] enabled`; off for the
    /// submission roles).
    pub enabled: bool,
    /// No verification for clients in trusted networks.
    pub skip_trusted: bool,
    /// Check SPF when MAIL FROM arrives (`spf_fail = "reject"`), so a
    /// failing sender is refused before any data is sent.
    pub spf_at_mail: bool,
}

/// What the screen in front of the queue asks of a listener's sessions:
/// which commands the session hands to the driver before it answers them.
/// All off: the session answers MAIL and RCPT itself, as without a screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScreenScope {
    /// Count each MAIL of a screened client (outside trusted networks, not
    /// authenticated) against its message rate: role `smtp` with a screen.
    pub messages: bool,
    /// Check SPF at MAIL FROM for every session whose mail is verified,
    /// even when SPF refuses nothing: greylisting keys on the domain SPF
    /// passed for (`[greylist] enabled`).
    pub spf: bool,
    /// Hand each RCPT that passed anti-relay and the other checks to the
    /// driver ([`Event::CheckRecipient`](super::Event::CheckRecipient)):
    /// the screen checks recipients (verification, DNS lists, rates,
    /// greylisting).
    pub recipients: bool,
}
