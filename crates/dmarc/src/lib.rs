//! DMARC aggregate reports (RFC 7489 §7.2, the XML of Appendix C): what
//! the inbound verification found for each message whose From domain
//! asks for aggregate reports (`rua=`) is counted per (UTC day, From
//! domain) in sled ([`DmarcRecorder`]); after the day is over a report per
//! domain is built with mail-auth's report types, gzipped, signed with the
//! server's one DKIM signer and queued from the null sender to each
//! `mailto:` destination the domain lists ([`DmarcSender`]), once.
//!
//! Threat model: the From domain, its DNS records (the `rua` list, the
//! external destination authorisations) and the results are chosen by
//! whoever sends us mail. So:
//! - what one sender can make us store is bounded: a cap on domain-days
//!   and on rows per domain-day ([`Limits`]); past a cap a message is not
//!   counted (and that is counted), never stored;
//! - a report goes to a destination outside the domain only when that
//!   destination's domain agrees to receive it (RFC 7489 §7.1,
//!   `<domain>._report._dmarc.<destination domain>` TXT `v=DMARC1`), and
//!   never above the destination's `!size` limit;
//! - a report is sent at most once: its state is written (and committed)
//!   before it is queued (in a cluster, one node sends it, and a node
//!   taking over a half-sent report keeps its report id);
//! - reports about reports are not counted ([`is_report`]), so two
//!   servers reporting to each other do not loop.

#![forbid(unsafe_code)]

mod backend;
mod destinations;
mod error;
mod mail;
mod metrics;
mod observation;
mod queue_mailer;
mod recorder;
mod report;
mod send;

pub use backend::{
    BoxFuture, Destination, LocalSendStates, ReportSource, SendState, SendStates, Taken,
};
pub use destinations::{Authorization, authorize, mailto_address, report_record_name};
pub use error::DmarcError;
pub use mail::{REPORT_HEADERS, ReportMessage, build_report_message, report_filename};
pub use metrics::DmarcMetrics;
pub use observation::{DkimAuth, Observation, Published, RowFacts, Rua, SpfAuth, is_report};
pub use portcullis_tlsrpt::Day;
pub use queue_mailer::{DmarcMailer, QueueMailer};
pub use recorder::{DmarcRecorder, Limits, PendingReport, Recorded};
pub use report::{ReportInfo, build_report, gzip, report_xml};
pub use send::{DmarcSender, SendOutcome, SenderSettings, run};

#[cfg(test)]
mod tests;
