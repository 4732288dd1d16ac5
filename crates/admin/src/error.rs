//! The crate's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the admin socket, its client and the
/// metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Nothing listens on the admin socket: the file is missing or the
    /// connection was refused (a stale socket left by a dead server).
    #[error("no portcullis server is running (admin socket {}: {reason})", path.display())]
    NotRunning {
        /// The admin socket path that was tried.
        path: PathBuf,
        /// Why nothing answered, e.g. "connection refused".
        reason: String,
    },
    /// Another server already answers on the admin socket.
    #[error(
        "another portcullis server is already running (it answers on admin socket {})",
        path.display()
    )]
    AlreadyRunning {
        /// The admin socket path.
        path: PathBuf,
    },
    /// The admin socket path exists and is not a socket; it is left alone.
    #[error("admin socket path {} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The admin socket path.
        path: PathBuf,
    },
    /// The admin socket could not be created (parent directory, stale file
    /// removal, bind or permissions).
    #[error("cannot create admin socket {}: {source}", path.display())]
    Bind {
        /// The path that failed (the socket or its parent directory).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the admin socket failed for a reason other than "no
    /// server running" (e.g. permission denied).
    #[error("cannot connect to admin socket {}: {source}", path.display())]
    Connect {
        /// The admin socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to an established admin connection failed.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The admin socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer within the client timeout.
    #[error("admin socket {}: no answer within {secs} s", path.display())]
    Timeout {
        /// The admin socket path.
        path: PathBuf,
        /// The timeout that expired, in seconds.
        secs: u64,
    },
    /// The peer sent something that is not a valid admin protocol message.
    #[error("admin protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The server answered the request with [`Response::Error`](crate::Response::Error).
    #[error("server error: {message}")]
    Server {
        /// The server's message.
        message: String,
    },
    /// The metrics listener could not be bound.
    #[error("cannot bind metrics listener on {addr}: {source}")]
    MetricsBind {
        /// The address that was requested.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
