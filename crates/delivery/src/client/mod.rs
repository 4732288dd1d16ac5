//! The outbound SMTP client: one session with one already-connected host.
//!
//! [`deliver_session`] reads the greeting, says EHLO (HELO when EHLO is
//! refused), negotiates STARTTLS as the caller's [`TlsDecision`] demands,
//! runs one mail transaction and says QUIT. Whatever happens, it returns a
//! [`SessionReport`] holding the [`TlsOutcome`] (for TLS-RPT and logs), the
//! peer's greeting, and either one reply per recipient or a classified
//! [`SessionError`] that keeps the remote reply whole (for DSNs).
//!
//! Standards:
//! - RFC 5321 §4 (commands, replies, the transaction), §3.2 (HELO when EHLO
//!   is refused) and §4.5.3.2 (per-stage timeouts, the [`Timeouts`] defaults);
//!   replies and EHLO responses are parsed with `smtp-proto`.
//! - RFC 3207 STARTTLS: after the handshake everything learnt before it is
//!   forgotten and EHLO is sent again (§4.2); bytes the server sent after its
//!   220 are a protocol violation, never read as replies.
//! - RFC 2920 PIPELINING: MAIL, every RCPT and DATA in one write, replies read
//!   in order; lock-step otherwise.
//! - RFC 1870 SIZE: `SIZE=` is declared, and a message larger than the
//!   advertised limit is refused before MAIL (a permanent failure).
//! - RFC 6152 8BITMIME: `BODY=8BITMIME` when the peer offers it.
//! - RFC 6531 SMTPUTF8: a message that needs it (non-ASCII envelope address,
//!   or non-ASCII header on a message submitted with SMTPUTF8) goes only to a
//!   peer that offers it; otherwise it fails permanently (bounced, not mangled).
//! - RFC 3461 DSN: `RET`, `ENVID`, `NOTIFY`, `ORCPT` (xtext) only when offered.
//! - RFC 3030 CHUNKING: used only for `BODY=BINARYMIME`, which cannot travel
//!   with DATA; everything else uses DATA with dot-stuffing.
//!
//! Threat model: the peer and the network are hostile. Every read runs under
//! its stage's timeout; replies are bounded by `smtp-proto` (4 KiB); a
//! `Required` TLS decision that is not met ends the session before any MAIL;
//! envelope strings with control characters are refused rather than written;
//! lines are dot-stuffed after every CR or LF so that a stored message can
//! never end the DATA phase early at a lenient receiver (SMTP smuggling).

mod certificate;
mod data;
mod ehlo;
mod error;
mod reply;
mod session;
mod timeouts;
mod tls;
mod transaction;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sink;

pub(crate) use reply::Conn;
pub(crate) use session::{Progress, Ready, establish};

pub use certificate::{PeerCertificate, starttls_certificate};
pub use data::{DotStuffer, xtext};
pub use ehlo::Capabilities;
pub use error::SessionError;
pub use session::{SessionReport, deliver_session};
pub use timeouts::{Stage, Timeouts};
pub use tls::{TlsDecision, TlsOutcome};
pub use transaction::{RcptSpec, Transaction, TransactionReport};
