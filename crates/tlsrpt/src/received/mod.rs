//! TLS reports that other providers send about *our* domains (RFC 8460
//! §5, the receiving side): taken in by HTTPS POST at `/tlsrpt` on the
//! `mta-sts` listener, or by mail to a `[publish] tlsrpt_rua` `mailto:`
//! address, then parsed, stored with the reporting organisation, and
//! counted.
//!
//! - [`ReceivedReports`] (`intake.rs`): the [`ReportIntake`] over sled
//!   (tree `tlsrpt.received`): gunzip bounded by [`MAX_REPORT_BYTES`]
//!   (`decode.rs`), mail-auth's parser, the policies about our domains
//!   kept and bounded (`record.rs`), one copy per (organisation,
//!   report-id), at most 100,000 reports for 400 days, the failure
//!   counters of the `/metrics` page (`metrics.rs`).
//! - [`ReportMailbox`] (`mailbox.rs`): the mail path, a wrapper of the
//!   deliverer that reads mail to our report mailboxes instead of sending
//!   it onward.
//! - [`Ours`], [`LiveOurs`] (`ours.rs`): our domains and report mailboxes
//!   as the config in force says.
//!
//! Threat model: anyone can send a report, by mail or POST, and every
//! byte of it is chosen by the sender. It is refused unless it is about
//! one of our domains; its size, its decompressed size, the rows and
//! strings kept, the number of reports kept and the reporter labels of
//! the metrics are all bounded, and a sender cannot count twice by
//! sending the same report again.

mod decode;
mod intake;
mod mailbox;
mod metrics;
mod ours;
mod record;
#[cfg(test)]
mod tests;

pub use intake::{
    MAX_LIST, OTHER_REPORTER, ReceivedFilter, ReceivedLimits, ReceivedReports, ReceivedSummary,
    Taken,
};
pub use mailbox::{MAX_REPORT_MESSAGE, ReportMailbox};
pub use ours::{LiveOurs, Ours};
pub use record::{
    MAX_FAILURE_DETAILS, MAX_POLICIES, RECORD_BUDGET, ReceivedFailure, ReceivedPolicy,
    ReceivedReport,
};

/// What [`ReceivedReports`] stores of `body` for our domains `ours`,
/// decoded, parsed, filtered and bounded exactly as `take` does, without
/// the store: `Ok(None)` when no policy is about one of `ours`. The entry
/// point of the `tlsrpt_received` fuzz target.
pub fn decode_report(
    body: &[u8],
    ours: &[portcullis_types::Domain],
) -> Result<Option<ReceivedReport>, IntakeError> {
    let json = decode::json_of(body)?;
    let report = decode::parse(&json)?;
    Ok(record::from_report(&report, ours, String::new(), 0, Channel::Https).map(|(r, _)| r))
}

/// How a report reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// POSTed to `/tlsrpt` on an `mta-sts` listener.
    Https,
    /// Mailed to a `[publish] tlsrpt_rua` address.
    Mail,
}

impl Channel {
    /// `https` or `mail`, as logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Https => "https",
            Channel::Mail => "mail",
        }
    }
}

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not a report: not JSON (after gzip), not RFC 8460's
    /// shape, over the size cap, or about none of our domains. The sender
    /// gets a permanent refusal (HTTP 400/413, or the mail is dropped with
    /// a log line).
    #[error("not a usable TLS report: {0}")]
    Invalid(String),
    /// The store failed; the sender should try again later (HTTP 503).
    #[error("could not store the report: {0}")]
    Store(String),
}

/// Where received reports go. One implementation stores them in sled
/// (`tlsrpt.received`); the HTTPS listener and the mail intake both call
/// it, so a report is parsed, bounded and stored the same way whichever
/// way it came.
pub trait ReportIntake: Send + Sync {
    /// Takes one report body, gzip-compressed or plain JSON, at most
    /// [`MAX_REPORT_BYTES`] as received (and at most that once
    /// decompressed). Returns the id it is stored under (the id of the
    /// copy already stored, for a report sent again). Returns only once
    /// the report is on disk, so it blocks: async callers use
    /// `spawn_blocking`.
    fn take(&self, body: &[u8], channel: Channel) -> Result<String, IntakeError>;
}

/// The largest report body taken, compressed or not (1 MiB): RFC 8460
/// reports are small; a larger one is refused, not truncated.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
