//! What a report sender is built from: its parts (store, recorder,
//! resolver, mailer, poster) and the `[tlsrpt]` settings of sending, with
//! their defaults and their check.

use std::time::Duration;

use portcullis_store::Store;

use crate::{HttpsPoster, ReportInfo, TlsRptError, TlsRptRecorder};

/// The default waits between attempts (the last one repeats until
/// [`DEFAULT_MAX_ATTEMPTS`]).
pub const DEFAULT_BACKOFF: [Duration; 6] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(4 * 60 * 60),
];

/// Attempts per destination (and failed TXT lookups) before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Days of aggregates and sending state kept (for `tlsrpt list`).
pub const DEFAULT_RETENTION_DAYS: i64 = 14;

/// What a [`ReportSender`](crate::ReportSender) works with: where the aggregates and the
/// sending state live, how destinations are found, and how reports reach
/// them. Named fields instead of a positional constructor.
pub struct ReportParts<R, M> {
    /// The store of the sending state ([`TreeName::TlsRptSent`]).
    pub store: Store,
    /// The aggregates, and the clock days are cut by.
    pub recorder: TlsRptRecorder,
    /// Looks up `_smtp._tls` records.
    pub resolver: R,
    /// Queues report mail (`mailto:` destinations).
    pub mailer: M,
    /// POSTs reports (`https:` destinations).
    pub poster: HttpsPoster,
}

/// The `[tlsrpt]` settings of sending (STYLE 22: a settings value with
/// defaults instead of a long constructor).
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The reporting organisation, its contact and the submitter domain.
    pub info: ReportInfo,
    /// The `From` address of report mail.
    pub from: String,
    /// `[tlsrpt] send_window`: reports leave at a random time within this
    /// long after 00:00 UTC (default 4 h).
    pub send_window: Duration,
    /// Waits between attempts; the last repeats (default
    /// [`DEFAULT_BACKOFF`]). An empty list means one minute.
    pub backoff: Vec<Duration>,
    /// Attempts before giving up (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Days of history kept (default [`DEFAULT_RETENTION_DAYS`]).
    pub retention_days: i64,
    /// How often [`run`](crate::run) looks for due reports (default 5 min).
    pub poll_interval: Duration,
}

impl ReportSettings {
    /// The defaults, reporting as `info` from the address `from`.
    pub fn new(info: ReportInfo, from: &str) -> ReportSettings {
        ReportSettings {
            info,
            from: from.to_owned(),
            send_window: Duration::from_secs(4 * 3600),
            backoff: DEFAULT_BACKOFF.to_vec(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retention_days: DEFAULT_RETENTION_DAYS,
            poll_interval: Duration::from_secs(300),
        }
    }

    /// Refuses settings that cannot produce a valid report.
    pub(crate) fn check(&self) -> Result<(), TlsRptError> {
        if self.from.is_empty() || !self.from.contains('@') {
            return Err(TlsRptError::Setting {
                key: "from",
                reason: format!("{:?} is not an address", self.from),
            });
        }
        for (key, value) in [
            ("organization", &self.info.organization),
            ("contact", &self.info.contact),
            ("submitter", &self.info.submitter),
        ] {
            if value.trim().is_empty() {
                return Err(TlsRptError::Setting {
                    key,
                    reason: "must be set to send reports".to_owned(),
                });
            }
        }
        Ok(())
    }
}
