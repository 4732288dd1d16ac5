//! The connection: writing commands and reading whole replies with
//! `smtp-proto`'s [`ResponseReceiver`], every step under a timeout.

use std::time::Duration;

use portcullis_types::Reply;
use smtp_proto::Response;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::SessionError;
use super::timeouts::Stage;

/// How much is read from the socket at once.
const READ_CHUNK: usize = 4096;

/// A reply as a value plus the bytes it was parsed from (EHLO needs them).
#[derive(Debug, Clone)]
pub(crate) struct RawReply {
    /// The parsed reply.
    pub reply: Reply,
    /// The wire bytes of the whole reply, line ends included.
    pub raw: Vec<u8>,
}

/// One SMTP connection from the client's side, generic over the stream so
/// that STARTTLS can change its type (STYLE 3).
pub(crate) struct Conn<S> {
    stream: S,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
    receiver: ResponseReceiver,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            receiver: ResponseReceiver::default(),
        }
    }

    /// The stream and whatever was read past the last reply.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// The same connection over another stream type (e.g. boxed), with
    /// what was read but not yet parsed.
    pub fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> Conn<T> {
        Conn {
            stream: f(self.stream),
            buf: self.buf,
            receiver: self.receiver,
        }
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub async fn send(
        &mut self,
        bytes: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SessionError> {
        let stream = &mut self.stream;
        within(stage, limit, async move {
            stream.write_all(bytes).await.map_err(|e| io(stage, &e))?;
            stream.flush().await.map_err(|e| io(stage, &e))
        })
        .await
    }

    /// Sends `line` + CRLF and reads the reply, each within `limit`.
    pub async fn command(
        &mut self,
        line: &str,
        stage: Stage,
        limit: Duration,
    ) -> Result<RawReply, SessionError> {
        tracing::debug!(%stage, command = line, "smtp client: send");
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes, stage, limit).await?;
        self.read_reply(stage, limit).await
    }

    /// Reads one whole (possibly multi-line) reply within `limit`: a peer
    /// that drips bytes cannot stretch the deadline.
    pub async fn read_reply(
        &mut self,
        stage: Stage,
        limit: Duration,
    ) -> Result<RawReply, SessionError> {
        let result = within(stage, limit, self.read_reply_unbounded(stage)).await;
        match &result {
            Ok(r) => {
                tracing::debug!(%stage, code = r.reply.code, reply = %r.reply, "smtp client: reply")
            }
            Err(e) => tracing::debug!(%stage, error = %e, "smtp client: no reply"),
        }
        result
    }

    async fn read_reply_unbounded(&mut self, stage: Stage) -> Result<RawReply, SessionError> {
        let mut raw = Vec::new();
        loop {
            if !self.buf.is_empty() {
                let before = self.buf.len();
                let mut iter = self.buf.iter();
                let parsed = self.receiver.parse(&mut iter);
                let consumed = before - iter.len();
                raw.extend(self.buf.drain(..consumed));
                match parsed {
                    Ok(response) => {
                        self.receiver.reset();
                        return Ok(RawReply {
                            reply: to_reply(response),
                            raw,
                        });
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        self.receiver.reset();
                        return Err(SessionError::Protocol {
                            stage,
                            detail: format!("unparsable reply: {e:?}"),
                        });
                    }
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| io(stage, &e))?;
            if n == 0 {
                return Err(SessionError::Io {
                    stage,
                    detail: "connection closed by the peer".to_owned(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Shuts the write side down (TLS: close_notify), within `limit`, ignoring errors.
    pub async fn shutdown(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
    }
}

/// Runs `fut` under `limit`, mapping expiry to [`SessionError::Timeout`].
pub(crate) async fn within<T>(
    stage: Stage,
    limit: Duration,
    fut: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(SessionError::Timeout { stage }),
    }
}

fn io(stage: Stage, e: &std::io::Error) -> SessionError {
    SessionError::Io {
        stage,
        detail: e.to_string(),
    }
}

/// Converts `smtp-proto`'s response: the enhanced status code is kept when
/// its class is 2, 4 or 5 (RFC 3463 §3.1); lines are split back apart.
fn to_reply(response: Response<String>) -> Reply {
    let [class, subject, detail] = response.esc;
    let enhanced = matches!(class, 2 | 4 | 5).then_some((class, subject.into(), detail.into()));
    Reply {
        code: response.code,
        enhanced,
        lines: response.message.split('\n').map(str::to_owned).collect(),
    }
}
