//! Sending the daily reports (RFC 7489 §7.2): once a UTC day is over and a
//! random delay within the send window has passed (picked once per day and
//! stored, so a restart does not re-roll it), each (day, domain) with
//! aggregates gets its report: every `mailto:` of the domain's `rua` is
//! checked (§7.1 external destinations, the `!size` limit) and those that
//! pass get the signed message through the queue.
//!
//! **At most once** on a single node. The report's state (`sending`, the
//! destinations left) is written and committed before anything is queued
//! (STYLE 7: record the attempt first): on a single node a crash in
//! between loses the rest of that report, never doubles it. In a cluster
//! ([`crate::SendStates`] of `portcullis-cluster`) the node taking over a
//! report its holder left `sending` queues it to the destinations left,
//! with the same report id, so a receiver drops a second copy by id. Only a temporary DNS
//! failure while checking destinations leaves a report pending (tried
//! again by the next pass, at most [`SenderSettings::max_attempts`]
//! times). Passes are serialised, so the loop and an operator's
//! `dmarc send` never race. Once decided, a report's aggregates are
//! removed; its state stays for [`SenderSettings::retention_days`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_auth::DkimSigner;
use portcullis_dns::Resolver;
use portcullis_store::{Store, Tree, TreeName};
use portcullis_tlsrpt::Day;
use portcullis_types::Clock;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backend::{Destination, LocalSendStates, ReportSource, SendState, SendStates, Taken};
use crate::{
    Authorization, DmarcError, DmarcMailer, DmarcRecorder, PendingReport, ReportInfo,
    ReportMessage, authorize, build_report, build_report_message, gzip, mailto_address, report_xml,
};

/// The settings of sending (STYLE 22: a value with defaults).
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// Who the reports name.
    pub info: ReportInfo,
    /// The From address of report mail.
    pub from: String,
    /// Reports leave at a random time within this long after 00:00 UTC.
    pub send_window: Duration,
    /// Passes that may meet a temporary DNS failure before a report is
    /// given up (default 8).
    pub max_attempts: u32,
    /// Days the sending state is kept (default 14).
    pub retention_days: i64,
    /// How often [`run`] looks for due reports (default 5 minutes).
    pub poll_interval: Duration,
}

impl SenderSettings {
    /// The defaults, reporting as `info` from `from`.
    pub fn new(info: ReportInfo, from: &str) -> SenderSettings {
        SenderSettings {
            info,
            from: from.to_owned(),
            send_window: Duration::from_secs(4 * 3600),
            max_attempts: 8,
            retention_days: 14,
            poll_interval: Duration::from_secs(300),
        }
    }
}

/// What a pass did for one report or destination (logs, metrics and
/// `dmarc send`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SendOutcome {
    /// Queued for `to`.
    Sent {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// The destination address.
        to: String,
        /// The queue id of the report mail.
        queue_id: String,
    },
    /// Not sent to `to`: the destination did not agree (RFC 7489 §7.1),
    /// its URI is not a usable `mailto:`, or the report is over its
    /// `!size` limit.
    Skipped {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// The destination as published.
        to: String,
        /// Why.
        reason: String,
    },
    /// Not sent for now (a temporary failure); tried again later unless
    /// `gave_up`.
    Failed {
        /// The UTC day.
        day: String,
        /// The policy domain.
        domain: String,
        /// Why.
        error: String,
        /// No more attempts.
        gave_up: bool,
    },
}

impl SendOutcome {
    fn label(&self) -> &'static str {
        match self {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Skipped { .. } => "skipped",
            SendOutcome::Failed { gave_up: true, .. } => "gave_up",
            SendOutcome::Failed { .. } => "failed",
        }
    }
}

/// The per-day send delay, picked once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DaySchedule {
    delay_secs: u64,
}

/// Sends the daily reports. Share it with `Arc`.
pub struct DmarcSender<R, M> {
    store: Store,
    recorder: DmarcRecorder,
    source: Arc<dyn ReportSource>,
    states: Arc<dyn SendStates>,
    resolver: R,
    mailer: M,
    signer: DkimSigner,
    settings: SenderSettings,
    sent: Tree,
    clock: Arc<dyn Clock>,
    pass: tokio::sync::Mutex<()>,
}

impl<R, M> std::fmt::Debug for DmarcSender<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmarcSender")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn schedule_key(day: Day) -> Vec<u8> {
    format!("d/{day}").into_bytes()
}

