//! What one attempt found out, as a pure edit of a queue record: each
//! pending recipient's outcome written in (never over one already
//! recorded), the attempt's history entry filled, and what is still
//! pending failed once the message is past its lifetime. The edit is
//! applied twice: once to plan the notifications, once in the conditional
//! write, so both see the record as it is at that moment.

use super::settings::QueueMetrics;
use crate::{
    QueueRecord, REPLY_LIMIT, RecipientOutcome, RecipientResult, RecipientState, RecipientStatus,
    cap_outcomes, truncate_text,
};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{info, warn};

/// An RFC 3463 status.
pub(crate) type Status = (u8, u16, u16);

/// What one attempt found out.
pub(crate) struct Found<'a> {
    /// The attempt's number (its history entry).
    pub attempt: u32,
    /// The recipients it was about.
    pub pending: &'a [usize],
    /// What delivery said about them.
    pub results: &'a [RecipientResult],
    /// When it finished (Unix seconds).
    pub now: u64,
    /// The message's lifetime in the queue.
    pub max_age: Duration,
}

/// One recipient's outcome, for the logs and metrics.
enum Event {
    Delivered(String, String, String),
    Deferred(String, Option<String>, String),
    Failed(String, Option<String>, String),
}

/// The result of [`Found::apply`].
pub(crate) struct Applied {
    /// Recipients that failed (or expired) in this attempt, for the DSN.
    pub failed: Vec<(usize, Status)>,
    events: Vec<Event>,
    expired: usize,
    /// How long the message has been in the queue.
    pub age: Duration,
}

impl Applied {
    /// Logs each recipient's outcome and counts it.
    pub(crate) fn log(&self, metrics: &QueueMetrics, next_attempt: u64) {
        for e in &self.events {
            match e {
                Event::Delivered(rcpt, mx, reply) => {
                    metrics.delivered.fetch_add(1, Relaxed);
                    info!(rcpt = %rcpt, mx = %mx, reply = %reply, "delivered");
                }
                Event::Deferred(rcpt, mx, reason) => {
                    metrics.deferred.fetch_add(1, Relaxed);
                    info!(rcpt = %rcpt, mx = mx.as_deref().unwrap_or("-"), reason = %reason, next_attempt, "deferred");
                }
                Event::Failed(rcpt, mx, reason) => {
                    metrics.failed.fetch_add(1, Relaxed);
                    warn!(rcpt = %rcpt, mx = mx.as_deref().unwrap_or("-"), reason = %reason, "failed permanently");
                }
            }
        }
        if self.expired > 0 {
            warn!(recipients = self.expired, "expired");
            metrics.failed.fetch_add(self.expired as u64, Relaxed);
        }
    }
}

/// One recipient settled by an outcome.
struct Settled {
    /// The history line.
    line: String,
    event: Event,
    /// The record's new `last_error`, if the outcome was not a delivery.
    error: Option<String>,
    /// The DSN status, if the recipient failed.
    failed: Option<Status>,
}

