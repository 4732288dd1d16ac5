//! The CLI side of the admin socket: one request, one response.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::AdminError;
use crate::protocol::{Request, Response};

/// How long [`call`] waits for the whole exchange.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest response line the client accepts, in bytes.
const MAX_RESPONSE_LINE: u64 = 64 * 1024 * 1024;

/// Sends one request to the server listening on `path` and returns the body
/// of its [`Response::Ok`].
///
/// When nothing listens on the socket (missing file, connection refused)
/// this returns [`AdminError::NotRunning`], whose message names the path;
/// [`Response::Error`] becomes [`AdminError::Server`]. The whole exchange
/// times out after [`CALL_TIMEOUT`].
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, AdminError> {
    match tokio::time::timeout(CALL_TIMEOUT, exchange(path, req)).await {
        Ok(result) => result,
        Err(_) => Err(AdminError::Timeout {
            path: path.to_path_buf(),
            secs: CALL_TIMEOUT.as_secs(),
        }),
    }
}

/// Like [`call`], then decodes the body as `T` (e.g. a
/// [`StatusReport`](crate::StatusReport)).
pub async fn call_as<T: DeserializeOwned>(path: &Path, req: &Request) -> Result<T, AdminError> {
    let body = call(path, req).await?;
    serde_json::from_value(body).map_err(|e| AdminError::Protocol {
        message: format!("unexpected response body: {e}"),
    })
}

async fn exchange(path: &Path, req: &Request) -> Result<serde_json::Value, AdminError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => AdminError::NotRunning {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            },
            io::ErrorKind::ConnectionRefused => AdminError::NotRunning {
                path: path.to_path_buf(),
                reason: "connection refused".into(),
            },
            _ => AdminError::Connect {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let io_err = |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Protocol {
        message: format!("cannot serialize the request: {e}"),
    })?;
    line.push(b'\n');
    let (read_half, mut write_half) = stream.into_split();
    write_half.write_all(&line).await.map_err(io_err)?;
    write_half.shutdown().await.map_err(io_err)?;

    let mut answer = Vec::new();
    BufReader::new(read_half)
        .take(MAX_RESPONSE_LINE)
        .read_until(b'\n', &mut answer)
        .await
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(AdminError::Protocol {
            message: "the server closed the connection without answering".into(),
        });
    }
    let response: Response = serde_json::from_slice(&answer).map_err(|e| AdminError::Protocol {
        message: format!("malformed response: {e}"),
    })?;
    match response {
        Response::Ok { body } => Ok(body),
        Response::Error { message } => Err(AdminError::Server { message }),
    }
}
