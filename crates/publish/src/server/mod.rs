//! The `mta-sts` listener: HTTPS (rustls, TLS 1.2+, the certificate of
//! `[tls]` or the listener's own) answering one HTTP/1.1 request per
//! connection with a strict hand-written responder: our MTA-STS policy at
//! [`POLICY_PATH`] for `mta-sts.<domain>` of each accepted domain, TLS
//! reports POSTed to [`REPORT_PATH`] handed to a
//! [`ReportIntake`]; 404 for anything else, never a redirect.
//!
//! Everything a remote party can make us spend is bounded: connections
//! per listener ([`Server::run`]'s cap; past it a connection is closed at
//! once), the handshake and the head ([`Limits::head`], the head at most
//! [`MAX_HEAD`] bytes), the whole request ([`Limits::request`]), the body
//! (`MAX_REPORT_BYTES`, refused by its announced length before a byte of
//! it is read). Every log line carries the client's address.

pub mod body;
pub mod reply;
pub mod request;
pub mod route;

#[cfg(test)]
mod tests;

use crate::metrics::{Outcome, PublishMetrics};
use crate::site::Site;
use portcullis_dns::Resolver;
use portcullis_tls::ServerTls;
use portcullis_tlsrpt::received::ReportIntake;
use reply::Reply;
pub use request::MAX_HEAD;
use request::{HeadRead, read_head};
pub use route::{POLICY_PATH, REPORT_PATH};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The time limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the end of the request head, TLS handshake
    /// included (default 10 s); past it: 408 and the connection closes.
    pub head: Duration,
    /// From accept to the last byte of the request body (default 30 s).
    pub request: Duration,
    /// Writing the response (default 10 s).
    pub write: Duration,
}

impl Default for Limits {
    /// 10 s for the head, 30 s for the whole request, 10 s to write.
    fn default() -> Limits {
        Limits {
            head: Duration::from_secs(10),
            request: Duration::from_secs(30),
            write: Duration::from_secs(10),
        }
    }
}

/// After the reply, at most this much unread input is read and dropped,
/// for at most [`DRAIN_TIME`]: closing a socket with unread input sends a
/// reset, which can destroy the reply before the client reads it (a 413
/// answered while the body is still coming).
const DRAIN_BYTES: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// After a 413, a client that sends its body anyway (most do: they read
/// the reply only once the body is out) has up to this much of it read
/// and dropped, never kept, so it gets to see the 413 rather than a broken
/// pipe; the reply itself was sent before any of the body was read.
const DRAIN_TOO_LARGE: u64 = 4 * 1024 * 1024;

/// How long connections in flight may finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every `mta-sts` listener serves: the site, the report intake, the
/// counters and the limits. Shared by all of them.
pub struct Server<R> {
    /// The policies.
    pub site: Arc<Site<R>>,
    /// Where POSTed reports go; `None`: every POST gets 503.
    pub intake: Option<Arc<dyn ReportIntake>>,
    /// Counters by outcome.
    pub metrics: Arc<PublishMetrics>,
    /// Time limits per connection.
    pub limits: Limits,
}

