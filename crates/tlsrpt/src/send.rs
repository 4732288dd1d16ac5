//! Sending the daily reports (RFC 8460 §5): once a UTC day is over and a
//! random delay within the send window has passed (picked once per day and
//! stored, so a restart does not re-roll it), every (day, policy domain)
//! with aggregates gets its destinations looked up and its report sent to
//! each: `mailto:` through the Portcullis queue ([`ReportMailer`], so the
//! mail is retried like any other), `https:` by POST ([`HttpsPoster`]),
//! retried with backoff.
//!
//! **At most once.** The state of every report and destination is kept in
//! sled ([`TreeName::TlsRptSent`]); before a destination is contacted its
//! attempt is recorded as in flight and committed to disk (STYLE 7: record
//! the attempt before connecting). A destination found in flight by a
//! later pass was interrupted by a crash; it is given up rather than risk a
//! second copy. Passes are serialised, so the loop and an operator's
//! `tlsrpt send` never race.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_auth::DkimSigner;
use portcullis_dns::Resolver;
use portcullis_store::{Store, StoreError, Tree, TreeName};
use portcullis_types::{Clock, Domain};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::mail::MessageParts;
use crate::{
    Day, Destination, DestinationLookup, HttpsPoster, ReportInfo, ReportJson, TlsRptError,
    TlsRptRecorder, build_report, build_report_message, lookup_destinations,
};

