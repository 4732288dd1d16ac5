//! SMTP TLS Reporting (RFC 8460): the daily aggregate reports Portcullis
//! sends to the owners of the domains it delivered mail to.
//!
//! - **Session results** ([`TlsSessionResult`], [`TlsResultSink`]): what
//!   delivery hands over for every outbound TLS session, with the policy
//!   that applied ([`ReportPolicy`](portcullis_tls::ReportPolicy)).
//! - **Recording** ([`TlsRptRecorder`]): delivery hands every outbound TLS
//!   session's outcome to the recorder (it implements
//!   [`TlsResultSink`]; delivery is given the [`TlsRptSink`], which also
//!   logs and counts for metrics), which counts it in sled per
//!   (UTC day, policy domain, policy), bounded in size, so that a restart
//!   loses no counts and memory does not grow with traffic.
//! - **No report loops** (RFC 8460 §3): sessions that carried a TLS report
//!   themselves are never counted, and a domain gets a report only for a day
//!   on which ordinary mail went there.
//! - **The report** ([`build_report`], RFC 8460 §4): the JSON of §4.4 built
//!   on mail-auth's [`TlsReport`](mail_auth::report::tlsrpt::TlsReport)
//!   types, with the result types of §4.3, gzip-compressed (§5.1).
//! - **Destinations** ([`lookup_destinations`], RFC 8460 §3): the
//!   `_smtp._tls.<policy domain>` TXT record, parsed by mail-auth, looked up
//!   when a report is due; a temporary DNS failure means "later", never
//!   "nobody to tell".
//! - **Delivery** (RFC 8460 §5): `mailto:` destinations get a
//!   multipart/report message (§5.3) that must be DKIM-signed
//!   ([`report_signer`], [`build_report_message`]) and goes through the
//!   Portcullis queue ([`ReportMailer`], implemented over the queue by
//!   [`QueueMailer`] with the origin recorded as a TLS report), so it is
//!   retried like any mail;
//!   `https:` destinations get a POST of the gzip body (§5.2, [`HttpsPoster`]),
//!   retried with backoff. [`ReportSender`] sends each (day, domain) report
//!   once, after 00:00 UTC plus a random delay within the configured window,
//!   and keeps the sent state in sled so that nothing goes out twice.
//!
//! Threat model: the counts come from our own sessions, but almost every
//! string in them (MX names, HELO names, policy text, error details) was
//! chosen by a remote party. They are length-capped and only ever emitted as
//! JSON strings; the number of distinct failure rows per aggregate is capped
//! so that a hostile MX cannot make a record grow without bound. The
//! destinations come from unsigned DNS: an attacker who forges them learns
//! our TLS statistics about the domain, nothing more, and an HTTPS
//! destination is only contacted with PKIX-verified TLS, no redirects and a
//! timeout.

#![forbid(unsafe_code)]

mod builder;
mod day;
mod destinations;
mod error;
mod https;
mod mail;
mod metrics;
mod queue_mailer;
pub mod received;
mod recorder;
mod report;
mod send;
mod settings;
pub mod shared;
mod sink;
mod state;
mod tls_result;

pub use builder::ReportSenderBuilder;
pub use day::Day;
pub use destinations::{
    Destination, DestinationLookup, lookup_destinations, parse_destinations, record_name,
};
pub use error::TlsRptError;
pub use https::{DEFAULT_POST_TIMEOUT, HttpsPoster, HttpsPosterBuilder, PostError};
pub use mail::{
    MessageParts, REPORT_HEADERS, build_report_message, report_filename, report_signer,
    report_signer_from_file,
};
pub use metrics::ReportMetrics;
pub use queue_mailer::QueueMailer;
pub use recorder::{
    AggregatePolicy, DayAggregate, FailureKey, MAX_FAILURE_KEYS, OTHER_FAILURES, TlsRptRecorder,
};
pub use report::{ReportInfo, ReportJson, build_report, gzip};
pub use send::{ReportMailer, ReportSender, run, run_with};
pub use settings::{
    DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETENTION_DAYS, ReportParts, ReportSettings,
};
pub use sink::TlsRptSink;
pub use state::{
    DestinationState, DestinationStatus, ReportState, ReportSummary, SendOutcome, SentRecord,
};
pub use tls_result::{Downgrade, LogTlsResults, TlsResultSink, TlsSessionResult};
