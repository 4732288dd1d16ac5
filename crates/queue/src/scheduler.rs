//! The scheduler: a thin loop over the pure functions of [`crate::schedule`].
//! It `select!`s over shutdown, a kick, the timer and finished attempts
//! (STYLE 7). Each attempt is recorded durably, with its retry time, before
//! delivery starts, so a crash mid-delivery neither loses the message nor
//! forgets the schedule; delivered recipients are written down before the
//! next attempt can start, so they are never delivered twice.

use crate::dsn::{self, Action, DsnRecipient, DsnRequest};
use crate::schedule::{backoff, claim_due, next_due};
use crate::{
    Attempt, Deliver, DeliveryJob, HISTORY_LIMIT, Queue, QueueError, QueueRecord, RecipientOutcome,
    RecipientStatus,
};
use portcullis_types::{Clock, Envelope, Notify, QueueId, Recipient, ReversePath};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

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

/// Counters of the scheduler, rendered by the binary.
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

/// One attempt at one message, start to finish.
pub async fn attempt<D: Deliver>(
    queue: &Queue,
    deliver: &D,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    id: QueueId,
) -> Result<(), QueueError> {
    let mut record = queue.get(id)?;
    let pending = record.pending();
    if pending.is_empty() {
        return Ok(());
    }
    // Record the attempt and the next retry before connecting (STYLE 7).
    let now = clock.unix_secs();
    record.attempts += 1;
    record.next_attempt = now + backoff(&settings.retry, record.attempts).as_secs();
    record.history.push(Attempt {
        at: now,
        outcomes: Vec::new(),
    });
    if record.history.len() > HISTORY_LIMIT {
        record.history.remove(0);
    }
    queue.update(&record).await?;
    metrics.attempts.fetch_add(1, Relaxed);

    let message = Arc::new(queue.message(id)?);
    let job = DeliveryJob {
        id,
        envelope: Arc::new(record.envelope.clone()),
        pending: pending.clone(),
        message: message.clone(),
        attempt: record.attempts,
    };
    let results = deliver.deliver(job).await;

    let mut failed: Vec<(usize, (u8, u16, u16))> = Vec::new();
    let mut outcomes = Vec::new();
    for &i in &pending {
        let outcome = results
            .iter()
            .find(|r| r.index == i)
            .map(|r| r.outcome.clone())
            .unwrap_or(RecipientOutcome::Deferred {
                remote_mta: None,
                reason: "no result from delivery".into(),
            });
        let Some(state) = record.recipients.get_mut(i) else {
            continue;
        };
        let rcpt = record
            .envelope
            .recipients
            .get(i)
            .map(|r| r.address.to_string())
            .unwrap_or_default();
        match outcome {
            RecipientOutcome::Delivered { remote_mta, reply } => {
                metrics.delivered.fetch_add(1, Relaxed);
                info!(rcpt = %rcpt, mx = %remote_mta, reply = %reply, "delivered");
                outcomes.push(format!("{rcpt}: delivered to {remote_mta}: {reply}"));
                state.status = RecipientStatus::Delivered;
                state.last_reply = Some(reply);
                state.remote_mta = Some(remote_mta);
            }
            RecipientOutcome::Deferred { remote_mta, reason } => {
                metrics.deferred.fetch_add(1, Relaxed);
                info!(rcpt = %rcpt, mx = remote_mta.as_deref().unwrap_or("-"), reason = %reason, next_attempt = record.next_attempt, "deferred");
                outcomes.push(format!("{rcpt}: deferred: {reason}"));
                state.status = RecipientStatus::Deferred;
                record.last_error = Some(reason.clone());
                state.last_reply = Some(reason);
                state.remote_mta = remote_mta;
            }
            RecipientOutcome::Failed {
                remote_mta,
                status,
                reason,
            } => {
                metrics.failed.fetch_add(1, Relaxed);
                warn!(rcpt = %rcpt, mx = remote_mta.as_deref().unwrap_or("-"), reason = %reason, "failed permanently");
                outcomes.push(format!("{rcpt}: failed: {reason}"));
                state.status = RecipientStatus::Failed;
                record.last_error = Some(reason.clone());
                state.last_reply = Some(reason);
                state.remote_mta = remote_mta;
                failed.push((i, status));
            }
        }
    }
    if let Some(last) = record.history.last_mut() {
        last.outcomes = outcomes;
    }

    let now = clock.unix_secs();
    let age = Duration::from_secs(now.saturating_sub(record.envelope.received_at));
    if age >= settings.max_age {
        // RFC 5321 §4.5.4.1: give up; what is still pending bounces.
        let expired = fail_pending(&mut record, (4, 4, 7), |state| {
            format!(
                "gave up after {}s in the queue; last error: {}",
                age.as_secs(),
                state.last_reply.as_deref().unwrap_or("none")
            )
        });
        warn!(recipients = expired.len(), "expired");
        metrics.failed.fetch_add(expired.len() as u64, Relaxed);
        failed.extend(expired);
    }
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
    let deferred: Vec<(usize, (u8, u16, u16))> = record
        .pending()
        .into_iter()
        .map(|i| (i, (4, 0, 0)))
        .collect();
    if !deferred.is_empty() && !record.delay_warned && age >= settings.delay_warning {
        send_dsn(
            queue,
            settings,
            clock,
            metrics,
            &record,
            &message,
            &deferred,
            Action::Delayed,
        )
        .await?;
        record.delay_warned = true;
    }

    let keep_failed_bounce = record.envelope.sender == ReversePath::Null
        && record
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Failed);
    if record.is_finished() && !keep_failed_bounce {
        queue.remove(id).await?;
        info!("removed from the queue: every recipient done");
    } else {
        if record.is_finished() {
            // A notification that cannot be delivered stays visible (never
            // bounced: that would loop) until an operator deletes it.
            warn!("undeliverable notification kept in the queue for the operator");
        }
        queue.update(&record).await?;
    }
    Ok(())
}

