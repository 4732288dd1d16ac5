//! The contract between the queue (when) and delivery (how): the queue
//! hands a [`DeliveryJob`] to a [`Deliver`] implementation and gets one
//! [`RecipientResult`] per pending recipient back.

use crate::MessageData;
use portcullis_types::{Envelope, QueueId};
use std::future::Future;
use std::sync::Arc;

/// One attempt at the pending recipients of one message.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// The message.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Arc<Envelope>,
    /// Indexes into `envelope.recipients` still to be delivered.
    pub pending: Vec<usize>,
    /// The stored message (trace headers included), read block by block.
    pub message: MessageData,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// What happened to one recipient in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// Accepted by the next hop.
    Delivered {
        /// The host that accepted it.
        remote_mta: String,
        /// Its reply, whole.
        reply: String,
    },
    /// Try again later.
    Deferred {
        /// The host that answered, if any.
        remote_mta: Option<String>,
        /// The remote reply whole, or the local reason.
        reason: String,
    },
    /// Permanent failure: bounce.
    Failed {
        /// The host that answered, if any.
        remote_mta: Option<String>,
        /// RFC 3463 status for the DSN.
        status: (u8, u16, u16),
        /// The remote reply whole, or the local reason.
        reason: String,
    },
}

/// The outcome for `envelope.recipients[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// Index into the envelope's recipients.
    pub index: usize,
    /// What happened.
    pub outcome: RecipientOutcome,
}

/// Delivers messages. Implemented by the `delivery` crate; the queue never
/// opens a connection itself.
pub trait Deliver: Send + Sync + 'static {
    /// Attempts the job; returns one result per pending recipient (a
    /// recipient with no result is treated as deferred).
    fn deliver(&self, job: DeliveryJob) -> impl Future<Output = Vec<RecipientResult>> + Send;
}
