//! The inbound side of Portcullis: listeners, the per-connection SMTP
//! session, STARTTLS and implicit TLS, anti-relay, limits and shutdown.
//!
//! RFCs: 5321 (SMTP), 1870 (SIZE), 2920 (PIPELINING), 3030 (CHUNKING/BDAT),
//! 2034/3463 (enhanced status codes), 3207 (STARTTLS), 3461 (DSN
//! parameters), 4954 and 4616 (AUTH, PLAIN; also LOGIN), 6152 (8BITMIME),
//! 6531 (SMTPUTF8), 8314 (implicit TLS).
//!
//! Threat model: every byte comes from an untrusted client. The session is
//! sans-IO ([`Session::feed`] / [`Session::step`]) so that every parser path
//! is tested with input split at every byte. Message data ends only at
//! `<CRLF>.<CRLF>` (our own scanner, [`session::dot`]); a bare CR or LF
//! inside data is refused or normalised, never allowed to end a message
//! (SMTP smuggling). A message with more `Received:` fields than
//! `[limits] max_received_headers` is a mail loop (RFC 5321 §6.3, 554 5.4.6). Bytes pipelined behind
//! STARTTLS are discarded, never executed (RFC 3207 §4.2, CVE-2011-0411).
//! A client outside `trusted_networks` may only send to `accepted_domains`.
//! Mail on `smtp` listeners is verified (SPF, DKIM, DMARC, ARC; RFC 7208,
//! 6376, 7489, 8617) by the `auth` crate before the final reply, in the
//! accept pipeline the driver runs, so the session stays sans-IO. From
//! every accepted message
//! (verified, authenticated or from a trusted network) forged
//! Authentication-Results with our authserv-id (RFC 8601 §5) and any
//! X-Portcullis-Quarantine field are removed; verified mail gets ours.
//! Accepted mail is handed to the `queue` crate; we reply 250 only after it
//! is on disk. Its envelope's origin, TLS and user come from what the
//! session recorded ([`Arrival`]), never from the message's bytes.
//!
//! Layout: `server` (listeners, the connection driver), `builder`
//! ([`InboundBuilder`], which also applies a reload), `live` (the
//! config-derived parts a reload swaps; each connection reads them once),
//! `smtp_auth` (AUTH checks), `accept` (the accept pipeline), `screening`
//! (the screen as a connection meets it: rates, DNS lists, RCPT checks,
//! from `portcullis-screen`), `session` (the sans-IO state machine).

#![forbid(unsafe_code)]

mod accept;
mod body;
mod builder;
mod conn_limit;
pub mod dkim;
mod hops;
mod live;
pub mod metrics;
mod received;
mod screening;
pub mod server;
pub mod session;
mod smtp_auth;
pub mod spooler;

pub use builder::InboundBuilder;
pub use dkim::DkimSigners;
pub use metrics::InboundMetrics;
pub use received::received_header;
pub use server::{Inbound, ListenerHandle};
pub use session::{
    Arrival, Event, IncomingMessage, RecipientCheck, ScreenScope, SenderCheck, Session,
    SessionConfig, VerifyScope,
};
pub use spooler::{ReadBudget, Spooler};
