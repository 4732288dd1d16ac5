//! One message as the accept pipeline takes it from the session: what the
//! server recorded about its arrival while the session ran, and what the
//! client sent.

use crate::received::TraceInfo;
use crate::session::IncomingMessage;
use portcullis_queue::Spool;
use portcullis_types::{
    BodyType, DsnRet, Envelope, Origin, QueueId, Recipient, ReversePath, TlsSummary,
};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the server knew about a message when it arrived, recorded by the
/// session as it learnt it (the client and its greeting at EHLO, TLS when
/// the handshake finished, the user when AUTH succeeded) and never
/// re-derived from the message's bytes (STYLE 8a): the trace header, the
/// signing decision and the envelope's origin are made from it.
#[derive(Debug)]
pub(crate) struct Arrival {
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
    /// Where the message comes from, as its envelope records it:
    /// submission when the client authenticated, else relay.
    pub origin: Origin,
}

/// What the client sent: the envelope as it gave it and the message.
#[derive(Debug)]
pub(crate) struct ClientMessage {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// Accepted recipients.
    pub recipients: Vec<Recipient>,
    /// RET.
    pub ret: Option<DsnRet>,
    /// ENVID.
    pub envid: Option<String>,
    /// BODY.
    pub body_type: BodyType,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// The message exactly as received, or the header section of a
    /// spooled one (see [`IncomingMessage::data`]).
    pub data: Vec<u8>,
    /// The rest of a large message, already in its file.
    pub spooled: Option<Spool>,
    /// True when the message is to be verified before it is stored.
    pub verify: bool,
}

impl Arrival {
    /// Splits what the session handed over into the recorded facts and
    /// the client's message.
    pub fn split(msg: IncomingMessage) -> (Arrival, ClientMessage) {
        let arrival = Arrival {
            client_ip: msg.client_ip,
            helo: msg.helo,
            esmtp: msg.esmtp,
            tls: msg.tls,
            // Recorded where it is known, never guessed later (STYLE 8a).
            origin: if msg.authenticated.is_some() {
                Origin::Submission
            } else {
                Origin::Relay
            },
            authenticated: msg.authenticated,
        };
        let message = ClientMessage {
            sender: msg.sender,
            recipients: msg.recipients,
            ret: msg.ret,
            envid: msg.envid,
            body_type: msg.body_type,
            smtputf8: msg.smtputf8,
            data: msg.data,
            spooled: msg.spooled,
            verify: msg.verify,
        };
        (arrival, message)
    }

    /// What our Received header says about this arrival.
    pub fn trace<'a>(
        &'a self,
        hostname: &'a str,
        msg: &'a ClientMessage,
        id: QueueId,
        now: SystemTime,
    ) -> TraceInfo<'a> {
        TraceInfo {
            helo: &self.helo,
            client_ip: self.client_ip,
            hostname,
            esmtp: self.esmtp,
            tls: self.tls.as_ref(),
            authenticated: self.authenticated.is_some(),
            smtputf8: msg.smtputf8,
            id,
            recipients: &msg.recipients,
            now,
        }
    }

    /// The envelope stored with the message: the client's envelope and
    /// what was recorded about its arrival.
    pub fn envelope(self, msg: ClientMessage, id: QueueId, now: SystemTime, size: u64) -> Envelope {
        Envelope {
            id,
            sender: msg.sender,
            recipients: msg.recipients,
            ret: msg.ret,
            envid: msg.envid,
            body: msg.body_type,
            smtputf8: msg.smtputf8,
            received_at: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_ip: self.client_ip,
            helo: self.helo,
            tls: self.tls,
            origin: self.origin,
            authenticated: self.authenticated,
            size,
        }
    }
}