impl<R: Resolver, M: DmarcMailer> DmarcSender<R, M> {
    /// A sender of `recorder`'s aggregates, its state in `store`'s
    /// `dmarc.sent` tree, signing with `signer` (`d=` the From's domain).
    pub fn new(
        store: Store,
        recorder: DmarcRecorder,
        resolver: R,
        mailer: M,
        signer: DkimSigner,
        settings: SenderSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<DmarcSender<R, M>, DmarcError> {
        let sent = store.tree(TreeName::DmarcSent)?;
        let states = Arc::new(LocalSendStates::open(&store)?);
        Ok(DmarcSender {
            store,
            source: Arc::new(recorder.clone()),
            states,
            recorder,
            resolver,
            mailer,
            signer,
            settings,
            sent,
            clock,
            pass: tokio::sync::Mutex::new(()),
        })
    }

    /// The same sender on another backend: the aggregates from `source`
    /// and the send state in `states` (a cluster's, summed over its nodes
    /// and held by one node at a time) instead of this node's store.
    pub fn with_backend(
        mut self,
        source: Arc<dyn ReportSource>,
        states: Arc<dyn SendStates>,
    ) -> DmarcSender<R, M> {
        self.source = source;
        self.states = states;
        self
    }

    /// The aggregates not yet reported (`dmarc list`), oldest day first.
    pub async fn list(&self) -> Result<Vec<PendingReport>, DmarcError> {
        self.source.pending().await
    }

    /// Sends what is due at `now`.
    pub async fn send_due(&self, now: SystemTime) -> Vec<SendOutcome> {
        self.pass(now, false).await
    }

    /// Sends every report of a finished day now, ignoring the random delay
    /// (`dmarc send`); nothing is sent twice.
    pub async fn send_now(&self) -> Vec<SendOutcome> {
        self.pass(self.clock.now(), true).await
    }

    async fn pass(&self, now: SystemTime, ignore_delay: bool) -> Vec<SendOutcome> {
        let _pass = self.pass.lock().await;
        let mut outcomes = Vec::new();
        if let Err(e) = self.pass_inner(now, ignore_delay, &mut outcomes).await {
            tracing::warn!(error = %e, "DMARC reports: send pass failed");
        }
        if let Err(e) = self.store.commit().await {
            tracing::warn!(error = %e, "DMARC reports: commit failed");
        }
        for o in &outcomes {
            self.recorder.metrics().report(o.label());
        }
        outcomes
    }

    async fn pass_inner(
        &self,
        now: SystemTime,
        ignore_delay: bool,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), DmarcError> {
        let today = Day::of(now);
        self.prune(today)?;
        let settle = self.source.settle();
        for pending in self.source.pending().await? {
            if pending.day >= today || now < pending.day.end() + settle {
                continue;
            }
            if !ignore_delay && now < pending.day.end() + self.delay(pending.day)? {
                continue;
            }
            let record = match self.states.take(pending.day, &pending.domain).await? {
                Taken::Yours(record) => record,
                // Decided already (rows counted after the report was
                // made, at midnight): never a second report.
                Taken::Decided => {
                    self.source.finish(pending.day, &pending.domain).await?;
                    continue;
                }
                Taken::Elsewhere => continue,
            };
            if let Err(e) = self.send_one(now, &pending, record, outcomes).await {
                tracing::warn!(error = %e, day = %pending.day, domain = %pending.domain, "DMARC report not sent");
            }
        }
        Ok(())
    }

    /// Checks the destinations, decides, records, then queues. A report
    /// taken over while `sending` (its holder stopped midway) goes to the
    /// destinations left, with the same report id.
    async fn send_one(
        &self,
        now: SystemTime,
        p: &PendingReport,
        record: Option<SendState>,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<(), DmarcError> {
        let (day, domain) = (p.day.to_string(), p.domain.clone());
        let mut record = record.unwrap_or_else(|| SendState {
            report_id: new_report_id(&self.settings.info, p.day, &p.domain),
            state: "pending".to_owned(),
            attempts: 0,
            last_error: None,
            decided_at: None,
            remaining: Vec::new(),
        });
        // Taken over midway: what the first holder queued counts as sent.
        let resumed = record.state == "sending";
        let to = if resumed {
            std::mem::take(&mut record.remaining)
        } else {
            match self.destinations(now, p, &mut record, outcomes).await? {
                Some(to) => to,
                None => return Ok(()),
            }
        };
        let rows = self.source.rows(p.day, &p.domain).await?;
        let report = build_report(
            &self.settings.info,
            p.day,
            &p.domain,
            &record.report_id,
            &p.published,
            &rows,
        );
        let gz = gzip(report_xml(&report, p.published.pct).as_bytes())?;
        let mut messages = Vec::new();
        for dest in to {
            let message = build_report_message(
                ReportMessage {
                    domain: &p.domain,
                    submitter: &self.settings.info.submitter,
                    report_id: &record.report_id,
                    from: &self.settings.from,
                    to: &dest.address,
                    date: now,
                    day: p.day,
                },
                &gz,
                &self.signer,
            )?;
            // RFC 7489 §6.2 `!size`: the limit is on the message.
            if dest.max_size > 0 && message.len() as u64 > dest.max_size {
                outcomes.push(SendOutcome::Skipped {
                    day: day.clone(),
                    domain: domain.clone(),
                    to: dest.address,
                    reason: format!(
                        "{} octets is over the limit of {}",
                        message.len(),
                        dest.max_size
                    ),
                });
                continue;
            }
            messages.push((dest, message));
        }
        // Decided: written (and committed) before anything is queued. On a
        // single node `sending` is final; in a cluster a node taking the
        // report over finishes the destinations left.
        let any_message = !messages.is_empty();
        record.state = "sending".to_owned();
        record.remaining = messages.iter().map(|(d, _)| d.clone()).collect();
        if any_message && !self.states.save(p.day, &p.domain, &record, false).await? {
            return Ok(());
        }
        for (dest, message) in messages {
            if !self.states.renew(p.day, &p.domain).await? {
                tracing::warn!(%day, %domain, "DMARC report taken over by another node while sending: stopping");
                return Ok(());
            }
            match self.mailer.submit(&dest.address, message).await {
                Ok(queue_id) => outcomes.push(SendOutcome::Sent {
                    day: day.clone(),
                    domain: domain.clone(),
                    to: dest.address.clone(),
                    queue_id,
                }),
                Err(error) => {
                    tracing::warn!(%day, %domain, to = %dest.address, %error, "DMARC report could not be queued");
                    outcomes.push(SendOutcome::Failed {
                        day: day.clone(),
                        domain: domain.clone(),
                        error,
                        gave_up: true,
                    });
                }
            }
            record.remaining.retain(|d| d != &dest);
            if !self.states.save(p.day, &p.domain, &record, false).await? {
                return Ok(());
            }
        }
        record.state = if any_message || resumed {
            "sent"
        } else {
            "no-destination"
        }
        .to_owned();
        record.decided_at = Some(portcullis_types::date::unix_secs(now));
        self.states.save(p.day, &p.domain, &record, true).await?;
        self.source.finish(p.day, &p.domain).await?;
        Ok(())
    }

    /// The destinations that may receive the report (RFC 7489 §7.1), every
    /// one checked before anything leaves; `None` after a temporary DNS
    /// failure (recorded: tried again later, or given up).
    async fn destinations(
        &self,
        now: SystemTime,
        p: &PendingReport,
        record: &mut SendState,
        outcomes: &mut Vec<SendOutcome>,
    ) -> Result<Option<Vec<Destination>>, DmarcError> {
        let (day, domain) = (p.day.to_string(), p.domain.clone());
        let mut to = Vec::new();
        for rua in &p.published.rua {
            let Some(address) = mailto_address(&rua.uri) else {
                outcomes.push(SendOutcome::Skipped {
                    day: day.clone(),
                    domain: domain.clone(),
                    to: rua.uri.clone(),
                    reason: "not a mailto: address".to_owned(),
                });
                continue;
            };
            match authorize(&self.resolver, &p.domain, &address).await {
                Authorization::Internal | Authorization::Authorized => {
                    to.push(Destination {
                        address,
                        max_size: rua.max_size,
                    });
                }
                Authorization::NotAuthorized(reason) => {
                    tracing::info!(%day, %domain, to = %address, %reason, "DMARC report: external destination not authorized");
                    outcomes.push(SendOutcome::Skipped {
                        day: day.clone(),
                        domain: domain.clone(),
                        to: address,
                        reason,
                    });
                }
                Authorization::Temporary(e) => {
                    record.attempts += 1;
                    record.last_error = Some(e.to_string());
                    let gave_up = record.attempts >= self.settings.max_attempts;
                    if gave_up {
                        record.state = "failed".to_owned();
                        record.decided_at = Some(portcullis_types::date::unix_secs(now));
                    }
                    self.states.save(p.day, &p.domain, record, gave_up).await?;
                    if gave_up {
                        self.source.finish(p.day, &p.domain).await?;
                    }
                    outcomes.push(SendOutcome::Failed {
                        day,
                        domain,
                        error: e.to_string(),
                        gave_up,
                    });
                    return Ok(None);
                }
            }
        }
        Ok(Some(to))
    }

    /// The day's send delay, picked at random within the window once.
    fn delay(&self, day: Day) -> Result<Duration, DmarcError> {
        let key = schedule_key(day);
        if let Some(v) = self.sent.get(&key)?
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
            .map_err(|e| DmarcError::corrupt(&key, e))?;
        self.sent.insert(key, v)?;
        Ok(Duration::from_secs(delay_secs))
    }

    /// Forgets the state of days older than the retention.
    fn prune(&self, today: Day) -> Result<(), DmarcError> {
        let oldest =
            Day::from_days_since_epoch(today.days_since_epoch() - self.settings.retention_days);
        for entry in self.sent.iter() {
            let (k, _) = entry?;
            let text = String::from_utf8_lossy(&k);
            let day = text.get(2..12).and_then(|d| d.parse::<Day>().ok());
            if day.is_some_and(|d| d < oldest) {
                self.sent.remove(k)?;
            }
        }
        Ok(())
    }
}

/// A fresh report-id: `<day>.<domain>.<random>@<submitter>`.
fn new_report_id(info: &ReportInfo, day: Day, domain: &str) -> String {
    let random: u64 = rand::rng().random();
    format!("{day}.{domain}.{random:016x}@{}", info.submitter)
}

/// Sends due reports until `shutdown`, every `poll_interval`.
pub async fn run<R: Resolver, M: DmarcMailer>(
    sender: Arc<DmarcSender<R, M>>,
    shutdown: CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let now = sender.clock.now();
        sender.send_due(now).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(sender.settings.poll_interval) => {}
        }
    }
    tracing::debug!("DMARC report sender stopped");
}
