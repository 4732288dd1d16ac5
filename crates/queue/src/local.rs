//! Mail the server makes itself (delivery status notifications, TLS
//! reports, later DMARC reports) enters the queue through one typed call,
//! [`Queue::enqueue_local`], that carries the message's origin: the
//! envelope is built here, once, from what the maker knows, so that no later
//! step re-derives the origin from the message's bytes (STYLE 8a; only
//! [`Origin::TlsReport`] earns the RFC 8460 §5.3 exemption at delivery).

use std::net::IpAddr;
use std::time::SystemTime;

use portcullis_types::{
    Address, BodyType, Envelope, Notify, Origin, QueueId, Recipient, ReversePath,
};

use crate::{Queue, QueueError};

/// A message this server made, for one recipient.
#[derive(Debug, Clone)]
pub struct LocalMessage<'a> {
    /// Which part of the server made it: [`Origin::Bounce`] for a DSN,
    /// [`Origin::TlsReport`] for a TLS report (only the code that makes
    /// such a report may say so).
    pub origin: Origin,
    /// The envelope sender; [`ReversePath::Null`] for DSNs and reports
    /// (RFC 5321 §4.5.5: they must not bounce).
    pub sender: ReversePath,
    /// The one recipient.
    pub recipient: Address,
    /// The body type (8BITMIME when the message carries 8-bit text).
    pub body: BodyType,
    /// SMTPUTF8 is needed to deliver it.
    pub smtputf8: bool,
    /// Our host name, recorded as the HELO of the envelope.
    pub hostname: &'a str,
    /// The complete RFC 5322 message.
    pub message: &'a [u8],
    /// When it was made: the envelope's arrival time and the queue id's.
    pub now: SystemTime,
}

impl Queue {
    /// Queues `local` under a fresh id (never one in use, see
    /// [`Queue::enqueue_fresh`]), from 127.0.0.1 with no TLS and no
    /// authenticated user, its origin recorded in the envelope. Returns the
    /// id once the message is on disk.
    pub async fn enqueue_local(&self, local: LocalMessage<'_>) -> Result<QueueId, QueueError> {
        let millis = portcullis_types::date::unix_millis(local.now);
        let envelope = Envelope {
            id: QueueId::generate(millis, rand::random()),
            sender: local.sender,
            recipients: vec![Recipient {
                address: local.recipient,
                notify: Notify::default(),
                orcpt: None,
            }],
            ret: None,
            envid: None,
            body: local.body,
            smtputf8: local.smtputf8,
            received_at: millis / 1000,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            helo: local.hostname.to_owned(),
            tls: None,
            authenticated: None,
            size: local.message.len() as u64,
            origin: local.origin,
            // Our own notices never demand TLS: RFC 8689 §5 sends the DSN
            // of a REQUIRETLS failure without it.
            require_tls: false,
            tls_optional: false,
        };
        self.enqueue_fresh(envelope, local.message, || {
            QueueId::generate(millis, rand::random())
        })
        .await
    }
}