/// Builds and queues a DSN about `which` recipients (if RFC 3461 allows one).
#[allow(clippy::too_many_arguments)]
async fn send_dsn(
    queue: &Queue,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    record: &QueueRecord,
    message: &[u8],
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
    let request = DsnRequest {
        reporting_mta: &settings.hostname,
        envelope: &record.envelope,
        message,
        recipients,
        now,
        max_returned: 50_000,
    };
    let Some(report) = dsn::build(&request) else {
        return Ok(());
    };
    let millis = unix_millis(now);
    let envelope = Envelope {
        id: QueueId::generate(millis, rand::random()),
        sender: ReversePath::Null,
        recipients: vec![Recipient {
            address: report.to.clone(),
            notify: Notify::default(),
            orcpt: None,
        }],
        ret: None,
        envid: None,
        body: if dsn::needs_8bit(&report) {
            portcullis_types::BodyType::EightBitMime
        } else {
            portcullis_types::BodyType::SevenBit
        },
        smtputf8: report.smtputf8,
        received_at: millis / 1000,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: settings.hostname.clone(),
        tls: None,
        authenticated: None,
        size: report.message.len() as u64,
        origin: portcullis_types::Origin::Bounce,
    };
    let dsn_id = envelope.id;
    queue.enqueue(envelope, &report.message).await?;
    metrics.dsns.fetch_add(1, Relaxed);
    info!(dsn_id = %dsn_id, to = %report.to, action = ?action, "delivery status notification queued");
    Ok(())
}

/// Removes a message on the operator's word; with `bounce`, the sender gets
/// a failure DSN for every recipient not yet delivered ("deleted by the
/// postmaster", 5.0.0) first.
pub async fn delete(
    queue: &Queue,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    id: QueueId,
    bounce: bool,
) -> Result<(), QueueError> {
    let mut record = queue.get(id)?;
    if bounce {
        let message = queue.message(id)?;
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
    queue.remove(id).await?;
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
