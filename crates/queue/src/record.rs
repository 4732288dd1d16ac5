//! The stored queue record: the envelope, the delivery state of every
//! recipient and the history of attempts.

use portcullis_store::StoreError;
use portcullis_types::Envelope;

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet attempted.
    Queued,
    /// Attempted, failed temporarily, will be retried.
    Deferred,
    /// Delivered: never delivered again.
    Delivered,
    /// Failed permanently (bounced).
    Failed,
}

impl RecipientStatus {
    /// Lowercase name, as shown by the admin CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Queued => "queued",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        }
    }

    /// True while delivery is still to be attempted.
    pub fn is_pending(self) -> bool {
        matches!(self, RecipientStatus::Queued | RecipientStatus::Deferred)
    }
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientState {
    /// Status.
    pub status: RecipientStatus,
    /// The last remote reply or local error, whole.
    pub last_reply: Option<String>,
    /// The host that gave it.
    #[serde(default)]
    pub remote_mta: Option<String>,
}

/// One delivery attempt, for `queue show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// Its number (1 for the first attempt); 0 in records written before
    /// attempts were numbered.
    #[serde(default)]
    pub number: u32,
    /// Unix seconds when it started.
    pub at: u64,
    /// Per-recipient outcomes as text (`rcpt: outcome`), once finished.
    pub outcomes: Vec<String>,
}

/// The record stored per queued message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueRecord {
    /// The envelope as accepted.
    pub envelope: Envelope,
    /// One state per envelope recipient, same order.
    pub recipients: Vec<RecipientState>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    /// The last error, for `queue list`.
    pub last_error: Option<String>,
    /// The attempts: the first [`HISTORY_FIRST`] and the last
    /// [`HISTORY_LAST`] (see [`QueueRecord::push_attempt`]).
    #[serde(default)]
    pub history: Vec<Attempt>,
    /// True once the delay notification was sent (it is sent once).
    #[serde(default)]
    pub delay_warned: bool,
    /// Length of the stored message in octets, so a read can tell a whole
    /// body from a missing or cut one; `None` in records written before it
    /// was recorded.
    #[serde(default)]
    pub body_len: Option<u64>,
    /// Octets of the message in its own file (a large message spooled
    /// while it arrived; they follow the part in the store); `None` when
    /// the whole message is in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<u64>,
}

/// The first attempts kept in a record's history (the first one says what
/// went wrong from the start).
pub const HISTORY_FIRST: usize = 5;
/// The most recent attempts kept in a record's history.
pub const HISTORY_LAST: usize = 20;
/// Attempts kept in a record's history at most.
pub const HISTORY_LIMIT: usize = HISTORY_FIRST + HISTORY_LAST;

impl QueueRecord {
    /// A fresh record: every recipient queued, first attempt due at once.
    pub fn new(envelope: Envelope) -> QueueRecord {
        QueueRecord {
            recipients: envelope
                .recipients
                .iter()
                .map(|_| RecipientState {
                    status: RecipientStatus::Queued,
                    last_reply: None,
                    remote_mta: None,
                })
                .collect(),
            attempts: 0,
            next_attempt: envelope.received_at,
            last_error: None,
            history: Vec::new(),
            delay_warned: false,
            body_len: None,
            body_file: None,
            envelope,
        }
    }

    /// Indexes of recipients still to be delivered.
    pub fn pending(&self) -> Vec<usize> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status.is_pending())
            .map(|(i, _)| i)
            .collect()
    }

    /// Appends an attempt to the history, keeping the first
    /// [`HISTORY_FIRST`] and the last [`HISTORY_LAST`] attempts: the
    /// record stays bounded however long the message is retried.
    pub fn push_attempt(&mut self, attempt: Attempt) {
        self.history.push(attempt);
        while self.history.len() > HISTORY_LIMIT {
            self.history.remove(HISTORY_FIRST);
        }
    }

    /// Attempts made but no longer in [`QueueRecord::history`].
    pub fn attempts_omitted(&self) -> u32 {
        self.attempts.saturating_sub(self.history.len() as u32)
    }

    /// True when no recipient is pending: the record can go.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| !r.status.is_pending())
    }

    /// Serialised form (JSON: stable and readable with standard tools).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored record.
    pub fn decode(bytes: &[u8]) -> Result<QueueRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            tree: "queue.records",
            reason: e.to_string(),
        })
    }
}
