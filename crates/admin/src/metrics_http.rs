//! A minimal, strict HTTP/1.x responder for Prometheus scrapes.
//!
//! One request per connection (RFC 9112 §9.6 `Connection: close`), origin-form
//! targets only, a request head of at most [`MAX_HEAD`] bytes that must
//! arrive within [`HEAD_TIMEOUT`]. Request bodies are never read as content;
//! leftover input is drained briefly after answering so the client sees the
//! answer rather than a reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::AdminError;
use crate::conn::{accept_loop, drain, write_and_close};

/// The largest request head accepted, in bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
const MAX_CONNECTIONS: usize = 16;
/// After answering, at most this much unread input is drained, for at most
/// [`DRAIN_TIMEOUT`].
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long in-flight scrapes may run on after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the metrics page; called once per scrape.
type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound metrics listener, not yet serving.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// Binds the metrics endpoint on `addr` (port 0 picks a free port, see
/// [`MetricsListener::local_addr`]).
pub async fn bind_metrics(addr: SocketAddr) -> Result<MetricsListener, AdminError> {
    let bind_err = |source| AdminError::MetricsBind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    info!(%local_addr, "metrics endpoint bound");
    Ok(MetricsListener {
        listener,
        local_addr,
    })
}

impl MetricsListener {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers scrapes until `shutdown` is cancelled: `GET /metrics` (and
    /// `HEAD`) gets `render()`; other paths 404, other methods 405, a
    /// malformed or over-long head 400, a head not finished in time 408.
    pub async fn run(self, render: Render, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let listener = &self.listener;
        accept_loop(
            "metrics",
            MAX_CONNECTIONS,
            &shutdown,
            &tracker,
            || listener.accept(),
            |(stream, peer)| {
                let render = Arc::clone(&render);
                let shutdown = shutdown.clone();
                async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = serve_scrape(stream, &render) => {}
                    }
                    debug!(%peer, "metrics connection done");
                }
            },
        )
        .await;
        drop(self.listener);
        tracker.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    }
}

/// How reading the head ended.
#[derive(Debug, PartialEq)]
enum HeadRead {
    /// The head, without its final empty line.
    Complete(usize),
    TooLarge,
    Closed,
}

/// A response to write.
#[derive(Debug, PartialEq)]
struct Reply {
    status: &'static str,
    content_type: &'static str,
    extra_header: Option<&'static str>,
    body: String,
    send_body: bool,
}

impl Reply {
    fn error(status: &'static str, body: &str) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_header: None,
            body: format!("{body}\n"),
            send_body: true,
        }
    }
}

async fn serve_scrape(mut stream: TcpStream, render: &Render) {
    let mut buf = Vec::with_capacity(1024);
    let reply = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buf)).await {
        Err(_) => Reply::error("408 Request Timeout", "request head not received in time"),
        Ok(Err(e)) => {
            debug!(error = %e, "metrics read failed");
            return;
        }
        Ok(Ok(HeadRead::Closed)) => return,
        Ok(Ok(HeadRead::TooLarge)) => Reply::error("400 Bad Request", "request head too large"),
        Ok(Ok(HeadRead::Complete(end))) => route(buf.get(..end).unwrap_or_default(), render),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if let Some(header) = reply.extra_header {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if reply.send_body {
        out.push_str(&reply.body);
    }
    if !write_and_close(&mut stream, out.as_bytes(), WRITE_TIMEOUT, "metrics").await {
        return;
    }
    drain(stream, DRAIN_LIMIT, DRAIN_TIMEOUT).await;
}

/// Reads until the empty line that ends the head, at most [`MAX_HEAD`]
/// bytes.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<HeadRead> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(HeadRead::Complete(end));
        }
        let room = MAX_HEAD.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(HeadRead::TooLarge);
        }
        let Some(window) = chunk.get_mut(..room) else {
            return Ok(HeadRead::TooLarge);
        };
        let n = stream.read(window).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(window.get(..n).unwrap_or_default());
    }
}

/// The offset of the empty line ending the head: CRLF CRLF, or LF LF
/// (RFC 9112 §2.2 lets a recipient accept a bare LF as line terminator).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        let rest = buf.get(i..).unwrap_or_default();
        rest.starts_with(b"\r\n\r\n") || rest.starts_with(b"\n\n")
    })
}

/// Parses the head and picks the reply.
fn route(head: &[u8], render: &Render) -> Reply {
    let Ok(head) = std::str::from_utf8(head) else {
        return Reply::error("400 Bad Request", "request head is not UTF-8");
    };
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::error("400 Bad Request", "malformed request line");
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Reply::error("400 Bad Request", "malformed method");
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Reply::error("400 Bad Request", "malformed request target");
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => {
            return Reply::error("505 HTTP Version Not Supported", "only HTTP/1.x is served");
        }
        _ => return Reply::error("400 Bad Request", "malformed HTTP version"),
    };
    let mut hosts = 0usize;
    for line in lines {
        // RFC 9112 §5.2: obsolete line folding is rejected; §5.1: no
        // whitespace between the field name and the colon.
        let Some((name, _value)) = line.split_once(':') else {
            return Reply::error("400 Bad Request", "malformed header field");
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Reply::error("400 Bad Request", "malformed header field");
        }
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host field.
    if (http11 && hosts == 0) || hosts > 1 {
        return Reply::error("400 Bad Request", "exactly one Host header is required");
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path != "/metrics" {
        return Reply::error("404 Not Found", "not found; metrics are at /metrics");
    }
    let send_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            let mut reply = Reply::error("405 Method Not Allowed", "method not allowed");
            reply.extra_header = Some("Allow: GET, HEAD");
            return reply;
        }
    };
    Reply {
        status: "200 OK",
        content_type: METRICS_CONTENT_TYPE,
        extra_header: None,
        body: render(),
        send_body,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
