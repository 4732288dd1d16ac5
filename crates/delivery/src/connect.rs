//! Outbound TCP, injectable so tests can point any MX at a loopback server
//! (STYLE 10). Production connects directly, under a timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Opens outbound TCP connections.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// Plain TCP with a connect timeout.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    /// Give up connecting after this long (RFC 5321 does not fix it; Postfix uses 30s).
    pub timeout: Duration,
}

impl Default for TcpConnector {
    fn default() -> Self {
        TcpConnector {
            timeout: Duration::from_secs(30),
        }
    }
}

impl Connector for TcpConnector {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}
