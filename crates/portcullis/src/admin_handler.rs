//! The admin socket's requests, answered from the server state.

use crate::serve::ServerState;
use portcullis_admin::{
    Handler, ListenerStatus, QueueDetail, QueueEntry, RecipientEntry, Request, Response,
    StatusReport,
};
use portcullis_queue::QueueRecord;
use portcullis_types::{Clock, QueueId, SystemClock};
use std::sync::Arc;

/// Answers admin requests.
pub struct AdminHandler {
    state: Arc<ServerState>,
}

impl AdminHandler {
    /// A handler over the shared server state.
    pub fn new(state: Arc<ServerState>) -> AdminHandler {
        AdminHandler { state }
    }

    fn status(&self) -> StatusReport {
        let s = &self.state;
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: s.config.hostname.clone(),
            uptime_secs: s.started.elapsed().as_secs(),
            listeners: s
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    address: l.local_addr.to_string(),
                    role: l.role.as_str().into(),
                })
                .collect(),
            open_sessions: s.metrics.open_sessions(),
            queue_size: s.queue.len(),
            data_dir: s.config.data_dir.display().to_string(),
        }
    }
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

fn parse_id(id: &str) -> Result<QueueId, Response> {
    id.parse::<QueueId>().map_err(Response::error)
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

impl Handler for AdminHandler {
    async fn handle(&self, req: Request) -> Response {
        let queue = &self.state.queue;
        let result: Result<Response, Response> = async {
            Ok(match req {
                Request::Status => Response::ok(&self.status()),
                Request::QueueList => {
                    let list = queue.list().map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(&list.iter().map(entry).collect::<Vec<_>>())
                }
                Request::QueueShow { id } => {
                    let id = parse_id(&id)?;
                    let record = queue.get(id).map_err(|e| Response::error(e.to_string()))?;
                    let message = queue
                        .message(id)
                        .map_err(|e| Response::error(e.to_string()))?;
                    let mut envelope = serde_json::to_value(&record.envelope).unwrap_or_default();
                    // Every attempt with its per-recipient outcomes and replies.
                    if let Some(obj) = envelope.as_object_mut() {
                        obj.insert(
                            "history".into(),
                            serde_json::to_value(&record.history).unwrap_or_default(),
                        );
                        obj.insert(
                            "recipient_states".into(),
                            serde_json::to_value(&record.recipients).unwrap_or_default(),
                        );
                    }
                    Response::ok(&QueueDetail {
                        entry: entry(&record),
                        envelope,
                        headers: headers_of(&message),
                    })
                }
                Request::QueueRetry { id } => {
                    let id = id.as_deref().map(parse_id).transpose()?;
                    let n = queue
                        .retry_now(id, SystemClock.unix_secs())
                        .await
                        .map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(&serde_json::json!({ "scheduled": n }))
                }
                Request::QueueDelete { id, bounce } => {
                    let id = parse_id(&id)?;
                    let s = &self.state;
                    portcullis_queue::scheduler::delete(
                        queue,
                        &s.scheduler,
                        &SystemClock,
                        &s.queue_metrics,
                        id,
                        bounce,
                    )
                    .await
                    .map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(
                        &serde_json::json!({ "deleted": id.to_string(), "bounced": bounce }),
                    )
                }
            })
        }
        .await;
        result.unwrap_or_else(|e| e)
    }
}