/// Submits report mail into the queue ([`QueueMailer`](crate::QueueMailer)
/// over the Portcullis queue, so reports are retried and bounced like any
/// mail; tests record what would have been queued).
pub trait ReportMailer: Send + Sync + 'static {
    /// Queues `message` (a complete, DKIM-signed RFC 5322 message) for
    /// `to`. `from` is the envelope sender: always `""`, the null
    /// reverse-path `<>` (RFC 5321 §4.5.5), so that an undeliverable report
    /// does not bounce. The implementation records the message's origin as
    /// a TLS report in the envelope (`Origin::TlsReport`): that recorded
    /// fact, never the message's content, is what lets delivery apply the
    /// RFC 8460 §5.3 exemption and leave the session out of reports
    /// (`is_report`, RFC 8460 §3). Returns the queue id, or why the queue
    /// refused the message.
    fn submit(
        &self,
        from: &str,
        to: &str,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

impl<M: ReportMailer> ReportMailer for Arc<M> {
    fn submit(
        &self,
        from: &str,
        to: &str,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<String, String>> + Send {
        (**self).submit(from, to, message)
    }
}

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

/// The per-day send time, picked once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DaySchedule {
    /// Seconds after the day's end (00:00 UTC of the next day).
    delay_secs: u64,
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

/// What a [`ReportSender`] works with: where the aggregates and the
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
    /// How often [`run`] looks for due reports (default 5 min).
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
    fn check(&self) -> Result<(), TlsRptError> {
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

/// Sends the daily reports. Share it with `Arc`.
pub struct ReportSender<R, M> {
    parts: ReportParts<R, M>,
    settings: ReportSettings,
    signer: Option<DkimSigner>,
    sent: Tree,
    clock: Arc<dyn Clock>,
    pass: tokio::sync::Mutex<()>,
}

impl<R, M> std::fmt::Debug for ReportSender<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSender")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ReportSender`] (STYLE 22).
pub struct ReportSenderBuilder<R, M> {
    parts: ReportParts<R, M>,
    settings: ReportSettings,
    signer: Option<DkimSigner>,
}

impl<R, M> std::fmt::Debug for ReportSenderBuilder<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSenderBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<R: Resolver, M: ReportMailer> ReportSender<R, M> {
    /// A builder over `parts`, with `settings` (start from
    /// [`ReportSettings::new`]).
    pub fn builder(
        parts: ReportParts<R, M>,
        settings: ReportSettings,
    ) -> ReportSenderBuilder<R, M> {
        ReportSenderBuilder {
            parts,
            settings,
            signer: None,
        }
    }
}

impl<R: Resolver, M: ReportMailer> ReportSenderBuilder<R, M> {
    /// The DKIM signer for report mail. Without one, `mailto:` destinations
    /// are given up (RFC 8460 §5.3 requires a signature); `https:` ones
    /// still get reports.
    pub fn signer(mut self, signer: DkimSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Sets [`ReportSettings::send_window`].
    pub fn send_window(mut self, window: Duration) -> Self {
        self.settings.send_window = window;
        self
    }

    /// Sets [`ReportSettings::backoff`].
    pub fn backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Sets [`ReportSettings::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n.max(1);
        self
    }

    /// Sets [`ReportSettings::retention_days`] (at least 2).
    pub fn retention_days(mut self, days: u32) -> Self {
        self.settings.retention_days = i64::from(days.max(2));
        self
    }

    /// Sets [`ReportSettings::poll_interval`] (at least 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every.max(Duration::from_secs(1));
        self
    }

    /// Builds the sender; the settings must name the reporter and a `From`
    /// address.
    pub fn build(self) -> Result<ReportSender<R, M>, TlsRptError> {
        self.settings.check()?;
        Ok(ReportSender {
            sent: self.parts.store.tree(TreeName::TlsRptSent)?,
            clock: Arc::clone(self.parts.recorder.clock()),
            parts: self.parts,
            settings: self.settings,
            signer: self.signer,
            pass: tokio::sync::Mutex::new(()),
        })
    }
}

/// One report being sent in a pass: its (day, policy domain) and the
/// pass's time.
#[derive(Debug, Clone, Copy)]
struct Due<'a> {
    now: SystemTime,
    day: Day,
    domain: &'a str,
}

impl Due<'_> {
    /// The pass's time in Unix seconds.
    fn now_s(&self) -> u64 {
        unix(self.now)
    }
}

/// A report built for sending: its JSON and the gzip body.
#[derive(Debug, Clone, Copy)]
struct Built<'a> {
    report: &'a ReportJson,
    gz: &'a [u8],
}

/// One attempt at a destination, as recorded before contacting it.
#[derive(Debug)]
struct Attempt {
    attempts: u32,
    next_try: u64,
    destination: Destination,
}

impl DestinationState {
    /// A destination not tried yet.
    fn new(destination: Destination) -> DestinationState {
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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn report_key(day: Day, domain: &str) -> Vec<u8> {
    let mut k = format!("r/{day}").into_bytes();
    k.push(0);
    k.extend_from_slice(domain.as_bytes());
    k
}

fn schedule_key(day: Day) -> Vec<u8> {
    format!("d/{day}").into_bytes()
}

impl<R: Resolver, M: ReportMailer> ReportSender<R, M> {
    /// Sends what is due at `now`: every report of a finished UTC day whose
    /// random send time has passed and whose next attempt is due.
    pub async fn send_due(&self, now: SystemTime) -> Vec<SendOutcome> {
        self.pass(now, false).await
    }

    /// Sends what is due now, ignoring the random delay (`tlsrpt send`).
    /// Backoff after failures still applies; nothing is sent twice.
    pub async fn send_now(&self) -> Vec<SendOutcome> {
        self.pass(self.clock.now(), true).await
    }

    /// The reports known, newest day first, domains in order.
    pub fn list(&self) -> Result<Vec<ReportSummary>, TlsRptError> {
        let today = Day::of(self.clock.now());
        let mut reports: Vec<(Day, String)> = self.parts.recorder.reports()?.into_iter().collect();
        reports.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = Vec::new();
        for (day, domain) in reports {
            let aggs = self.parts.recorder.aggregates(day, &domain)?;
            let record = self.load(day, &domain)?;
            let state = match &record {
                _ if day >= today => ReportState::Collecting,
                Some(r) => r.state,
                None => ReportState::Pending,
            };
            out.push(ReportSummary {
                day: day.to_string(),
                domain,
                successful: aggs.iter().map(|a| a.successful).sum(),
                failed: aggs.iter().map(|a| a.failed()).sum(),
                destinations: record
                    .as_ref()
                    .and_then(|r| r.destinations.as_ref())
                    .map(|d| d.iter().map(|s| s.destination.uri()).collect())
                    .unwrap_or_default(),
                state,
                last_error: record.and_then(|r| r.last_error),
            });
        }
        Ok(out)
    }

    /// The report JSON for `domain` on `day` (default: the latest day with
    /// data for it), exactly as it is (or would be) sent.
    pub fn show(&self, domain: &str, day: Option<Day>) -> Result<serde_json::Value, TlsRptError> {
        let domain = Domain::parse(domain)
            .map_err(|_| TlsRptError::InvalidDomain(domain.to_owned()))?
            .as_str()
            .to_owned();
        let day = match day {
            Some(d) => d,
            None => self
                .parts
                .recorder
                .reports()?
                .into_iter()
                .filter(|(_, d)| *d == domain)
                .map(|(day, _)| day)
                .max()
                .ok_or_else(|| TlsRptError::NoData {
                    domain: domain.clone(),
                    day: "any day".to_owned(),
                })?,
        };
        let today = Day::of(self.clock.now());
        let aggs = self.parts.recorder.aggregates(day, &domain)?;
        if aggs.is_empty() {
            return Err(TlsRptError::NoData {
                domain,
                day: day.to_string(),
            });
        }
        let report_id = if day < today {
            self.record_for(day, &domain)?.report_id
        } else {
            // Still collecting: the id is fixed when the day is over.
            self.settings.info.new_report_id(day, &domain)
        };
        Ok(build_report(&self.settings.info, day, &domain, &report_id, &aggs)?.json)
    }

    /// The stored state of (`day`, `domain`), if any.
    pub fn state(&self, day: Day, domain: &str) -> Result<Option<SentRecord>, TlsRptError> {
        self.load(day, domain)
    }

    fn load(&self, day: Day, domain: &str) -> Result<Option<SentRecord>, TlsRptError> {
        let key = report_key(day, domain);
        match self.sent.get(&key).map_err(StoreError::from)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| TlsRptError::corrupt(&key, e))?,
            )),
            None => Ok(None),
        }
    }

    fn save(&self, day: Day, record: &SentRecord) -> Result<(), TlsRptError> {
        let key = report_key(day, &record.domain);
        let v = serde_json::to_vec(record).map_err(|e| TlsRptError::corrupt(&key, e))?;
        self.sent.insert(key, v).map_err(StoreError::from)?;
        Ok(())
    }

    /// The stored record, created (pending, with a fresh report-id) if
    /// missing.
    fn record_for(&self, day: Day, domain: &str) -> Result<SentRecord, TlsRptError> {
        if let Some(r) = self.load(day, domain)? {
            return Ok(r);
        }
        let r = SentRecord {
            day: day.to_string(),
            domain: domain.to_owned(),
            report_id: self.settings.info.new_report_id(day, domain),
            state: ReportState::Pending,
            destinations: None,
            lookup_attempts: 0,
            last_error: None,
            next_try: 0,
            sent_at: None,
        };
        self.save(day, &r)?;
        Ok(r)
    }

    /// The day's send delay, picked at random within the window once.
    fn delay(&self, day: Day) -> Result<Duration, TlsRptError> {
        let key = schedule_key(day);
        if let Some(v) = self.sent.get(&key).map_err(StoreError::from)?
            && let Ok(s) = serde_json::from_slice::<DaySchedule>(&v)
        {
            return Ok(Duration::from_secs(s.delay_secs));
        }
        let window = self.settings.send_window.as_secs();
        let delay_secs = if window == 0 {
            0
        } else {
            rand::rng().random_range(0..window)
        };
        let v = serde_json::to_vec(&DaySchedule { delay_secs })
            .map_err(|e| TlsRptError::corrupt(&key, e))?;
        self.sent.insert(key, v).map_err(StoreError::from)?;
        Ok(Duration::from_secs(delay_secs))
    }

    /// The wait before attempt `attempts + 1`.
    fn backoff(&self, attempts: u32) -> Duration {
        let i = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        self.settings
            .backoff
            .get(i)
            .or(self.settings.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }

    async fn pass(&self, now: SystemTime, ignore_delay: bool) -> Vec<SendOutcome> {
        let _pass = self.pass.lock().await;
        let mut outcomes = Vec::new();
        if let Err(e) = self.pass_inner(now, ignore_delay, &mut outcomes).await {
            tracing::warn!(error = %e, "TLS-RPT: send pass failed");
        }
        if let Err(e) = self.parts.store.commit().await {
            tracing::warn!(error = %e, "TLS-RPT: commit failed");
        }
        outcomes
    }

    async fn pass_inner(
        &self,
        now: SystemTime,
        ignore_delay: bool,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        let today = Day::of(now);
        self.prune(Day::from_days_since_epoch(
            today.days_since_epoch() - self.settings.retention_days,
        ))?;
        for (day, domain) in self.parts.recorder.reports()? {
            if day >= today {
                continue;
            }
            if let Some(r) = self.load(day, &domain)?
                && r.state != ReportState::Pending
            {
                continue;
            }
            if !ignore_delay && now < day.end() + self.delay(day)? {
                continue;
            }
            let due = Due {
                now,
                day,
                domain: &domain,
            };
            if let Err(e) = self.send_one(due, outcomes).await {
                tracing::warn!(error = %e, %day, %domain, "TLS-RPT: report not sent");
            }
        }
        Ok(())
    }

    /// Looks up, builds and sends one report, as far as is due.
    async fn send_one(
        &self,
        due: Due<'_>,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        let mut rec = self.record_for(due.day, due.domain)?;
        if rec.destinations.is_none() && !self.look_up(due, &mut rec, outcomes).await? {
            return Ok(());
        }
        let aggregates = self.parts.recorder.aggregates(due.day, due.domain)?;
        let report = build_report(
            &self.settings.info,
            due.day,
            due.domain,
            &rec.report_id,
            &aggregates,
        )?;
        let gz = report.to_gzip()?;
        let built = Built {
            report: &report,
            gz: &gz,
        };
        let count = rec.destinations.as_ref().map_or(0, Vec::len);
        for i in 0..count {
            self.send_to(due, &mut rec, i, built, outcomes).await?;
        }
        self.settle(due, &mut rec)
    }

    /// Looks up the report's destinations when due (RFC 8460 §3): true when
    /// they are known now; otherwise the record says why not (no record,
    /// or a temporary failure to retry or give up on).
    async fn look_up(
        &self,
        due: Due<'_>,
        rec: &mut SentRecord,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<bool, TlsRptError> {
        let now_s = due.now_s();
        if rec.next_try > now_s {
            return Ok(false);
        }
        let (day, domain) = (due.day, due.domain);
        match lookup_destinations(&self.parts.resolver, domain).await {
            DestinationLookup::Found(dests) => {
                rec.destinations = Some(dests.into_iter().map(DestinationState::new).collect());
                self.save(day, rec)?;
                return Ok(true);
            }
            DestinationLookup::None(reason) => {
                tracing::info!(%day, %domain, %reason, "TLS-RPT: domain wants no reports");
                rec.state = ReportState::NoDestination;
                rec.last_error = Some(reason.clone());
                outcomes.push(SendOutcome::NoDestination {
                    day: day.to_string(),
                    domain: domain.to_owned(),
                    reason,
                });
            }
            DestinationLookup::Temporary(e) => {
                rec.lookup_attempts += 1;
                rec.last_error = Some(e.to_string());
                if rec.lookup_attempts >= self.settings.max_attempts {
                    rec.state = ReportState::Failed;
                    outcomes.push(SendOutcome::GaveUp {
                        day: day.to_string(),
                        domain: domain.to_owned(),
                        destination: None,
                        error: e.to_string(),
                    });
                } else {
                    rec.next_try = now_s + self.backoff(rec.lookup_attempts).as_secs();
                    outcomes.push(SendOutcome::Retry {
                        day: day.to_string(),
                        domain: domain.to_owned(),
                        destination: None,
                        error: e.to_string(),
                        next_try: rec.next_try,
                    });
                }
            }
        }
        self.save(day, rec)?;
        Ok(false)
    }

    /// Sends the report to destination `i` of `rec` if it is due: the
    /// attempt is recorded and committed before anyone is contacted, then
    /// what happened.
    async fn send_to(
        &self,
        due: Due<'_>,
        rec: &mut SentRecord,
        i: usize,
        built: Built<'_>,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        let Some(attempt) = self.begin_attempt(due, rec, i, outcomes)? else {
            return Ok(());
        };
        // Record the attempt before contacting anyone.
        self.parts.store.commit().await?;
        let result = self.deliver(&attempt.destination, built, due).await;
        self.record_result(due, rec, i, attempt, result, outcomes);
        self.save(due.day, rec)?;
        self.parts.store.commit().await?;
        Ok(())
    }

    /// Marks destination `i` in flight (saved, not yet committed) and
    /// returns the attempt, or `None` when it is not to be contacted now:
    /// done, waiting for its retry, or found in flight (then given up).
    fn begin_attempt(
        &self,
        due: Due<'_>,
        rec: &mut SentRecord,
        i: usize,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<Option<Attempt>, TlsRptError> {
        let now_s = due.now_s();
        let Some(dest) = rec.destinations.as_mut().and_then(|d| d.get_mut(i)) else {
            return Ok(None);
        };
        match dest.status {
            DestinationStatus::Sent | DestinationStatus::Failed => return Ok(None),
            DestinationStatus::InFlight => {
                // RFC 8460 at most once: a crash interrupted this
                // attempt; it may have been delivered.
                let error =
                    "interrupted while being sent; not sent again to avoid a duplicate".to_owned();
                dest.status = DestinationStatus::Failed;
                dest.last_error = Some(error.clone());
                outcomes.push(SendOutcome::GaveUp {
                    day: due.day.to_string(),
                    domain: due.domain.to_owned(),
                    destination: Some(dest.destination.uri()),
                    error,
                });
                self.save(due.day, rec)?;
                return Ok(None);
            }
            DestinationStatus::Pending if dest.next_try > now_s => return Ok(None),
            DestinationStatus::Pending => {}
        }
        dest.attempts += 1;
        dest.status = DestinationStatus::InFlight;
        dest.next_try = now_s + self.backoff(dest.attempts).as_secs();
        let attempt = Attempt {
            attempts: dest.attempts,
            next_try: dest.next_try,
            destination: dest.destination.clone(),
        };
        self.save(due.day, rec)?;
        Ok(Some(attempt))
    }

    /// Writes what one attempt at destination `i` did into `rec`.
    fn record_result(
        &self,
        due: Due<'_>,
        rec: &mut SentRecord,
        i: usize,
        attempt: Attempt,
        result: Result<String, (String, bool)>,
        outcomes: &mut Vec<SendOutcome>,
    ) {
        let (day, domain) = (due.day, due.domain);
        let uri = attempt.destination.uri();
        if let Err((error, _)) = &result {
            rec.last_error = Some(format!("{uri}: {error}"));
        }
        let Some(dest) = rec.destinations.as_mut().and_then(|d| d.get_mut(i)) else {
            return;
        };
        let (day_s, dom) = (day.to_string(), domain.to_owned());
        match result {
            Ok(detail) => {
                tracing::info!(%day, %domain, destination = %uri, %detail, "TLS-RPT: report sent");
                dest.status = DestinationStatus::Sent;
                dest.sent_at = Some(due.now_s());
                dest.last_error = None;
                if matches!(attempt.destination, Destination::Mailto(_)) {
                    dest.queue_id = Some(detail.clone());
                }
                outcomes.push(SendOutcome::Sent {
                    day: day_s,
                    domain: dom,
                    destination: uri,
                    detail,
                });
            }
            Err((error, permanent)) => {
                dest.last_error = Some(error.clone());
                if permanent || attempt.attempts >= self.settings.max_attempts {
                    tracing::warn!(%day, %domain, destination = %uri, %error, "TLS-RPT: giving up on destination");
                    dest.status = DestinationStatus::Failed;
                    outcomes.push(SendOutcome::GaveUp {
                        day: day_s,
                        domain: dom,
                        destination: Some(uri),
                        error,
                    });
                } else {
                    let attempts = attempt.attempts;
                    tracing::info!(%day, %domain, destination = %uri, %error, attempts, "TLS-RPT: report not delivered; will retry");
                    dest.status = DestinationStatus::Pending;
                    outcomes.push(SendOutcome::Retry {
                        day: day_s,
                        domain: dom,
                        destination: Some(uri),
                        error,
                        next_try: attempt.next_try,
                    });
                }
            }
        }
    }

    /// Once every destination is done, the report's state: sent if any got
    /// it, failed otherwise.
    fn settle(&self, due: Due<'_>, rec: &mut SentRecord) -> Result<(), TlsRptError> {
        let dests = rec.destinations.as_deref().unwrap_or_default();
        let done = dests.iter().all(|d| {
            matches!(
                d.status,
                DestinationStatus::Sent | DestinationStatus::Failed
            )
        });
        if done {
            if dests.iter().any(|d| d.status == DestinationStatus::Sent) {
                rec.state = ReportState::Sent;
                rec.sent_at = Some(due.now_s());
            } else {
                rec.state = ReportState::Failed;
            }
            self.save(due.day, rec)?;
        }
        Ok(())
    }

    /// Sends the report to one destination: `Ok(detail)`, or the error and
    /// whether it is permanent.
    async fn deliver(
        &self,
        destination: &Destination,
        built: Built<'_>,
        due: Due<'_>,
    ) -> Result<String, (String, bool)> {
        match destination {
            Destination::Https(url) => self
                .parts
                .poster
                .post(url, built.gz.to_vec())
                .await
                .map(|status| format!("HTTP {status}"))
                .map_err(|e| (e.to_string(), false)),
            Destination::Mailto(to) => {
                let Some(signer) = &self.signer else {
                    return Err((
                        "no DKIM key configured ([tlsrpt] dkim_key): RFC 8460 §5.3 requires report mail to be signed"
                            .to_owned(),
                        true,
                    ));
                };
                let parts = MessageParts {
                    domain: due.domain,
                    submitter: &self.settings.info.submitter,
                    from: &self.settings.from,
                    to,
                    date: due.now,
                    day: due.day,
                };
                let message = build_report_message(built.report, built.gz, parts, signer)
                    .map_err(|e| (e.to_string(), true))?;
                // RFC 5321 §4.5.5: the null reverse-path.
                self.parts
                    .mailer
                    .submit("", to, message)
                    .await
                    .map_err(|e| (format!("queue refused the report: {e}"), false))
            }
        }
    }

    /// Deletes aggregates and states of days before `day`.
    fn prune(&self, day: Day) -> Result<(), TlsRptError> {
        self.parts.recorder.prune_before(day)?;
        for item in self.sent.iter() {
            let (k, _) = item.map_err(StoreError::from)?;
            let text = String::from_utf8_lossy(&k);
            let day_part = text.get(2..12).and_then(|d| d.parse::<Day>().ok());
            if day_part.is_none_or(|d| d < day) {
                self.sent.remove(&k).map_err(StoreError::from)?;
            }
        }
        Ok(())
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// The sending loop: a pass at start, then one every poll interval, until
/// `shutdown`. A pass is never interrupted half way (each request has its
/// own timeout), so a report is never left in flight by a clean shutdown.
pub async fn run<R: Resolver, M: ReportMailer>(
    sender: Arc<ReportSender<R, M>>,
    shutdown: CancellationToken,
) {
    run_with(sender, shutdown, |_| {}).await;
}

/// Like [`run`], calling `on_outcome` for every outcome (metrics).
pub async fn run_with<R: Resolver, M: ReportMailer>(
    sender: Arc<ReportSender<R, M>>,
    shutdown: CancellationToken,
    on_outcome: impl Fn(&SendOutcome) + Send,
) {
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let now = sender.clock.now();
        for outcome in sender.send_due(now).await {
            on_outcome(&outcome);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(sender.settings.poll_interval) => {}
        }
    }
    tracing::debug!("TLS-RPT sender stopped");
}
