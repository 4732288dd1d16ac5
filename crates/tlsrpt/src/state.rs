//! The sending state of reports, as stored in sled
//! ([`TreeName::TlsRptSent`](portcullis_store::TreeName::TlsRptSent)) and
//! shown by `portcullis tlsrpt list`, and what a send pass did
//! ([`SendOutcome`]): the records that make "at most once" (RFC 8460)
//! survive a restart.

use serde::{Deserialize, Serialize};

use crate::Destination;

/// The state of one report (day, policy domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportState {
    /// The day is not over yet: sessions are still being counted.
    Collecting,
    /// Due (or waiting for its send time, or for a retry).
    Pending,
    /// Sent to at least one destination; nothing left to try.
    Sent,
    /// The domain publishes no usable `_smtp._tls` record: nothing sent.
    NoDestination,
    /// Given up: no destination could be reached.
    Failed,
}

impl ReportState {
    /// The state as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Collecting => "collecting",
            ReportState::Pending => "pending",
            ReportState::Sent => "sent",
            ReportState::NoDestination => "no-destination",
            ReportState::Failed => "failed",
        }
    }
}

/// The state of one destination of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationStatus {
    /// To be tried (again) at `next_try`.
    Pending,
    /// Being contacted right now (found by a later pass: interrupted).
    InFlight,
    /// Delivered (https: 2xx; mailto: accepted by the queue).
    Sent,
    /// Given up.
    Failed,
}

/// One destination of a report and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DestinationState {
    /// Where to.
    pub destination: Destination,
    /// Its state.
    pub status: DestinationStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Earliest next attempt (Unix seconds).
    pub next_try: u64,
    /// When it was sent (Unix seconds).
    pub sent_at: Option<u64>,
    /// The queue id of the report mail (mailto).
    pub queue_id: Option<String>,
}

/// The sending state of one report, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SentRecord {
    /// The UTC day.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// The report-id, fixed when the record is created.
    pub report_id: String,
    /// The report's state.
    pub state: ReportState,
    /// The destinations, once looked up.
    pub destinations: Option<Vec<DestinationState>>,
    /// Failed destination lookups so far.
    pub lookup_attempts: u32,
    /// The last failure (lookup or send).
    pub last_error: Option<String>,
    /// Earliest next lookup (Unix seconds).
    pub next_try: u64,
    /// When the report was sent to its last destination (Unix seconds).
    pub sent_at: Option<u64>,
}

/// One line of `portcullis tlsrpt list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReportSummary {
    /// The UTC day.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// Successful sessions.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
    /// The destinations, when known.
    pub destinations: Vec<String>,
    /// The report's state.
    pub state: ReportState,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// What one pass did for one report or destination (for logs, metrics and
/// `tlsrpt send`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SendOutcome {
    /// Delivered to a destination (mailto: queued, `detail` the queue id;
    /// https: `detail` the HTTP status).
    Sent {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// The destination URI.
        destination: String,
        /// Queue id or HTTP status.
        detail: String,
    },
    /// Failed for now; tried again at `next_try` (Unix seconds).
    Retry {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// The destination URI (`None`: the TXT lookup).
        destination: Option<String>,
        /// Why.
        error: String,
        /// Next attempt (Unix seconds).
        next_try: u64,
    },
    /// Given up.
    GaveUp {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// The destination URI (`None`: the TXT lookup).
        destination: Option<String>,
        /// Why.
        error: String,
    },
    /// The domain wants no reports.
    NoDestination {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// Why (no record, several records, …).
        reason: String,
    },
}

impl SendOutcome {
    /// The transport for metrics: `mailto`, `https` or `dns`.
    pub fn transport(&self) -> &'static str {
        let dest = match self {
            SendOutcome::Sent { destination, .. } => Some(destination.as_str()),
            SendOutcome::Retry { destination, .. } | SendOutcome::GaveUp { destination, .. } => {
                destination.as_deref()
            }
            SendOutcome::NoDestination { .. } => None,
        };
        match dest {
            Some(d) if d.starts_with("mailto:") => "mailto",
            Some(_) => "https",
            None => "dns",
        }
    }

    /// The outcome for metrics: `sent`, `retry`, `gave-up`, `no-destination`.
    pub fn kind(&self) -> &'static str {
        match self {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::GaveUp { .. } => "gave-up",
            SendOutcome::NoDestination { .. } => "no-destination",
        }
    }
}

impl DestinationState {
    /// A destination not tried yet.
    pub(crate) fn new(destination: Destination) -> DestinationState {
        DestinationState {
            destination,
            status: DestinationStatus::Pending,
            attempts: 0,
            last_error: None,
            next_try: 0,
            sent_at: None,
            queue_id: None,
        }
    }
}
