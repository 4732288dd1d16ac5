//! Sending the daily reports (RFC 8460 §5): once a UTC day is over and a
//! random delay within the send window has passed (picked once per day and
//! stored, so a restart does not re-roll it), every (day, policy domain)
//! with aggregates gets its destinations looked up and its report sent to
//! each: `mailto:` through the Portcullis queue ([`ReportMailer`], so the
//! mail is retried like any other), `https:` by POST
//! ([`HttpsPoster`](crate::HttpsPoster)), retried with backoff.
//!
//! **At most once.** The state of every report and destination is kept in
//! sled ([`TreeName::TlsRptSent`](portcullis_store::TreeName::TlsRptSent),
//! the records of [`crate::state`]); before a destination is contacted its
//! attempt is recorded as in flight and committed to disk (STYLE 7: record
//! the attempt before connecting). A destination found in flight by a
//! later pass was interrupted by a crash; it is given up rather than risk a
//! second copy. Passes are serialised, so the loop and an operator's
//! `tlsrpt send` never race.
//!
//! **Cluster mode** (a [`SharedReports`] given to the builder): the
//! counts summed are every node's, and the send state lives in the
//! shared store's claim of the report instead of sled. A pass first
//! pushes this node's counts; a node that cannot reach the database sends
//! nothing (a report with one node's counts would be wrong). A report is
//! sent only by the node holding its claim; the holder renews its lease
//! while it works (every third of the lease) and stops at once when it
//! cannot. A node that dies mid-send stops renewing; once the lease lapses
//! another node takes the report over with the state the first one wrote,
//! and re-sends to a destination found in flight **with the same
//! report-id** (RFC 8460 §4.4: receivers drop a second copy by id). So
//! across nodes a report is delivered at least once, never as two
//! different reports. (On a single node the rule above stays: a
//! destination found in flight is given up.) A node restarting after a
//! crash finds its own claim and does the same. Each node picks its own
//! random send time; the first whose time has come claims the report.
//! Each attempt sums the counts as they stand then: a retry or a takeover
//! may carry sessions a node pushed late (totals only grow).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_auth::DkimSigner;
use portcullis_dns::Resolver;
use portcullis_store::{StoreError, Tree};
use portcullis_types::{Clock, Domain};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::mail::MessageParts;
use crate::settings::{ReportParts, ReportSettings};
use crate::shared::{CountSync, SharedReports, merge};
use crate::state::{
    DestinationState, DestinationStatus, ReportState, ReportSummary, SendOutcome, SentRecord,
};
use crate::{
    Day, DayAggregate, Destination, DestinationLookup, ReportJson, TlsRptError, build_report,
    build_report_message, lookup_destinations,
};

/// Submits report mail into the queue (`QueueMailer` over the Portcullis
/// queue, so reports are retried and bounced like any mail; tests record
/// what would have been queued).
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

/// The per-day send time, picked once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DaySchedule {
    /// Seconds after the day's end (00:00 UTC of the next day).
    delay_secs: u64,
}

/// Sends the daily reports. Share it with `Arc`.
pub struct ReportSender<R, M> {
    pub(crate) parts: ReportParts<R, M>,
    pub(crate) settings: ReportSettings,
    pub(crate) signer: Option<DkimSigner>,
    pub(crate) sent: Tree,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pass: tokio::sync::Mutex<()>,
    /// Cluster mode: the push of this node's counts (and through it the
    /// shared store), and the lease a report is claimed for.
    pub(crate) shared: Option<SharedMode>,
}

/// What a sender in cluster mode works with.
pub(crate) struct SharedMode {
    pub(crate) sync: Arc<CountSync>,
    pub(crate) lease: Duration,
}

impl SharedMode {
    fn store(&self) -> &dyn SharedReports {
        self.sync.shared().as_ref()
    }
}

