//! The admin socket server: binds the Unix socket, reads one request line
//! per connection, hands it to the binary's [`Handler`] and writes one
//! response line.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::AdminError;
use crate::conn::{accept_loop, drain, write_and_close};
use crate::protocol::{Request, Response};

/// The longest request line the server reads, in bytes (newline excluded).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing the response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait in the accept backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long in-flight requests may run on after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After answering, how much unread input is drained so the client sees the
/// answer rather than a reset.
const DRAIN_LIMIT: u64 = 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Implemented by the binary; the admin crate only transports.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Called concurrently from several connections.
    fn handle(&self, req: Request) -> impl std::future::Future<Output = Response> + Send;
}

/// A bound admin socket, not yet serving. Dropping it removes the socket
/// file (if it is still the one this listener created).
#[derive(Debug)]
pub struct AdminListener {
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
}

/// Binds the admin socket at `path`, so the binary can fail at startup.
///
/// Creates the parent directory (mode 0700) if it is missing, replaces a
/// stale socket file left by a dead server, refuses with
/// [`AdminError::AlreadyRunning`] when another server answers on it and with
/// [`AdminError::NotASocket`] when the path is some other kind of file. The
/// socket gets mode 0600. Needs no tokio runtime.
pub fn bind(path: &Path) -> Result<AdminListener, AdminError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| AdminError::Bind {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    remove_stale_socket(path)?;
    let bind_err = |source| AdminError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
    // From here on, `file` removes the socket again if anything fails.
    let file = SocketFile::new(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    info!(socket = %path.display(), "admin socket bound");
    Ok(AdminListener { listener, file })
}

/// Removes a socket file nobody answers on; refuses a live socket or a
/// non-socket file.
fn remove_stale_socket(path: &Path) -> Result<(), AdminError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(AdminError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            warn!(socket = %path.display(), "removing stale admin socket");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(AdminError::Bind {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AdminError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The socket file this process created, identified by device and inode so
/// that cleanup never removes a socket another server put in its place.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            if let Err(e) = std::fs::remove_file(&self.path) {
                warn!(socket = %self.path.display(), error = %e, "cannot remove admin socket");
            } else {
                debug!(socket = %self.path.display(), "admin socket removed");
            }
        }
    }
}

impl AdminListener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Serves connections concurrently until `shutdown` is cancelled, then
    /// removes the socket file and gives in-flight requests a short grace
    /// period. Must run inside a tokio runtime.
    pub async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<(), AdminError> {
        let AdminListener { listener, file } = self;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| AdminError::Bind {
                path: file.path.clone(),
                source,
            })?;
        let tracker = TaskTracker::new();
        accept_loop(
            "admin socket",
            MAX_CONNECTIONS,
            &shutdown,
            &tracker,
            || async { listener.accept().await.map(|(stream, _)| stream) },
            |stream| {
                let handler = Arc::clone(&handler);
                let shutdown = shutdown.clone();
                async move { serve_connection(stream, &*handler, &shutdown).await }
            },
        )
        .await;
        // Stop being reachable first, then let in-flight requests finish.
        drop(listener);
        drop(file);
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = tracker.len(),
                "admin requests still running at shutdown"
            );
        }
        Ok(())
    }
}

/// Binds the Unix socket at `path` and serves until `shutdown` is cancelled;
/// [`bind`] then [`AdminListener::run`] in one step.
pub async fn serve<H: Handler>(
    path: &Path,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    bind(path)?.run(handler, shutdown).await
}

/// What reading the request line produced.
enum Incoming {
    Line(Vec<u8>),
    TooLong,
    Closed,
}

async fn serve_connection<H: Handler>(
    stream: UnixStream,
    handler: &H,
    shutdown: &CancellationToken,
) {
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let incoming = tokio::select! {
        _ = shutdown.cancelled() => {
            Err(Response::error("the server is shutting down"))
        }
        read = tokio::time::timeout(READ_TIMEOUT, read_request_line(&mut reader)) => match read {
            Err(_) => Err(Response::error(format!(
                "no complete request line within {} s", READ_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => {
                debug!(error = %e, "admin connection read failed");
                return;
            }
            Ok(Ok(incoming)) => Ok(incoming),
        },
    };
    let response = match incoming {
        Err(response) => response,
        Ok(Incoming::Closed) => {
            debug!("admin connection closed without a request");
            return;
        }
        Ok(Incoming::TooLong) => {
            Response::error(format!("request line longer than {MAX_REQUEST_LINE} bytes"))
        }
        Ok(Incoming::Line(line)) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                debug!(?request, "admin request");
                handler.handle(request).await
            }
            Err(e) => Response::error(format!("malformed request: {e}")),
        },
    };
    let mut out = match serde_json::to_vec(&response) {
        Ok(out) => out,
        Err(e) => {
            warn!(error = %e, "cannot serialize admin response");
            return;
        }
    };
    out.push(b'\n');
    if !write_and_close(&mut write_half, &out, WRITE_TIMEOUT, "admin response").await {
        return;
    }
    // Drain what the client may still be sending (an over-long line) so it
    // can finish writing and read the answer.
    drain(reader, DRAIN_LIMIT, DRAIN_TIMEOUT).await;
}

/// Reads one line of at most [`MAX_REQUEST_LINE`] bytes. A final line
/// without a newline is accepted; the newline (and a CR before it) is
/// stripped.
async fn read_request_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Incoming> {
    let mut line = Vec::new();
    // One byte more than allowed plus the newline tells "too long" apart.
    let limit = MAX_REQUEST_LINE as u64 + 1;
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(Incoming::Closed);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Incoming::Line(line))
    } else if line.len() > MAX_REQUEST_LINE {
        Ok(Incoming::TooLong)
    } else {
        Ok(Incoming::Line(line))
    }
}
