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

/// Signs the notifications the queue makes itself (DSNs): the binary
/// hands the queue the server's DKIM keys ([`Queue::set_local_signer`]).
pub trait LocalSigner: Send + Sync + 'static {
    /// The `DKIM-Signature` field (ending in CRLF) to prepend to
    /// `message`, by the key of its `From` domain; `None` when that domain
    /// has no key (the message goes unsigned) or signing failed.
    fn signature(&self, message: &[u8]) -> Option<String>;
}

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
    ///
    /// A DSN ([`Origin::Bounce`]) is DKIM-signed here when the local signer
    /// has a key for its From domain; reports come signed by their makers.
    pub async fn enqueue_local(&self, local: LocalMessage<'_>) -> Result<QueueId, QueueError> {
        let signature = match local.origin {
            Origin::Bounce => self.local_signer().and_then(|s| s.signature(local.message)),
            _ => None,
        };
        let signed;
        let message = match signature {
            Some(sig) => {
                signed = [sig.as_bytes(), local.message].concat();
                signed.as_slice()
            }
            None => local.message,
        };
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
            size: message.len() as u64,
            origin: local.origin,
            // Our own notices never demand TLS: RFC 8689 §5 sends the DSN
            // of a REQUIRETLS failure without it.
            require_tls: false,
            tls_optional: false,
        };
        self.enqueue_fresh(envelope, message, || {
            QueueId::generate(millis, rand::random())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_store::Store;
    use std::sync::Arc;

    /// Signs only mail from `MAILER-DAEMON@mx.test`.
    struct FromSigner;

    impl LocalSigner for FromSigner {
        fn signature(&self, message: &[u8]) -> Option<String> {
            message
                .starts_with(b"From: MAILER-DAEMON@mx.test")
                .then(|| "DKIM-Signature: v=1; d=mx.test\r\n".to_owned())
        }
    }

    async fn queue_one(queue: &Queue, origin: Origin, message: &[u8]) -> Vec<u8> {
        let id = queue
            .enqueue_local(LocalMessage {
                origin,
                sender: ReversePath::Null,
                recipient: Address::parse("a@example.test").expect("address"),
                body: BodyType::SevenBit,
                smtputf8: false,
                hostname: "mx.test",
                message,
                now: SystemTime::now(),
            })
            .await
            .expect("queued");
        let record = queue.get(id).expect("record");
        let stored = queue.message(id).expect("message");
        assert_eq!(record.envelope.size, stored.len() as u64);
        stored
    }

    /// DSNs are signed when the signer has a key for their From; other
    /// local mail, and DSNs of domains without a key, are left as made.
    #[tokio::test]
    async fn dsns_are_signed_by_the_local_signer() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let queue = Queue::open(&store).expect("queue");
        let dsn = b"From: MAILER-DAEMON@mx.test\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(queue_one(&queue, Origin::Bounce, dsn).await, dsn);
        queue.set_local_signer(Some(Arc::new(FromSigner)));
        let signed = queue_one(&queue, Origin::Bounce, dsn).await;
        assert!(signed.starts_with(b"DKIM-Signature: v=1; d=mx.test\r\nFrom: MAILER"));
        assert_eq!(queue_one(&queue, Origin::TlsReport, dsn).await, dsn);
        let other = b"From: MAILER-DAEMON@other.test\r\n\r\nbody\r\n";
        assert_eq!(queue_one(&queue, Origin::Bounce, other).await, other);
    }
}