impl<R: Resolver> Server<R> {
    /// Serves `listener` with `tls` until `shutdown`, at most
    /// `max_connections` at once; then lets connections in flight finish
    /// for a short grace period.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        tls: ServerTls,
        max_connections: u32,
        shutdown: CancellationToken,
    ) {
        let places = Arc::new(Semaphore::new(max_connections.max(1) as usize));
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    warn!(error = %e, "mta-sts: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                self.metrics.count(Outcome::Busy);
                info!(%peer, max_connections, "mta-sts: connection refused, listener full");
                drop(tcp);
                continue;
            };
            let server = self.clone();
            let tls = tls.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = server.connection(tcp, peer, &tls) => {}
                }
                drop(place);
            });
        }
        drop(listener);
        tracker.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    }

    /// One connection: handshake, one request, one reply, close.
    async fn connection(&self, tcp: TcpStream, peer: SocketAddr, tls: &ServerTls) {
        let start = Instant::now();
        let head_deadline = start + self.limits.head;
        let mut stream = match timeout_at(head_deadline, tls.acceptor().accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.count(Outcome::TlsFailed);
                debug!(%peer, error = %e, "mta-sts: TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.count(Outcome::TlsFailed);
                debug!(%peer, "mta-sts: TLS handshake timed out");
                return;
            }
        };
        self.exchange(&mut stream, peer, start).await;
    }

    /// Reads one request from `stream` (opened at `start`) and answers it.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        start: Instant,
    ) {
        let head_deadline = start + self.limits.head;
        let (head_bytes, rest) = match timeout_at(head_deadline, read_head(stream)).await {
            Ok(Ok(HeadRead::Complete(head, rest))) => (head, rest),
            Ok(Ok(HeadRead::Closed)) => {
                self.metrics.count(Outcome::Closed);
                debug!(%peer, "mta-sts: closed before a request");
                return;
            }
            Ok(Err(e)) => {
                self.metrics.count(Outcome::Closed);
                debug!(%peer, error = %e, "mta-sts: reading the request failed");
                return;
            }
            Ok(Ok(HeadRead::TooLarge)) => {
                let reply = Reply::text("400 Bad Request", "request head too large");
                return self
                    .finish(
                        stream,
                        peer,
                        reply,
                        Outcome::BadRequest,
                        "head over 8 KiB",
                        None,
                    )
                    .await;
            }
            Err(_) => {
                let reply = Reply::text("408 Request Timeout", "request head not received in time");
                return self
                    .finish(
                        stream,
                        peer,
                        reply,
                        Outcome::Timeout,
                        "head not received in time",
                        None,
                    )
                    .await;
            }
        };
        let head = match request::parse_head(&head_bytes) {
            Ok(h) => h,
            Err(why) => {
                let reply = Reply::text("400 Bad Request", why);
                return self
                    .finish(stream, peer, reply, Outcome::BadRequest, why, None)
                    .await;
            }
        };
        let request_deadline = start + self.limits.request;
        let answered = timeout_at(
            request_deadline,
            route::answer(&head, rest, stream, &self.site, self.intake.as_ref()),
        )
        .await;
        let (reply, outcome, detail) = match answered {
            Ok(a) => (a.reply, a.outcome, a.detail),
            Err(_) => (
                Reply::text("408 Request Timeout", "request not received in time"),
                Outcome::Timeout,
                "body not received in time".to_string(),
            ),
        };
        self.finish(stream, peer, reply, outcome, &detail, Some(&head))
            .await;
    }

    /// Writes `reply`, counts `outcome` and logs the request.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        reply: Reply,
        outcome: Outcome,
        detail: &str,
        head: Option<&request::Head>,
    ) {
        self.metrics.count(outcome);
        let written = tokio::time::timeout(self.limits.write, reply.write(stream)).await;
        let (method, path, host) = match head {
            Some(h) => (
                h.method.as_str(),
                h.path.as_str(),
                h.host.as_deref().unwrap_or(""),
            ),
            None => ("", "", ""),
        };
        let status = reply.code();
        match outcome {
            Outcome::PolicyUnavailable | Outcome::ReportUnavailable => {
                warn!(%peer, method, path, host, status, result = outcome.as_str(), detail, "mta-sts request")
            }
            _ => {
                info!(%peer, method, path, host, status, result = outcome.as_str(), detail, "mta-sts request")
            }
        }
        if !matches!(written, Ok(Ok(()))) {
            debug!(%peer, "mta-sts: the reply could not be written");
            return;
        }
        let limit = match (outcome, head.and_then(|h| h.content_length)) {
            (Outcome::TooLarge, Some(n)) => n.min(DRAIN_TOO_LARGE),
            _ => DRAIN_BYTES,
        };
        let mut sink = tokio::io::sink();
        let mut rest = tokio::io::AsyncReadExt::take(stream, limit);
        let _ = tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
    }
}
