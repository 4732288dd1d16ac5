//! `queue list|show|retry|delete`.

use super::refused::Refused;
use crate::state::QueueAccess;
use portcullis_admin::{
    AttemptEntry, QueueDeleted, QueueDetail, QueueEntry, QueueEnvelope, QueueRetried,
    RecipientEntry, RecipientStateEntry, Response,
};
use portcullis_queue::{QueueError, QueueRecord};
use portcullis_types::{Clock, QueueId, SystemClock};

impl QueueAccess {
    /// Every queued message.
    pub(super) fn list(&self) -> Result<Vec<QueueEntry>, Refused> {
        let list = self.queue.list().map_err(queue_err)?;
        Ok(list.iter().map(entry).collect())
    }

    /// One message: envelope, states, history and header section.
    pub(super) fn show(&self, id: &str) -> Result<QueueDetail, Refused> {
        let id = parse_id(id)?;
        let record = self.queue.get(id).map_err(queue_err)?;
        // A record without its body is shown (that is how the operator
        // finds it), with the inconsistency named.
        let (message, body_error) = match self.queue.message(id) {
            Ok(m) => (m, None),
            Err(e @ QueueError::BodyMissing { .. }) => (Vec::new(), Some(e.to_string())),
            Err(e) => return Err(queue_err(e)),
        };
        Ok(QueueDetail {
            entry: entry(&record),
            envelope: envelope(&record, body_error),
            headers: headers_of(&message),
        })
    }

    /// Makes one message, or all, due now.
    pub(super) async fn retry(&self, id: Option<&str>) -> Result<QueueRetried, Refused> {
        let id = id.map(parse_id).transpose()?;
        let n = self
            .queue
            .retry_now(id, SystemClock.unix_secs())
            .await
            .map_err(queue_err)?;
        Ok(QueueRetried {
            scheduled: n as u64,
        })
    }

    /// Removes a message, with a bounce to its sender first on request.
    pub(super) async fn delete(&self, id: &str, bounce: bool) -> Result<QueueDeleted, Refused> {
        let id = parse_id(id)?;
        portcullis_queue::scheduler::delete(
            &self.queue,
            &self.settings,
            &SystemClock,
            &self.counters,
            id,
            bounce,
        )
        .await
        .map_err(queue_err)?;
        Ok(QueueDeleted {
            deleted: id.to_string(),
            bounced: bounce,
        })
    }
}

fn queue_err(e: QueueError) -> Refused {
    Response::error(e.to_string())
}

fn parse_id(id: &str) -> Result<QueueId, Refused> {
    id.parse::<QueueId>().map_err(Response::error)
}

fn entry(r: &QueueRecord) -> QueueEntry {
    QueueEntry {
        id: r.envelope.id.to_string(),
        sender: format!("<{}>", r.envelope.sender),
        recipients: r
            .envelope
            .recipients
            .iter()
            .zip(&r.recipients)
            .map(|(rcpt, st)| RecipientEntry {
                address: rcpt.address.to_string(),
                state: st.status.as_str().into(),
            })
            .collect(),
        size: r.envelope.size,
        received_at: r.envelope.received_at,
        attempts: r.attempts,
        next_attempt: Some(r.next_attempt),
        last_error: r.last_error.clone(),
    }
}

/// The stored envelope with the attempts kept (the first and the last
/// ones, with their per-recipient outcomes and replies) and the state of
/// each recipient.
fn envelope(r: &QueueRecord, body_error: Option<String>) -> QueueEnvelope {
    QueueEnvelope {
        envelope: r.envelope.clone(),
        history: r
            .history
            .iter()
            .map(|a| AttemptEntry {
                number: a.number,
                at: a.at,
                outcomes: a.outcomes.clone(),
            })
            .collect(),
        history_note: (r.attempts_omitted() > 0).then(|| {
            format!(
                "{} of {} attempts shown: the first {} and the last {}",
                r.history.len(),
                r.attempts,
                portcullis_queue::HISTORY_FIRST,
                portcullis_queue::HISTORY_LAST
            )
        }),
        recipient_states: r
            .recipients
            .iter()
            .map(|s| RecipientStateEntry {
                status: s.status.as_str().into(),
                last_reply: s.last_reply.clone(),
                remote_mta: s.remote_mta.clone(),
            })
            .collect(),
        body_error,
    }
}

/// The header section of a stored message (up to the first empty line).
fn headers_of(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    String::from_utf8_lossy(&message[..end]).into_owned()
}
