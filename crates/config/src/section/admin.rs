//! `[admin]`: the admin socket the CLI talks to, and the metrics endpoint.

use crate::check::Checker;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[admin]`: the admin socket and metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `socket`: the Unix socket the CLI talks to (default `<data_dir>/admin.sock`).
    pub socket: Option<String>,
    /// `metrics`: `ip:port` for Prometheus at `/metrics`; absent: off.
    pub metrics: Option<String>,
}

/// Admin socket and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Admin {
    /// The admin Unix socket.
    pub socket: PathBuf,
    /// Prometheus endpoint; `None`: no metrics listener at all.
    pub metrics: Option<SocketAddr>,
}

/// `[admin]`: the socket defaults to `admin.sock` in `data_dir`.
pub(crate) fn build(f: &AdminFile, data_dir: &Path, c: &mut Checker) -> Admin {
    Admin {
        socket: f
            .socket
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("admin.sock")),
        metrics: f
            .metrics
            .as_deref()
            .and_then(|m| c.socket_addr("admin.metrics", m)),
    }
}
