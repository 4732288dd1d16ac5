//! One attempt at one message, as steps: read → record the attempt →
//! deliver → plan the results → DSNs → write.
//!
//! Every write is a conditional edit of the record as it is at that moment
//! ([`Queue::modify`]), never a copy read before delivery: an operator's
//! `queue retry` during the attempt keeps its new time, and a `queue
//! delete` during the attempt stays a deletion (the results are dropped
//! and logged).

use super::found::Found;
use super::notify::send_dsn;
use super::settings::{Context, QueueMetrics, SchedulerSettings};
use crate::dsn::Action;
use crate::schedule::backoff;
use crate::{
    Attempt, Deliver, DeliveryJob, Edit, MessageData, Queue, QueueError, QueueRecord,
    RecipientStatus,
};
use portcullis_types::{Clock, QueueId, ReversePath};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long a message whose body is missing from the store waits before it
/// is looked at again: it is kept for the operator, not retried in a loop.
pub const PARK: Duration = Duration::from_secs(24 * 3600);

/// One attempt at one message, start to finish.
///
/// The attempt is recorded durably, with the next retry time, before
/// delivery starts (STYLE 7); the results are written afterwards, only for
/// recipients still pending. A message whose body is missing is never
/// delivered: it is logged as an error and parked for [`PARK`] with the
/// reason in its `last_error`.
pub async fn attempt<D: Deliver>(
    queue: &Queue,
    deliver: &D,
    settings: &SchedulerSettings,
    clock: &dyn Clock,
    metrics: &QueueMetrics,
    id: QueueId,
) -> Result<(), QueueError> {
    let cx = Context {
        queue,
        settings,
        clock,
        metrics,
    };
    let Some(message) = read(cx, id).await? else {
        return Ok(());
    };
    let Some(record) = start(cx, id).await? else {
        return Ok(());
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
    let Some(delay_warned) = plan_results(cx, id, &found, &message).await? else {
        return Ok(());
    };
    write(cx, id, &found, delay_warned).await
}

/// Step 1: the message's data, or `None` when there is nothing to deliver
/// (gone, nothing pending, or parked because its body is missing).
async fn read(cx: Context<'_>, id: QueueId) -> Result<Option<MessageData>, QueueError> {
    let snapshot = match cx.queue.get(id) {
        Ok(r) => r,
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message left the queue before its attempt");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if snapshot.pending().is_empty() {
        return Ok(None);
    }
    match cx.queue.message_data(id) {
        Ok(m) => Ok(Some(m)),
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message deleted before its attempt");
            Ok(None)
        }
        Err(e @ QueueError::BodyMissing { .. }) => {
            error!(queue_id = %id, error = %e, "message body missing from the store: not delivered, kept for the operator");
            park(cx, id, &e).await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Step 2: records the attempt and the next retry before connecting
/// (STYLE 7); the record as written, or `None` when nothing is pending
/// any more.
async fn start(cx: Context<'_>, id: QueueId) -> Result<Option<QueueRecord>, QueueError> {
    let now = cx.clock.unix_secs();
    let retry = &cx.settings.retry;
    let started = cx
        .queue
        .modify(id, |r| {
            if r.pending().is_empty() {
                return Edit::Keep;
            }
            r.attempts += 1;
            r.next_attempt = now + backoff(retry, r.attempts).as_secs();
            r.push_attempt(Attempt {
                number: r.attempts,
                at: now,
                outcomes: Vec::new(),
            });
            Edit::Write
        })
        .await?;
    match started {
        Some((record, Edit::Write)) => Ok(Some(record)),
        Some(_) => Ok(None),
        None => {
            info!(queue_id = %id, "message deleted before its attempt");
            Ok(None)
        }
    }
}

/// Steps 4 and 5: plans the results on the record as it is now (the
/// operator may have acted while delivery ran), so the notifications match
/// what will be written, and queues them. Says whether a delay warning
/// went out; `None` when the message was deleted meanwhile.
async fn plan_results(
    cx: Context<'_>,
    id: QueueId,
    found: &Found<'_>,
    message: &MessageData,
) -> Result<Option<bool>, QueueError> {
    let mut planned = match cx.queue.get(id) {
        Ok(r) => r,
        Err(QueueError::NotFound(_)) => {
            info!(queue_id = %id, "message deleted during its attempt: results dropped");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let applied = found.apply(&mut planned);
    applied.log(cx.metrics, planned.next_attempt);
    if !applied.failed.is_empty() {
        send_dsn(cx, &planned, message, &applied.failed, Action::Failed).await?;
    }
    let deferred: Vec<(usize, (u8, u16, u16))> = planned
        .pending()
        .into_iter()
        .map(|i| (i, (4, 0, 0)))
        .collect();
    let warn_delay =
        !deferred.is_empty() && !planned.delay_warned && applied.age >= cx.settings.delay_warning;
    if warn_delay {
        send_dsn(cx, &planned, message, &deferred, Action::Delayed).await?;
    }
    Ok(Some(warn_delay))
}

/// Step 6: writes the results into the record as it is now, and removes
/// the message when every recipient is done.
async fn write(
    cx: Context<'_>,
    id: QueueId,
    found: &Found<'_>,
    warn_delay: bool,
) -> Result<(), QueueError> {
    let done = cx
        .queue
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
async fn park(cx: Context<'_>, id: QueueId, why: &QueueError) -> Result<(), QueueError> {
    let until = cx.clock.unix_secs() + PARK.as_secs();
    let note = format!(
        "not delivered: {why}; kept for the operator (queue show / queue delete), looked at again in {}h",
        PARK.as_secs() / 3600
    );
    cx.queue
        .modify(id, |r| {
            r.next_attempt = until;
            r.last_error = Some(note.clone());
            Edit::Write
        })
        .await?;
    Ok(())
}
