//! Portcullis's vocabulary: domains, addresses, envelopes, queue ids, SMTP
//! replies and the injected clock.
//!
//! Everything here is pure data and parsing (RFC 5321 §4.1.2 paths,
//! RFC 5890 IDNA for domains, RFC 3461 DSN parameters, RFC 3463 enhanced
//! status codes). No I/O and no async runtime: every other crate depends on
//! this one, so it stays small and cheap to compile. Threat model: every
//! string that reaches these parsers may come from a hostile SMTP client, so
//! parsing is strict and never panics.

#![forbid(unsafe_code)]

pub mod addr_key;
pub mod address;
pub mod clock;
pub mod date;
pub mod domain;
pub mod envelope;
pub mod error_chain;
pub mod queue_id;
pub mod reply;
pub mod tlsa;

pub use addr_key::AddrKey;
pub use address::{Address, AddressError, ReversePath};
pub use clock::{Clock, SystemClock};
pub use domain::{Domain, DomainError};
pub use envelope::{BodyType, DsnRet, Envelope, Notify, Origin, Recipient, TlsSummary};
pub use error_chain::error_chain;
pub use queue_id::QueueId;
pub use reply::Reply;
pub use tlsa::{DnsSecurity, Tlsa};
