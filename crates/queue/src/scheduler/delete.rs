//! Removing a message on the operator's word (`portcullis queue delete`),
//! optionally telling the sender.

use super::found::fail_pending;
use super::notify::send_dsn;
use super::settings::{Context, QueueMetrics, SchedulerSettings};
use crate::dsn::Action;
use crate::{Edit, MessageData, Queue, QueueError};
use portcullis_types::{Clock, QueueId};
use std::sync::atomic::Ordering::Relaxed;
use tracing::{info, warn};

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
            let cx = Context {
                queue,
                settings,
                clock,
                metrics,
            };
            send_dsn(cx, &record, &message, &failed, Action::Failed).await?;
        }
    }
    info!(queue_id = %id, bounce, "deleted by the postmaster");
    Ok(())
}
