//! TLS-RPT reports by mail go through our own queue (RFC 8460 §5.3), so
//! they are retried, expired and logged like any other message.

use portcullis_queue::Queue;
use portcullis_tlsrpt::ReportMailer;
use portcullis_types::{
    Address, BodyType, Clock, Envelope, Notify, Origin, QueueId, Recipient, ReversePath,
};
use std::net::IpAddr;
use std::sync::Arc;

/// Submits TLS-RPT report messages to the queue from the null sender, with
/// the envelope's origin recorded as [`Origin::TlsReport`]. Only for
/// TLS reports: that origin exempts a message from MTA-STS enforcement.
pub struct QueueMailer {
    /// The queue.
    pub queue: Queue,
    /// Our host name (the HELO recorded on the envelope).
    pub hostname: String,
    /// The clock for the envelope's arrival time.
    pub clock: Arc<dyn Clock>,
}

impl ReportMailer for QueueMailer {
    async fn submit(&self, from: &str, to: &str, message: Vec<u8>) -> Result<String, String> {
        let recipient = Address::parse(to).map_err(|e| format!("report address {to:?}: {e}"))?;
        // `from` is always the null reverse-path: a report never bounces.
        let sender =
            ReversePath::parse(from).map_err(|e| format!("report sender {from:?}: {e}"))?;
        let now = self.clock.now();
        let millis = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let envelope = Envelope {
            id: QueueId::generate(millis, rand_salt()),
            sender,
            smtputf8: recipient.needs_smtputf8(),
            recipients: vec![Recipient {
                address: recipient,
                notify: Notify::default(),
                orcpt: None,
            }],
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            received_at: millis / 1000,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            helo: self.hostname.clone(),
            tls: None,
            authenticated: None,
            size: message.len() as u64,
            // The one place TLS reports are made: only this origin earns
            // the RFC 8460 §5.3 exemption at delivery.
            origin: Origin::TlsReport,
        };
        // An id already in use is never overwritten: another is drawn.
        let id = self
            .queue
            .enqueue_fresh(envelope, &message, || {
                QueueId::generate(millis, rand_salt())
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(queue_id = %id, to, "TLS report queued");
        Ok(id.to_string())
    }
}

fn rand_salt() -> u32 {
    // The queue id's per-process sequence already keeps ids apart; the
    // salt only needs to differ between processes.
    std::process::id()
}
