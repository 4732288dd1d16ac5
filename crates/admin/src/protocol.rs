//! The admin protocol's message types.
//!
//! One JSON object per line. A request is tagged by `op`
//! (`{"op":"queue_show","id":"..."}`), a response by `status`
//! (`{"status":"ok","body":...}` or `{"status":"error","message":"..."}`).

use serde::{Deserialize, Serialize};

/// One admin request, written by the CLI and handled by the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The server's [`StatusReport`].
    Status,
    /// Every queued message, as a list of [`QueueEntry`].
    QueueList,
    /// One queued message, as a [`QueueDetail`].
    QueueShow {
        /// The queue id.
        id: String,
    },
    /// Make queued messages due now.
    QueueRetry {
        /// The queue id; `None` retries every message.
        #[serde(default)]
        id: Option<String>,
    },
    /// Remove a message from the queue.
    QueueDelete {
        /// The queue id.
        id: String,
        /// Send a non-delivery report to the sender first.
        bounce: bool,
    },
}

/// The answer to one [`Request`].
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded; `body` depends on the request.
    Ok {
        /// The request's result (a [`StatusReport`], a list of
        /// [`QueueEntry`], ...).
        body: serde_json::Value,
    },
    /// The request failed.
    Error {
        /// A message for the operator.
        message: String,
    },
}

impl Response {
    /// A successful response whose body is `body` serialized to JSON; a
    /// value that cannot be serialized becomes [`Response::Error`].
    pub fn ok<T: Serialize>(body: &T) -> Self {
        match serde_json::to_value(body) {
            Ok(body) => Response::Ok { body },
            Err(e) => Response::Error {
                message: format!("cannot serialize the response: {e}"),
            },
        }
    }

    /// A failed response carrying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// What `portcullis status` shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The server's version.
    pub version: String,
    /// The hostname it announces.
    pub hostname: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The SMTP listeners.
    pub listeners: Vec<ListenerStatus>,
    /// SMTP sessions currently open.
    pub open_sessions: u64,
    /// Messages in the queue.
    pub queue_size: u64,
    /// The data directory.
    pub data_dir: String,
}

/// One SMTP listener in a [`StatusReport`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    /// The bound address, e.g. `127.0.0.1:2525`.
    pub address: String,
    /// `smtp`, `submission` or `submissions`.
    pub role: String,
}

/// One queued message, as listed by `portcullis queue list`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// The queue id.
    pub id: String,
    /// The envelope sender; `<>` for the null sender.
    pub sender: String,
    /// The recipients and their states.
    pub recipients: Vec<RecipientEntry>,
    /// The message size in bytes.
    pub size: u64,
    /// When the message was received, in Unix seconds.
    pub received_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due, in Unix seconds, if one is scheduled.
    pub next_attempt: Option<u64>,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

/// One recipient of a [`QueueEntry`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecipientEntry {
    /// The recipient address.
    pub address: String,
    /// `queued`, `delivered`, `deferred` or `failed`.
    pub state: String,
}

/// One queued message in detail, as shown by `portcullis queue show`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueDetail {
    /// The summary.
    pub entry: QueueEntry,
    /// The stored envelope, as the queue records it.
    pub envelope: serde_json::Value,
    /// The message's header section.
    pub headers: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_wire_form() {
        let cases = [
            (Request::Status, r#"{"op":"status"}"#),
            (Request::QueueList, r#"{"op":"queue_list"}"#),
            (
                Request::QueueShow { id: "A1".into() },
                r#"{"op":"queue_show","id":"A1"}"#,
            ),
            (
                Request::QueueRetry { id: None },
                r#"{"op":"queue_retry","id":null}"#,
            ),
            (
                Request::QueueDelete {
                    id: "A1".into(),
                    bounce: true,
                },
                r#"{"op":"queue_delete","id":"A1","bounce":true}"#,
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), req);
        }
    }

    #[test]
    fn retry_without_id_means_all() {
        let req: Request = serde_json::from_str(r#"{"op":"queue_retry"}"#).unwrap();
        assert_eq!(req, Request::QueueRetry { id: None });
    }

    #[test]
    fn responses_are_tagged_by_status() {
        let ok = serde_json::to_string(&Response::ok(&vec![1, 2])).unwrap();
        assert_eq!(ok, r#"{"status":"ok","body":[1,2]}"#);
        let err = serde_json::to_string(&Response::error("nope")).unwrap();
        assert_eq!(err, r#"{"status":"error","message":"nope"}"#);
    }
}
