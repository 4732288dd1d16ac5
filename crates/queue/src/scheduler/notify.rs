//! Delivery status notifications (RFC 3464) about a message's recipients,
//! built from the record and queued as messages of their own, with a null
//! sender and the `bounce` origin.

use super::found::Status;
use super::settings::Context;
use crate::dsn::{self, Action, DsnRecipient, DsnRequest};
use crate::{LocalMessage, MessageData, QueueError, QueueRecord};
use portcullis_types::{Origin, ReversePath};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Builds and queues a DSN about `which` recipients (if RFC 3461 allows one).
pub(crate) async fn send_dsn(
    cx: Context<'_>,
    record: &QueueRecord,
    message: &MessageData,
    which: &[(usize, Status)],
    action: Action,
) -> Result<(), QueueError> {
    let now = cx.clock.now();
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
        reporting_mta: &cx.settings.hostname,
        envelope: &record.envelope,
        message: &returned,
        size: message.len(),
        recipients: dsn_recipients(cx, record, which, action, now),
        now,
        max_returned: dsn::MAX_RETURNED,
    };
    let Some(report) = dsn::build(&request) else {
        return Ok(());
    };
    // A fresh id for the DSN, never one in use (check-and-insert); the
    // envelope is made by the one typed entry of locally made mail.
    let dsn_id = cx
        .queue
        .enqueue_local(LocalMessage {
            origin: Origin::Bounce,
            sender: ReversePath::Null,
            recipient: report.to.clone(),
            body: if dsn::needs_8bit(&report) {
                portcullis_types::BodyType::EightBitMime
            } else {
                portcullis_types::BodyType::SevenBit
            },
            smtputf8: report.smtputf8,
            hostname: &cx.settings.hostname,
            message: &report.message,
            now,
        })
        .await?;
    cx.metrics.dsns.fetch_add(1, Relaxed);
    info!(dsn_id = %dsn_id, to = %report.to, action = ?action, "delivery status notification queued");
    Ok(())
}

/// The recipients a DSN reports on, with their last replies.
fn dsn_recipients<'r>(
    cx: Context<'_>,
    record: &'r QueueRecord,
    which: &[(usize, Status)],
    action: Action,
    now: SystemTime,
) -> Vec<DsnRecipient<'r>> {
    which
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
                    UNIX_EPOCH
                        + Duration::from_secs(record.envelope.received_at)
                        + cx.settings.max_age
                }),
            })
        })
        .collect()
}