impl<R, M> std::fmt::Debug for ReportSender<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSender")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
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
        portcullis_types::date::unix_secs(self.now)
    }

    /// The outcome of a failure at `destination` (`None`: the TXT lookup):
    /// to be retried at `retry_at` (Unix seconds), or given up.
    fn failed(
        &self,
        destination: Option<String>,
        error: String,
        retry_at: Option<u64>,
    ) -> SendOutcome {
        let (day, domain) = (self.day.to_string(), self.domain.to_owned());
        match retry_at {
            Some(next_try) => SendOutcome::Retry {
                day,
                domain,
                destination,
                error,
                next_try,
            },
            None => SendOutcome::GaveUp {
                day,
                domain,
                destination,
                error,
            },
        }
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

/// One row of `tlsrpt list`: the report of `domain` on `day` as `today`
/// sees it (a day not over is still collecting), its counts summed over
/// `aggs`, its destinations and state from `record`.
fn summary(
    day: Day,
    today: Day,
    domain: String,
    aggs: &[crate::DayAggregate],
    record: Option<SentRecord>,
) -> ReportSummary {
    let state = match &record {
        _ if day >= today => ReportState::Collecting,
        Some(r) => r.state,
        None => ReportState::Pending,
    };
    ReportSummary {
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
    }
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

    /// Like [`Self::send_now`], but when the pass was cut short by the
    /// cluster's database (cluster mode: nothing more could be sent), the
    /// error, with what was sent before it in the log and metrics only.
    /// On a single node the same as `send_now`.
    pub async fn send_now_checked(&self) -> Result<Vec<SendOutcome>, TlsRptError> {
        match self.pass_checked(self.clock.now(), true).await {
            (_, Some(e @ TlsRptError::Shared(_))) => Err(e),
            (outcomes, _) => Ok(outcomes),
        }
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
            out.push(summary(day, today, domain, &aggs, record));
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
        self.load_local(day, domain)
    }

    fn load_local(&self, day: Day, domain: &str) -> Result<Option<SentRecord>, TlsRptError> {
        let key = report_key(day, domain);
        match self.sent.get(&key).map_err(StoreError::from)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| TlsRptError::corrupt(&key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Writes `record`: to sled, or in cluster mode into the claim this
    /// node holds ([`TlsRptError::ClaimLost`] when it holds it no more).
    async fn save(&self, day: Day, record: &SentRecord) -> Result<(), TlsRptError> {
        let key = report_key(day, &record.domain);
        let v = serde_json::to_vec(record).map_err(|e| TlsRptError::corrupt(&key, e))?;
        let Some(shared) = &self.shared else {
            self.sent.insert(key, v).map_err(StoreError::from)?;
            return Ok(());
        };
        let day_s = day.to_string();
        let done = record.state != ReportState::Pending;
        match shared.store().save(&day_s, &record.domain, &v, done).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TlsRptError::ClaimLost {
                domain: record.domain.clone(),
                day: day_s,
            }),
            Err(e) => Err(TlsRptError::Shared(e.0)),
        }
    }

    /// This node's own record of (`day`, `domain`) in sled (kept from
    /// before it joined a cluster), else a fresh one.
    fn local_or_fresh(&self, day: Day, domain: &str) -> Result<SentRecord, TlsRptError> {
        Ok(self
            .load_local(day, domain)?
            .unwrap_or_else(|| self.fresh_record(day, domain)))
    }

    /// A new record (pending, with a fresh report-id).
    fn fresh_record(&self, day: Day, domain: &str) -> SentRecord {
        SentRecord {
            day: day.to_string(),
            domain: domain.to_owned(),
            report_id: self.settings.info.new_report_id(day, domain),
            state: ReportState::Pending,
            destinations: None,
            lookup_attempts: 0,
            last_error: None,
            next_try: 0,
            sent_at: None,
        }
    }

    /// The stored record, created (pending, with a fresh report-id) if
    /// missing.
    fn record_for(&self, day: Day, domain: &str) -> Result<SentRecord, TlsRptError> {
        if let Some(r) = self.load_local(day, domain)? {
            return Ok(r);
        }
        let r = self.fresh_record(day, domain);
        let key = report_key(day, domain);
        let v = serde_json::to_vec(&r).map_err(|e| TlsRptError::corrupt(&key, e))?;
        self.sent.insert(key, v).map_err(StoreError::from)?;
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
        self.pass_checked(now, ignore_delay).await.0
    }

    /// A pass: its outcomes, and the error that cut it short, if any.
    async fn pass_checked(
        &self,
        now: SystemTime,
        ignore_delay: bool,
    ) -> (Vec<SendOutcome>, Option<TlsRptError>) {
        let _pass = self.pass.lock().await;
        let mut outcomes = Vec::new();
        let failed = match self.pass_inner(now, ignore_delay, &mut outcomes).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "TLS-RPT: send pass failed");
                Some(e)
            }
        };
        if let Err(e) = self.parts.store.commit().await {
            tracing::warn!(error = %e, "TLS-RPT: commit failed");
        }
        (outcomes, failed)
    }

    async fn pass_inner(
        &self,
        now: SystemTime,
        ignore_delay: bool,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        if let Some(shared) = &self.shared {
            return self.shared_pass(shared, now, ignore_delay, outcomes).await;
        }
        let today = Day::of(now);
        self.prune(Day::from_days_since_epoch(
            today.days_since_epoch() - self.settings.retention_days,
        ))
        .await?;
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
            let rec = match self.record_for(day, &domain) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, %day, %domain, "TLS-RPT: report not sent");
                    continue;
                }
            };
            if let Err(e) = self.send_one(due, rec, outcomes).await {
                tracing::warn!(error = %e, %day, %domain, "TLS-RPT: report not sent");
            }
        }
        Ok(())
    }

    /// Looks up, builds and sends one report, as far as is due.
    async fn send_one(
        &self,
        due: Due<'_>,
        mut rec: SentRecord,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        if rec.destinations.is_none() && !self.look_up(due, &mut rec, outcomes).await? {
            return Ok(());
        }
        let aggregates = self.aggregates(due.day, due.domain).await?;
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
        self.settle(due, &mut rec).await
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
                self.save(day, rec).await?;
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
                let retry_at = if rec.lookup_attempts >= self.settings.max_attempts {
                    rec.state = ReportState::Failed;
                    None
                } else {
                    rec.next_try = now_s + self.backoff(rec.lookup_attempts).as_secs();
                    Some(rec.next_try)
                };
                outcomes.push(due.failed(None, e.to_string(), retry_at));
            }
        }
        self.save(day, rec).await?;
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
        let Some(attempt) = self.begin_attempt(due, rec, i, outcomes).await? else {
            return Ok(());
        };
        // Record the attempt before contacting anyone.
        self.parts.store.commit().await?;
        let result = self.deliver_held(&attempt.destination, built, due).await?;
        self.record_result(due, rec, i, attempt, result, outcomes);
        self.save(due.day, rec).await?;
        self.parts.store.commit().await?;
        Ok(())
    }

    /// Marks destination `i` in flight (saved, not yet committed) and
    /// returns the attempt, or `None` when it is not to be contacted now:
    /// done, waiting for its retry, or found in flight (then given up).
    async fn begin_attempt(
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
            DestinationStatus::InFlight if self.shared.is_some() => {
                // Cluster mode: the node that held the report died (or
                // lost its lease) mid-send. Sent again with the same
                // report-id, so a receiver that got the first copy drops
                // this one: at least once, never two different reports.
                tracing::info!(day = %due.day, domain = %due.domain, destination = %dest.destination.uri(), "TLS-RPT: an interrupted attempt is sent again with the same report-id");
            }
            DestinationStatus::InFlight => {
                // RFC 8460 at most once: a crash interrupted this
                // attempt; it may have been delivered.
                let error =
                    "interrupted while being sent; not sent again to avoid a duplicate".to_owned();
                dest.status = DestinationStatus::Failed;
                dest.last_error = Some(error.clone());
                outcomes.push(due.failed(Some(dest.destination.uri()), error, None));
                self.save(due.day, rec).await?;
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
        self.save(due.day, rec).await?;
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
                    day: day.to_string(),
                    domain: domain.to_owned(),
                    destination: uri,
                    detail,
                });
            }
            Err((error, permanent)) => {
                dest.last_error = Some(error.clone());
                let retry_at = if permanent || attempt.attempts >= self.settings.max_attempts {
                    tracing::warn!(%day, %domain, destination = %uri, %error, "TLS-RPT: giving up on destination");
                    dest.status = DestinationStatus::Failed;
                    None
                } else {
                    let attempts = attempt.attempts;
                    tracing::info!(%day, %domain, destination = %uri, %error, attempts, "TLS-RPT: report not delivered; will retry");
                    dest.status = DestinationStatus::Pending;
                    Some(attempt.next_try)
                };
                outcomes.push(due.failed(Some(uri), error, retry_at));
            }
        }
    }

    /// Once every destination is done, the report's state: sent if any got
    /// it, failed otherwise.
    async fn settle(&self, due: Due<'_>, rec: &mut SentRecord) -> Result<(), TlsRptError> {
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
            self.save(due.day, rec).await?;
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

    /// The aggregates of (`day`, `domain`): this node's, or in cluster
    /// mode every node's summed.
    async fn aggregates(&self, day: Day, domain: &str) -> Result<Vec<DayAggregate>, TlsRptError> {
        match &self.shared {
            None => self.parts.recorder.aggregates(day, domain),
            Some(shared) => shared
                .store()
                .counts(&day.to_string(), domain)
                .await
                .map(|values| merge(&values))
                .map_err(|e| TlsRptError::Shared(e.0)),
        }
    }

    /// [`Self::deliver`], in cluster mode while renewing this node's lease
    /// every third of it: when the lease cannot be renewed (lost, or the
    /// database does not answer) the attempt is abandoned and the error
    /// returned, so that no node sends while another may hold the report.
    async fn deliver_held(
        &self,
        destination: &Destination,
        built: Built<'_>,
        due: Due<'_>,
    ) -> Result<Result<String, (String, bool)>, TlsRptError> {
        let Some(shared) = &self.shared else {
            return Ok(self.deliver(destination, built, due).await);
        };
        let day = due.day.to_string();
        let lost = || TlsRptError::ClaimLost {
            domain: due.domain.to_owned(),
            day: day.clone(),
        };
        // A whole lease from now before anyone is contacted (the steps
        // before, DNS and building, do not renew it).
        match shared.store().renew(&day, due.domain, shared.lease).await {
            Ok(true) => {}
            Ok(false) => return Err(lost()),
            Err(e) => return Err(TlsRptError::Shared(e.0)),
        }
        let work = self.deliver(destination, built, due);
        tokio::pin!(work);
        let mut renew = tokio::time::interval(shared.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: just renewed.
        renew.tick().await;
        loop {
            tokio::select! {
                result = &mut work => return Ok(result),
                _ = renew.tick() => {
                    match shared.store().renew(&day, due.domain, shared.lease).await {
                        Ok(true) => {}
                        Ok(false) => return Err(lost()),
                        Err(e) => return Err(TlsRptError::Shared(e.0)),
                    }
                }
            }
        }
    }

    /// A pass in cluster mode: push this node's counts (nothing is sent
    /// when that fails), then every finished day's report this node can
    /// claim, summed over every node.
    async fn shared_pass(
        &self,
        shared: &SharedMode,
        now: SystemTime,
        ignore_delay: bool,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), TlsRptError> {
        let today = Day::of(now);
        let oldest =
            Day::from_days_since_epoch(today.days_since_epoch() - self.settings.retention_days);
        self.prune(oldest).await?;
        shared.sync.forget_before(oldest);
        // The sum read below must include what this node counted.
        shared.sync.push().await?;
        let days = shared
            .store()
            .days()
            .await
            .map_err(|e| TlsRptError::Shared(e.0))?;
        for (day_s, domain) in days {
            let Ok(day) = day_s.parse::<Day>() else {
                continue;
            };
            if day >= today || day < oldest {
                continue;
            }
            if !ignore_delay && now < day.end() + self.delay(day)? {
                continue;
            }
            let claim = match shared.store().claim(&day_s, &domain, shared.lease).await {
                Ok(Some(c)) => c,
                // Held by another node, or done.
                Ok(None) => continue,
                Err(e) => return Err(TlsRptError::Shared(e.0)),
            };
            let rec = match claim
                .record
                .as_deref()
                .map(serde_json::from_slice::<SentRecord>)
            {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, %day, %domain, "TLS-RPT: the shared send state does not decode; starting the report afresh");
                    self.fresh_record(day, &domain)
                }
                // Nobody started it in the cluster. A node that ran alone
                // before joining may have: its own state goes on (the same
                // report-id; a report it sent stays sent).
                None => self.local_or_fresh(day, &domain)?,
            };
            if let Some(from) = &claim.taken_from {
                tracing::info!(%day, %domain, from = %from, report_id = %rec.report_id, "TLS-RPT: report taken over from a node whose lease lapsed");
            }
            if rec.state != ReportState::Pending {
                // Finished but not marked done (a crash between the two).
                self.save(day, &rec).await?;
                continue;
            }
            let due = Due {
                now,
                day,
                domain: &domain,
            };
            match self.send_one(due, rec, outcomes).await {
                Ok(()) => {}
                Err(e @ (TlsRptError::Shared(_) | TlsRptError::ClaimLost { .. })) => return Err(e),
                Err(e) => tracing::warn!(error = %e, %day, %domain, "TLS-RPT: report not sent"),
            }
            // Not finished (a retry later): any node may take it up then.
            if let Err(e) = shared.store().release(&day_s, &domain).await {
                return Err(TlsRptError::Shared(e.0));
            }
        }
        Ok(())
    }

    /// The reports known, newest day first, domains in order: this node's
    /// ([`Self::list`]), or in cluster mode every node's counts summed and
    /// the shared send state (an error when the database cannot answer:
    /// this node's counts alone would be a wrong answer).
    pub async fn summaries(&self) -> Result<Vec<ReportSummary>, TlsRptError> {
        let Some(shared) = &self.shared else {
            return self.list();
        };
        let today = Day::of(self.clock.now());
        let store = shared.store();
        let shared_err = |e: crate::shared::SharedError| TlsRptError::Shared(e.0);
        // Counted here but not pushed yet must show too.
        if let Err(e) = shared.sync.push().await {
            tracing::debug!(error = %e, "TLS-RPT: counts not pushed before listing");
        }
        let mut reports: Vec<(Day, String)> = store
            .days()
            .await
            .map_err(shared_err)?
            .into_iter()
            .filter_map(|(d, domain)| d.parse::<Day>().ok().map(|d| (d, domain)))
            .collect();
        reports.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = Vec::new();
        for (day, domain) in reports {
            let aggs = self.aggregates(day, &domain).await?;
            let record: Option<SentRecord> = store
                .state(&day.to_string(), &domain)
                .await
                .map_err(shared_err)?
                .and_then(|v| serde_json::from_slice(&v).ok());
            out.push(summary(day, today, domain, &aggs, record));
        }
        Ok(out)
    }

    /// The report JSON for `domain` on `day` (default: the latest day with
    /// data for it): [`Self::show`], or in cluster mode the report of every
    /// node's counts summed, with the report-id the sending node will use
    /// (fixed in the shared send state once the day is over).
    pub async fn report_json(
        &self,
        domain: &str,
        day: Option<Day>,
    ) -> Result<serde_json::Value, TlsRptError> {
        let Some(shared) = &self.shared else {
            return self.show(domain, day);
        };
        let domain = Domain::parse(domain)
            .map_err(|_| TlsRptError::InvalidDomain(domain.to_owned()))?
            .as_str()
            .to_owned();
        let store = shared.store();
        let shared_err = |e: crate::shared::SharedError| TlsRptError::Shared(e.0);
        if let Err(e) = shared.sync.push().await {
            tracing::debug!(error = %e, "TLS-RPT: counts not pushed before showing");
        }
        let day = match day {
            Some(d) => d,
            None => store
                .days()
                .await
                .map_err(shared_err)?
                .into_iter()
                .filter(|(_, d)| *d == domain)
                .filter_map(|(day, _)| day.parse::<Day>().ok())
                .max()
                .ok_or_else(|| TlsRptError::NoData {
                    domain: domain.clone(),
                    day: "any day".to_owned(),
                })?,
        };
        let aggs = self.aggregates(day, &domain).await?;
        if aggs.is_empty() {
            return Err(TlsRptError::NoData {
                domain,
                day: day.to_string(),
            });
        }
        let today = Day::of(self.clock.now());
        let report_id = if day < today {
            self.shared_record(shared, day, &domain).await?.report_id
        } else {
            // Still collecting: the id is fixed when the day is over.
            self.settings.info.new_report_id(day, &domain)
        };
        Ok(build_report(&self.settings.info, day, &domain, &report_id, &aggs)?.json)
    }

    /// The shared send state of a finished day's report, created (claimed
    /// briefly, saved, let go) when nobody has started it, so that `show`
    /// and the later send name the same report-id.
    async fn shared_record(
        &self,
        shared: &SharedMode,
        day: Day,
        domain: &str,
    ) -> Result<SentRecord, TlsRptError> {
        let store = shared.store();
        let shared_err = |e: crate::shared::SharedError| TlsRptError::Shared(e.0);
        let day_s = day.to_string();
        let decode = |v: Vec<u8>| {
            serde_json::from_slice::<SentRecord>(&v)
                .map_err(|e| TlsRptError::corrupt(&report_key(day, domain), e))
        };
        if let Some(v) = store.state(&day_s, domain).await.map_err(shared_err)? {
            return decode(v);
        }
        if let Some(claim) = store
            .claim(&day_s, domain, shared.lease)
            .await
            .map_err(shared_err)?
        {
            let rec = match claim.record {
                Some(v) => decode(v)?,
                None => {
                    let rec = self.local_or_fresh(day, domain)?;
                    self.save(day, &rec).await?;
                    rec
                }
            };
            store.release(&day_s, domain).await.map_err(shared_err)?;
            return Ok(rec);
        }
        // Another node claimed it in between: its record.
        match store.state(&day_s, domain).await.map_err(shared_err)? {
            Some(v) => decode(v),
            None => Err(TlsRptError::Shared(format!(
                "the report for {domain} on {day} is held by another node and has no state yet"
            ))),
        }
    }

    /// Deletes aggregates and states of days before `day`.
    async fn prune(&self, day: Day) -> Result<(), TlsRptError> {
        self.parts.recorder.prune_before(day)?;
        if let Some(shared) = &self.shared {
            shared
                .store()
                .prune_before(&day.to_string())
                .await
                .map_err(|e| TlsRptError::Shared(e.0))?;
        }
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
