//! DMARC reports go through our own queue, so they are retried, expired
//! and logged like any other message. This is the one place DMARC reports
//! enter the queue, and so the one place that records
//! [`Origin::DmarcReport`] in an envelope.

use std::future::Future;
use std::sync::Arc;

use portcullis_queue::{LocalMessage, Queue};
use portcullis_types::{Address, BodyType, Clock, Origin, ReversePath};

/// Submits report mail (tests record it instead).
pub trait DmarcMailer: Send + Sync + 'static {
    /// Queues `message` (complete and signed) for `to` from the null
    /// sender (RFC 7489 §7.2.1.1 reports must not bounce back to us as
    /// mail to answer); the queue id, or why the queue refused it.
    fn submit(
        &self,
        to: &str,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// The mailer over the Portcullis queue.
pub struct QueueMailer {
    /// The queue.
    pub queue: Queue,
    /// Our host name (the HELO recorded on the envelope).
    pub hostname: String,
    /// The clock of the envelope's arrival time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for QueueMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMailer")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl DmarcMailer for QueueMailer {
    async fn submit(&self, to: &str, message: Vec<u8>) -> Result<String, String> {
        let recipient = Address::parse(to).map_err(|e| format!("report address {to:?}: {e}"))?;
        let id = self
            .queue
            .enqueue_local(LocalMessage {
                origin: Origin::DmarcReport,
                sender: ReversePath::Null,
                smtputf8: recipient.needs_smtputf8(),
                recipient,
                body: BodyType::SevenBit,
                hostname: &self.hostname,
                message: &message,
                now: self.clock.now(),
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(queue_id = %id, to, "DMARC report queued");
        Ok(id.to_string())
    }
}