impl Found<'_> {
    /// Writes the outcomes into `record` for recipients it still has
    /// pending (an outcome already recorded is never overwritten), fills
    /// this attempt's history entry, and fails what is still pending when
    /// the message is past `max_age`. Texts are cut to
    /// [`crate::REPLY_LIMIT`].
    pub(crate) fn apply(&self, record: &mut QueueRecord) -> Applied {
        let mut failed = Vec::new();
        let mut events = Vec::new();
        let mut outcomes = Vec::new();
        for &i in self.pending {
            let rcpt = record
                .envelope
                .recipients
                .get(i)
                .map(|r| r.address.to_string())
                .unwrap_or_default();
            let Some(state) = record.recipients.get_mut(i) else {
                continue;
            };
            if !state.status.is_pending() {
                continue;
            }
            let settled = settle(state, rcpt, self.outcome_of(i));
            outcomes.push(settled.line);
            events.push(settled.event);
            if let Some(error) = settled.error {
                record.last_error = Some(error);
            }
            failed.extend(settled.failed.map(|status| (i, status)));
        }
        if let Some(entry) = record
            .history
            .iter_mut()
            .rev()
            .find(|a| a.number == self.attempt)
        {
            entry.outcomes = cap_outcomes(outcomes);
        }
        let age = Duration::from_secs(self.now.saturating_sub(record.envelope.received_at));
        let gone = self.expire(record, age);
        let expired = gone.len();
        failed.extend(gone);
        Applied {
            failed,
            events,
            expired,
            age,
        }
    }

    /// Delivery's outcome for recipient `i` (deferred when it gave none).
    fn outcome_of(&self, i: usize) -> RecipientOutcome {
        self.results
            .iter()
            .find(|r| r.index == i)
            .map(|r| r.outcome.clone())
            .unwrap_or(RecipientOutcome::Deferred {
                remote_mta: None,
                reason: "no result from delivery".into(),
            })
    }

    /// RFC 5321 §4.5.4.1: past `max_age`, give up; what is still pending
    /// bounces.
    fn expire(&self, record: &mut QueueRecord, age: Duration) -> Vec<(usize, Status)> {
        if age < self.max_age {
            return Vec::new();
        }
        fail_pending(record, (4, 4, 7), |state| {
            truncate_text(
                &format!(
                    "gave up after {}s in the queue; last error: {}",
                    age.as_secs(),
                    state.last_reply.as_deref().unwrap_or("none")
                ),
                REPLY_LIMIT,
            )
        })
    }
}

/// Writes one outcome into a pending recipient's state.
fn settle(state: &mut RecipientState, rcpt: String, outcome: RecipientOutcome) -> Settled {
    let cut = |s: &str| truncate_text(s, REPLY_LIMIT);
    let cut_host = |h: Option<String>| h.map(|h| truncate_text(&h, 255));
    let (status, reply, remote_mta, settled) = match outcome {
        RecipientOutcome::Delivered { remote_mta, reply } => {
            let (remote_mta, reply) = (truncate_text(&remote_mta, 255), cut(&reply));
            let line = format!("{rcpt}: delivered to {remote_mta}: {reply}");
            let event = Event::Delivered(rcpt, remote_mta.clone(), reply.clone());
            let settled = (line, event, None, None);
            (RecipientStatus::Delivered, reply, Some(remote_mta), settled)
        }
        RecipientOutcome::Deferred { remote_mta, reason } => {
            let (remote_mta, reason) = (cut_host(remote_mta), cut(&reason));
            let line = format!("{rcpt}: deferred: {reason}");
            let event = Event::Deferred(rcpt, remote_mta.clone(), reason.clone());
            let settled = (line, event, Some(reason.clone()), None);
            (RecipientStatus::Deferred, reason, remote_mta, settled)
        }
        RecipientOutcome::Failed {
            remote_mta,
            status,
            reason,
        } => {
            let (remote_mta, reason) = (cut_host(remote_mta), cut(&reason));
            let line = format!("{rcpt}: failed: {reason}");
            let event = Event::Failed(rcpt, remote_mta.clone(), reason.clone());
            let settled = (line, event, Some(reason.clone()), Some(status));
            (RecipientStatus::Failed, reason, remote_mta, settled)
        }
    };
    state.status = status;
    state.last_reply = Some(reply);
    state.remote_mta = remote_mta;
    let (line, event, error, failed) = settled;
    Settled {
        line,
        event,
        error,
        failed,
    }
}

/// Marks every pending recipient failed with `status` and the reason `why`
/// gives it; returns them for the DSN.
pub(crate) fn fail_pending(
    record: &mut QueueRecord,
    status: Status,
    why: impl Fn(&RecipientState) -> String,
) -> Vec<(usize, Status)> {
    let pending = record.pending();
    for &i in &pending {
        let state = &mut record.recipients[i];
        state.last_reply = Some(why(state));
        state.status = RecipientStatus::Failed;
    }
    pending.into_iter().map(|i| (i, status)).collect()
}
