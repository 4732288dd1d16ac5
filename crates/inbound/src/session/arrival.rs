//! What the session records about how a message arrived, as it learns it
//! (the client and its greeting at EHLO, TLS when the handshake finished,
//! the user when AUTH succeeded), handed over with the message. Facts
//! are recorded, never sniffed (STYLE 8a): the trace header, the DKIM
//! signing decision and the envelope's origin are made from this record,
//! never from the message's bytes.

use portcullis_types::{Origin, TlsSummary};
use std::net::IpAddr;

/// How one message arrived, as the session recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The client.
    pub client_ip: IpAddr,
    /// The EHLO/HELO name.
    pub helo: String,
    /// True after EHLO.
    pub esmtp: bool,
    /// The TLS session the message came over, if any.
    pub tls: Option<TlsSummary>,
    /// The user the client authenticated as (SMTP AUTH).
    pub authenticated: Option<String>,
    /// The client is in `trusted_networks`: its mail is ours to sign.
    pub trusted: bool,
    /// True when this client may waive TLS with `TLS-Required: No` (RFC
    /// 8689 §5) under `[delivery] tls_required_no`: decided from its
    /// authentication and network, never from the message.
    pub may_waive_tls: bool,
    /// Where the message comes from, as its envelope records it:
    /// submission when the client authenticated, else relay.
    pub origin: Origin,
}
