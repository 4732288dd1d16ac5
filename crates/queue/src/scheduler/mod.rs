//! The scheduler: a thin loop over the pure functions of [`crate::schedule`].
//! It `select!`s over shutdown, a kick, the timer and finished attempts
//! (STYLE 7). Each attempt ([`attempt`]) is recorded durably, with its retry
//! time, before delivery starts, so a crash mid-delivery neither loses the
//! message nor forgets the schedule; delivered recipients are written down
//! before the next attempt can start, so they are never delivered twice.
//!
//! Attempts run as tasks of a [`TaskTracker`] the caller owns: at shutdown
//! the loop stops claiming messages and returns at once, and the caller
//! waits on the tracker for the attempts still in flight, so that their
//! results are written before the process exits (an attempt cut short
//! is not lost: it was recorded, and the message is tried again at the
//! next start, possibly delivering a second copy).

mod attempt;
mod delete;
mod found;
mod notify;
mod settings;

pub use attempt::{PARK, attempt};
pub use delete::delete;
pub use settings::{QueueMetrics, SchedulerSettings};

use crate::schedule::{claim_due, next_due};
use crate::{Deliver, Queue};
use portcullis_types::{Clock, QueueId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error};

/// Runs until `shutdown`, starting each due message's attempt on
/// `attempts` (at most `settings.max_concurrent` at once). Returns without
/// waiting for the attempts: wait on `attempts` for them.
pub async fn run<D: Deliver>(
    queue: Queue,
    deliver: Arc<D>,
    settings: Arc<SchedulerSettings>,
    clock: Arc<dyn Clock>,
    metrics: Arc<QueueMetrics>,
    shutdown: CancellationToken,
    attempts: TaskTracker,
) {
    let mut busy: HashSet<QueueId> = HashSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<QueueId>();
    let max = settings.max_concurrent.max(1);
    loop {
        let now_ms = clock.unix_millis();
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
            attempts.spawn(
                async move {
                    let (d, c) = (deliver.as_ref(), clock.as_ref());
                    if let Err(e) = attempt(&queue, d, &settings, c, &metrics, id).await {
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
