//! The scheduler: a thin loop over the pure functions of [`crate::schedule`].
//! It `select!`s over shutdown, a kick, the timer and finished attempts
//! (STYLE 7). Each attempt is recorded durably, with its retry time, before
//! delivery starts, so a crash mid-delivery neither loses the message nor
//! forgets the schedule; delivered recipients are written down before the
//! next attempt can start, so they are never delivered twice.

use crate::dsn::{self, Action, DsnRecipient, DsnRequest};
use crate::schedule::{backoff, claim_due, next_due};
use crate::{
    Attempt, Deliver, DeliveryJob, Edit, LocalMessage, MessageData, Queue, QueueError, QueueRecord,
    REPLY_LIMIT, RecipientOutcome, RecipientResult, RecipientStatus, cap_outcomes, truncate_text,
};
use portcullis_types::{Clock, QueueId, ReversePath};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

// Locally made mail (DSNs here, TLS reports in portcullis-tlsrpt) enters
// the queue through `Queue::enqueue_local`.

/// How the scheduler retries and gives up.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Our host name (Reporting-MTA and MAILER-DAEMON of DSNs).
    pub hostname: String,
    /// Waits between attempts; the last repeats.
    pub retry: Vec<Duration>,
    /// After this long a message bounces.
    pub max_age: Duration,
    /// One delay DSN after this long.
    pub delay_warning: Duration,
    /// Messages in delivery at once.
    pub max_concurrent: usize,
}

/// Counters of the scheduler, rendered into the metrics page by
/// [`Queue::render_metrics`](crate::Queue::render_metrics).
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// Recipients delivered.
    pub delivered: AtomicU64,
    /// Recipient attempts deferred.
    pub deferred: AtomicU64,
    /// Recipients failed permanently (including expiry).
    pub failed: AtomicU64,
    /// DSNs queued (failure, delay).
    pub dsns: AtomicU64,
    /// Delivery attempts started.
    pub attempts: AtomicU64,
}

