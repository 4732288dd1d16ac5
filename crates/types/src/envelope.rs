//! The envelope stored with every accepted message: everything later stages
//! (verification, delivery, DSNs per RFC 3461/3464, TLS-RPT) need to know
//! about how the message arrived.

use crate::address::{Address, ReversePath};
use crate::queue_id::QueueId;
use std::net::IpAddr;

/// `RET=` of RFC 3461 §4.3: how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DsnRet {
    /// Return the whole message.
    Full,
    /// Return only the headers.
    Headers,
}

/// `BODY=` of RFC 6152 / RFC 3030.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BodyType {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only with BDAT).
    BinaryMime,
}

/// `NOTIFY=` of RFC 3461 §4.1, as the set of events the sender asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    /// NOTIFY=SUCCESS.
    pub success: bool,
    /// NOTIFY=FAILURE (also the default when NOTIFY is absent).
    pub failure: bool,
    /// NOTIFY=DELAY.
    pub delay: bool,
    /// NOTIFY=NEVER.
    pub never: bool,
    /// True when the client sent a NOTIFY parameter at all.
    pub explicit: bool,
}

/// One accepted recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recipient {
    /// The forward path.
    pub address: Address,
    /// NOTIFY as given.
    pub notify: Notify,
    /// ORCPT (RFC 3461 §4.2) as given, `addr-type;xtext` decoded.
    pub orcpt: Option<String>,
}

/// The TLS state of the inbound session, for trace headers and reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsSummary {
    /// e.g. "TLSv1.3".
    pub version: String,
    /// e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher: String,
}

/// The envelope of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// The queue id (also in the 250 reply and the Received header).
    pub id: QueueId,
    /// MAIL FROM.
    pub sender: ReversePath,
    /// The accepted recipients, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// RET, if given.
    pub ret: Option<DsnRet>,
    /// ENVID (RFC 3461 §4.4), xtext decoded.
    pub envid: Option<String>,
    /// BODY.
    pub body: BodyType,
    /// SMTPUTF8 was given on MAIL FROM.
    pub smtputf8: bool,
    /// Unix seconds of acceptance.
    pub received_at: u64,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name the client gave.
    pub helo: String,
    /// TLS on the inbound session, if any.
    pub tls: Option<TlsSummary>,
    /// The user the client authenticated as (SMTP AUTH on submission).
    pub authenticated: Option<String>,
    /// Size of the stored message in octets (with our trace header).
    pub size: u64,
}
