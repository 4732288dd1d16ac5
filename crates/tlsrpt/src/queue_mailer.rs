//! TLS-RPT reports by mail go through our own queue (RFC 8460 §5.3), so
//! they are retried, expired and logged like any other message. This is
//! the one place TLS reports enter the queue, and so the one place that
//! records [`Origin::TlsReport`] in an envelope.

use std::sync::Arc;

use portcullis_queue::LocalMessage;
use portcullis_queue::Queue;
use portcullis_types::{Address, BodyType, Clock, Origin, ReversePath};

use crate::ReportMailer;

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

impl std::fmt::Debug for QueueMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMailer")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl ReportMailer for QueueMailer {
    async fn submit(&self, from: &str, to: &str, message: Vec<u8>) -> Result<String, String> {
        let recipient = Address::parse(to).map_err(|e| format!("report address {to:?}: {e}"))?;
        // `from` is always the null reverse-path: a report never bounces.
        let sender =
            ReversePath::parse(from).map_err(|e| format!("report sender {from:?}: {e}"))?;
        let id = self
            .queue
            .enqueue_local(LocalMessage {
                // The one place TLS reports are made: only this origin
                // earns the RFC 8460 §5.3 exemption at delivery.
                origin: Origin::TlsReport,
                sender,
                smtputf8: recipient.needs_smtputf8(),
                recipient,
                body: BodyType::SevenBit,
                hostname: &self.hostname,
                message: &message,
                now: self.clock.now(),
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(queue_id = %id, to, "TLS report queued");
        Ok(id.to_string())
    }
}