/// Runs until `shutdown`.
pub async fn run<D: Deliver>(
    queue: Queue,
    deliver: Arc<D>,
    settings: Arc<SchedulerSettings>,
    clock: Arc<dyn Clock>,
    metrics: Arc<QueueMetrics>,
    shutdown: CancellationToken,
) {
    let mut busy: HashSet<QueueId> = HashSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<QueueId>();
    let max = settings.max_concurrent.max(1);
    loop {
        let now_ms = unix_millis(clock.now());
        let now = now_ms / 1000;
        let free = max.saturating_sub(busy.len());
        for id in queue.with_index(|i| claim_due(i, now, &busy, free)) {
            busy.insert(id);
            let (queue, deliver, settings, clock, metrics, done) = (
                queue.clone(),
                deliver.clone(),
                settings.clone(),
                clock.clone(),
                metrics.clone(),
                done_tx.clone(),
            );
            let span = tracing::info_span!("delivery", queue_id = %id);
            tokio::spawn(
                async move {
                    if let Err(e) = attempt(
                        &queue,
                        deliver.as_ref(),
                        &settings,
                        clock.as_ref(),
                        &metrics,
                        id,
                    )
                    .await
                    {
                        error!(error = %e, "delivery attempt could not be recorded");
                    }
                    let _ = done.send(id);
                }
                .instrument(span),
            );
        }
        let wait = if busy.len() >= max {
            Duration::from_secs(60)
        } else {
            match queue.with_index(|i| next_due(i, &busy)) {
                Some(due) => Duration::from_millis((due * 1000).saturating_sub(now_ms))
                    .max(Duration::from_millis(20)),
                None => Duration::from_secs(3600),
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = queue.kicked() => {}
            Some(id) = done_rx.recv() => { busy.remove(&id); }
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
        }
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a message whose body is missing from the store waits before it
/// is looked at again: it is kept for the operator, not retried in a loop.
pub const PARK: Duration = Duration::from_secs(24 * 3600);

/// One attempt at one message, start to finish.
///
/// Every write is a conditional edit of the record as it is at that moment
/// ([`Queue::modify`]), never a copy read before delivery: an operator's
/// `queue retry` during the attempt keeps its new time, and a `queue
/// delete` during the attempt stays a deletion (the results are dropped
/// and logged). A message whose body is missing is never delivered: it is
/// logged as an error and parked for [`PARK`] with the reason in its
/// `last_error`.
pub async fn attempt<D: Deliver>(
    queue: &Queue,
    deliver: &D,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    id: QueueId,
) -> Result<(), QueueError> {
    let snapshot = match queue.get(id) {
        Ok(r) => r,
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message left the queue before its attempt");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if snapshot.pending().is_empty() {
        return Ok(());
    }
    let message = match queue.message_data(id) {
        Ok(m) => m,
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message deleted before its attempt");
            return Ok(());
        }
        Err(e @ QueueError::BodyMissing { .. }) => {
            error!(queue_id = %id, error = %e, "message body missing from the store: not delivered, kept for the operator");
            return park(queue, clock, id, &e).await;
        }
        Err(e) => return Err(e),
    };

    // Record the attempt and the next retry before connecting (STYLE 7).
    let now = clock.unix_secs();
    let started = queue
        .modify(id, |r| {
            if r.pending().is_empty() {
                return Edit::Keep;
            }
            r.attempts += 1;
            r.next_attempt = now + backoff(&settings.retry, r.attempts).as_secs();
            r.push_attempt(Attempt {
                number: r.attempts,
                at: now,
                outcomes: Vec::new(),
            });
            Edit::Write
        })
        .await?;
    let record = match started {
        Some((record, Edit::Write)) => record,
        Some(_) => return Ok(()),
        None => {
            info!(queue_id = %id, "message deleted before its attempt");
            return Ok(());
        }
    };
    metrics.attempts.fetch_add(1, Relaxed);

    let pending = record.pending();
    let job = DeliveryJob {
        id,
        envelope: Arc::new(record.envelope.clone()),
        pending: pending.clone(),
        message: message.clone(),
        attempt: record.attempts,
    };
    let results = deliver.deliver(job).await;
    let found = Found {
        attempt: record.attempts,
        pending: &pending,
        results: &results,
        now: clock.unix_secs(),
        max_age: settings.max_age,
    };

    // Plan on the record as it is now (the operator may have acted while
    // delivery ran), so the notifications match what will be written.
    let mut planned = match queue.get(id) {
        Ok(r) => r,
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message deleted during its attempt: results dropped");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let applied = found.apply(&mut planned);
    applied.log(metrics, planned.next_attempt);
    if !applied.failed.is_empty() {
        send_dsn(
            queue,
            settings,
            clock,
            metrics,
            &planned,
            &message,
            &applied.failed,
            Action::Failed,
        )
        .await?;
    }
    let deferred: Vec<(usize, (u8, u16, u16))> = planned
        .pending()
        .into_iter()
        .map(|i| (i, (4, 0, 0)))
        .collect();
    let warn_delay =
        !deferred.is_empty() && !planned.delay_warned && applied.age >= settings.delay_warning;
    if warn_delay {
        send_dsn(
            queue,
            settings,
            clock,
            metrics,
            &planned,
            &message,
            &deferred,
            Action::Delayed,
        )
        .await?;
    }

    let done = queue
        .modify(id, |r| {
            found.apply(r);
            if warn_delay {
                r.delay_warned = true;
            }
            let keep_failed_bounce = r.envelope.sender == ReversePath::Null
                && r.recipients
                    .iter()
                    .any(|s| s.status == RecipientStatus::Failed);
            if r.is_finished() && !keep_failed_bounce {
                Edit::Remove
            } else {
                Edit::Write
            }
        })
        .await?;
    match done {
        None => info!(queue_id = %id, "message deleted during its attempt: results dropped"),
        Some((_, Edit::Remove)) => info!("removed from the queue: every recipient done"),
        Some((r, _)) if r.is_finished() => {
            // A notification that cannot be delivered stays visible (never
            // bounced: that would loop) until an operator deletes it.
            warn!("undeliverable notification kept in the queue for the operator");
        }
        Some(_) => {}
    }
    Ok(())
}

/// Parks a message that cannot be sent as stored (its body is missing):
/// far next attempt, the reason in `last_error` for `queue list/show`.
async fn park(
    queue: &Queue,
    clock: &dyn Clock,
    id: QueueId,
    why: &QueueError,
) -> Result<(), QueueError> {
    let until = clock.unix_secs() + PARK.as_secs();
    let note = format!(
        "not delivered: {why}; kept for the operator (queue show / queue delete), looked at again in {}h",
        PARK.as_secs() / 3600
    );
    queue
        .modify(id, |r| {
            r.next_attempt = until;
            r.last_error = Some(note.clone());
            Edit::Write
        })
        .await?;
    Ok(())
}

/// What one attempt found out, as a pure edit of a record (it is applied
/// twice: once to plan the notifications, once in the conditional write).
struct Found<'a> {
    attempt: u32,
    pending: &'a [usize],
    results: &'a [RecipientResult],
    now: u64,
    max_age: Duration,
}

/// One recipient's outcome, for the logs and metrics.
enum Event {
    Delivered(String, String, String),
    Deferred(String, Option<String>, String),
    Failed(String, Option<String>, String),
}

/// The result of [`Found::apply`].
struct Applied {
    /// Recipients that failed (or expired) in this attempt, for the DSN.
    failed: Vec<(usize, (u8, u16, u16))>,
    events: Vec<Event>,
    expired: usize,
    age: Duration,
}

impl Applied {
    fn log(&self, metrics: &QueueMetrics, next_attempt: u64) {
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

impl Found<'_> {
    /// Writes the outcomes into `record` for recipients it still has
    /// pending (an outcome already recorded is never overwritten), fills
    /// this attempt's history entry, and fails what is still pending when
    /// the message is past `max_age`. Texts are cut to
    /// [`crate::REPLY_LIMIT`].
    fn apply(&self, record: &mut QueueRecord) -> Applied {
        let mut failed = Vec::new();
        let mut events = Vec::new();
        let mut outcomes = Vec::new();
        for &i in self.pending {
            let outcome = self
                .results
                .iter()
                .find(|r| r.index == i)
                .map(|r| r.outcome.clone())
                .unwrap_or(RecipientOutcome::Deferred {
                    remote_mta: None,
                    reason: "no result from delivery".into(),
                });
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
            let cut = |s: &str| truncate_text(s, REPLY_LIMIT);
            let cut_host = |h: Option<String>| h.map(|h| truncate_text(&h, 255));
            match outcome {
                RecipientOutcome::Delivered { remote_mta, reply } => {
                    let (remote_mta, reply) = (truncate_text(&remote_mta, 255), cut(&reply));
                    outcomes.push(format!("{rcpt}: delivered to {remote_mta}: {reply}"));
                    state.status = RecipientStatus::Delivered;
                    state.last_reply = Some(reply.clone());
                    state.remote_mta = Some(remote_mta.clone());
                    events.push(Event::Delivered(rcpt, remote_mta, reply));
                }
                RecipientOutcome::Deferred { remote_mta, reason } => {
                    let (remote_mta, reason) = (cut_host(remote_mta), cut(&reason));
                    outcomes.push(format!("{rcpt}: deferred: {reason}"));
                    state.status = RecipientStatus::Deferred;
                    state.last_reply = Some(reason.clone());
                    state.remote_mta = remote_mta.clone();
                    record.last_error = Some(reason.clone());
                    events.push(Event::Deferred(rcpt, remote_mta, reason));
                }
                RecipientOutcome::Failed {
                    remote_mta,
                    status,
                    reason,
                } => {
                    let (remote_mta, reason) = (cut_host(remote_mta), cut(&reason));
                    outcomes.push(format!("{rcpt}: failed: {reason}"));
                    state.status = RecipientStatus::Failed;
                    state.last_reply = Some(reason.clone());
                    state.remote_mta = remote_mta.clone();
                    record.last_error = Some(reason.clone());
                    failed.push((i, status));
                    events.push(Event::Failed(rcpt, remote_mta, reason));
                }
            }
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
        let mut expired = 0;
        if age >= self.max_age {
            // RFC 5321 §4.5.4.1: give up; what is still pending bounces.
            let gone = fail_pending(record, (4, 4, 7), |state| {
                truncate_text(
                    &format!(
                        "gave up after {}s in the queue; last error: {}",
                        age.as_secs(),
                        state.last_reply.as_deref().unwrap_or("none")
                    ),
                    REPLY_LIMIT,
                )
            });
            expired = gone.len();
            failed.extend(gone);
        }
        Applied {
            failed,
            events,
            expired,
            age,
        }
    }
}

/// Builds and queues a DSN about `which` recipients (if RFC 3461 allows one).
#[allow(clippy::too_many_arguments)]
async fn send_dsn(
    queue: &Queue,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    record: &QueueRecord,
    message: &MessageData,
    which: &[(usize, (u8, u16, u16))],
    action: Action,
) -> Result<(), QueueError> {
    let now = clock.now();
    let recipients: Vec<DsnRecipient<'_>> = which
        .iter()
        .filter_map(|&(i, status)| {
            let rcpt = record.envelope.recipients.get(i)?;
            let state = record.recipients.get(i)?;
            Some(DsnRecipient {
                recipient: rcpt,
                action,
                status,
                remote_mta: state.remote_mta.as_deref(),
                diagnostic: state.last_reply.as_deref(),
                last_attempt: Some(now),
                will_retry_until: (action == Action::Delayed).then(|| {
                    UNIX_EPOCH + Duration::from_secs(record.envelope.received_at) + settings.max_age
                }),
            })
        })
        .collect();
    // A file that cannot be read back still gets the sender told: the
    // notification then returns what is in memory (the headers).
    let returned = match message.returnable(dsn::MAX_RETURNED).await {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(queue_id = %record.envelope.id, error = %e, "could not read the message back for its notification; returning its headers");
            std::borrow::Cow::Borrowed(message.head())
        }
    };
    let request = DsnRequest {
        reporting_mta: &settings.hostname,
        envelope: &record.envelope,
        message: &returned,
        size: message.len(),
        recipients,
        now,
        max_returned: dsn::MAX_RETURNED,
    };
    let Some(report) = dsn::build(&request) else {
        return Ok(());
    };
    // A fresh id for the DSN, never one in use (check-and-insert).
    let dsn_id = queue
        .enqueue_local(LocalMessage {
            origin: portcullis_types::Origin::Bounce,
            sender: ReversePath::Null,
            recipient: report.to.clone(),
            body: if dsn::needs_8bit(&report) {
                portcullis_types::BodyType::EightBitMime
            } else {
                portcullis_types::BodyType::SevenBit
            },
            smtputf8: report.smtputf8,
            hostname: &settings.hostname,
            message: &report.message,
            now,
        })
        .await?;
    metrics.dsns.fetch_add(1, Relaxed);
    info!(dsn_id = %dsn_id, to = %report.to, action = ?action, "delivery status notification queued");
    Ok(())
}

/// Removes a message on the operator's word; with `bounce`, the sender gets
/// a failure DSN for every recipient not yet delivered ("deleted by the
/// postmaster", 5.0.0). The record is removed first, conditionally, and the
/// DSN is built from the record as it was removed, so it never names a
/// recipient an attempt delivered meanwhile; an attempt in flight drops its
/// results when it finds the message gone.
pub async fn delete(
    queue: &Queue,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    id: QueueId,
    bounce: bool,
) -> Result<(), QueueError> {
    // The body is read before the record goes (afterwards it is gone too).
    let message = if bounce {
        match queue.message_data(id) {
            Ok(m) => m,
            Err(e @ QueueError::BodyMissing { .. }) => {
                warn!(queue_id = %id, error = %e, "bouncing a message whose body is missing: the notification returns none of it");
                MessageData::default()
            }
            Err(e) => return Err(e),
        }
    } else {
        MessageData::default()
    };
    let Some((mut record, _)) = queue.modify(id, |_| Edit::Remove).await? else {
        return Err(QueueError::NotFound(id));
    };
    if bounce {
        let failed = fail_pending(&mut record, (5, 0, 0), |_| {
            "deleted from the queue by the postmaster".into()
        });
        metrics.failed.fetch_add(failed.len() as u64, Relaxed);
        if !failed.is_empty() {
            send_dsn(
                queue,
                settings,
                clock,
                metrics,
                &record,
                &message,
                &failed,
                Action::Failed,
            )
            .await?;
        }
    }
    info!(queue_id = %id, bounce, "deleted by the postmaster");
    Ok(())
}

/// Marks every pending recipient failed with `status` and the reason `why`
/// gives it; returns them for the DSN.
fn fail_pending(
    record: &mut QueueRecord,
    status: (u8, u16, u16),
    why: impl Fn(&crate::RecipientState) -> String,
) -> Vec<(usize, (u8, u16, u16))> {
    let pending = record.pending();
    for &i in &pending {
        let state = &mut record.recipients[i];
        state.last_reply = Some(why(state));
        state.status = RecipientStatus::Failed;
    }
    pending.into_iter().map(|i| (i, status)).collect()
}
