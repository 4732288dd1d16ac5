//! A real HTTPS server for MTA-STS policy fetches: rustls (ring, TLS 1.3 /
//! 1.2) on 127.0.0.x:<ephemeral port>, presenting a certificate from the
//! test PKI (normally for `mta-sts.<domain>`), answering every request with
//! a scripted [`Reply`] through a minimal HTTP/1.1 responder (one request
//! per connection, `Connection: close`). It records every request with its
//! headers and its body (when sent with `Content-Length`), so it also
//! serves as an OAuth token introspection endpoint or any small HTTPS API.
//!
//! Test code: setup failures panic with a message; failures while serving
//! (a client that goes away) are logged and end that connection only.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::Issued;

/// The longest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;

/// The longest request body the server reads (by `Content-Length`).
const MAX_BODY: usize = 1024 * 1024;

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// The `Location` header, if any.
    pub location: Option<String>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Whether to send `Content-Length` (otherwise the body ends when the
    /// connection closes).
    pub content_length: bool,
}

impl Reply {
    /// `200 OK`, `text/plain`, the policy `text` as the body.
    pub fn policy(text: &str) -> Reply {
        Reply {
            status: 200,
            content_type: Some("text/plain".to_owned()),
            body: text.as_bytes().to_vec(),
            location: None,
            delay: Duration::ZERO,
            content_length: true,
        }
    }

    /// `200 OK`, `application/json`, `json` as the body.
    pub fn json(json: &str) -> Reply {
        Reply::policy(json).with_content_type(Some("application/json"))
    }

    /// The status `status` with a short `text/plain` body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: format!("status {status}\n").into_bytes(),
            ..Reply::policy("")
        }
    }

    /// A redirect (`status` 3xx) to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            location: Some(location.to_owned()),
            ..Reply::status(status)
        }
    }

    /// Replaces the `Content-Type` header (`None`: no header).
    pub fn with_content_type(mut self, content_type: Option<&str>) -> Reply {
        self.content_type = content_type.map(str::to_owned);
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits `delay` before answering.
    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Sends no `Content-Length`: the body is delimited by closing the
    /// connection, so its size is known only by reading it.
    pub fn without_content_length(mut self) -> Reply {
        self.content_length = false;
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/.well-known/mta-sts.txt`.
    pub path: String,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The SNI name the client sent, if any.
    pub sni: Option<String>,
    /// Every header line as sent (name, value trimmed), in order.
    pub headers: Vec<(String, String)>,
    /// The body: the `Content-Length` bytes after the head (empty without
    /// that header; at most 1 MiB).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    reply: Reply,
    queued: VecDeque<Reply>,
    requests: Vec<Request>,
    acceptor: TlsAcceptor,
}

/// An HTTPS policy server on 127.0.0.x:<ephemeral port>; it stops when
/// dropped.
pub struct PolicyServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PolicyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PolicyServer {
    /// Starts a server on `ip` (any 127.0.0.x) and an ephemeral port,
    /// presenting `certificate`, answering `404` until a reply is set.
    pub async fn start(ip: Ipv4Addr, certificate: &Issued) -> PolicyServer {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("PolicyServer: bind {ip}:0: {e}"));
        let addr = listener.local_addr().expect("PolicyServer: local address");
        let state = Arc::new(Mutex::new(State {
            reply: Reply::status(404),
            queued: VecDeque::new(),
            requests: Vec::new(),
            acceptor: TlsAcceptor::from(certificate.server_config()),
        }));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, state.clone(), handshakes.clone()));
        PolicyServer {
            addr,
            state,
            handshakes,
            task,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port, for `[mta_sts] https_port`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers every request from now on with `reply` (after any replies
    /// queued with [`push_reply`](Self::push_reply)).
    pub fn set_reply(&self, reply: Reply) {
        lock(&self.state).reply = reply;
    }

    /// Answers every request with `200 text/plain` and `text`.
    pub fn set_policy(&self, text: &str) {
        self.set_reply(Reply::policy(text));
    }

    /// Answers the next request (after those already queued) with `reply`,
    /// once.
    pub fn push_reply(&self, reply: Reply) {
        lock(&self.state).queued.push_back(reply);
    }

    /// Presents `certificate` on connections from now on.
    pub fn set_certificate(&self, certificate: &Issued) {
        lock(&self.state).acceptor = TlsAcceptor::from(certificate.server_config());
    }

    /// How many HTTP requests were answered (or are being answered).
    pub fn requests(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// Every request so far, oldest first.
    pub fn request_log(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }

    /// How many TLS handshakes completed (a client that rejects the
    /// certificate never completes one).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    handshakes: Arc<AtomicUsize>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "PolicyServer: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = state.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            if let Err(error) = serve(stream, state, handshakes).await {
                tracing::debug!(%peer, %error, "PolicyServer: connection ended");
            }
        });
    }
}

async fn serve(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    handshakes: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let acceptor = lock(&state).acceptor.clone();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timeout"))??;
    handshakes.fetch_add(1, Ordering::SeqCst);
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tls))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timeout"))??;
    let mut request = parse_head(&head)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad request head"))?;
    request.sni = sni;
    // The bytes read past the head start the body.
    let head_end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |i| i + 4);
    request.body = head[head_end..].to_vec();
    let length = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    tokio::time::timeout(
        Duration::from_secs(10),
        read_body(&mut tls, &mut request.body, length),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "body timeout"))??;
    let reply = {
        let mut state = lock(&state);
        state.requests.push(request);
        match state.queued.pop_front() {
            Some(reply) => reply,
            None => state.reply.clone(),
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    if let Some(content_type) = &reply.content_type {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(location) = &reply.location {
        out.push_str(&format!("Location: {location}\r\n"));
    }
    if reply.content_length {
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    tls.write_all(out.as_bytes()).await?;
    tls.write_all(&reply.body).await?;
    tls.flush().await?;
    tls.shutdown().await
}

/// Reads up to the blank line that ends the request head.
async fn read_head<S: AsyncReadExt + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Reads until `body` holds `length` bytes (any extra is cut off).
async fn read_body<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    body: &mut Vec<u8>,
    length: usize,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    while body.len() < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Ok(())
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.clone());
    Some(Request {
        method,
        path,
        host,
        sni: None,
        headers,
        body: Vec::new(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::TestPki;
    use rustls_pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    async fn get(pki: &TestPki, server: &PolicyServer, name: &str) -> String {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let connector = TlsConnector::from(pki.client_config());
        let mut tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(
            format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    }

    #[tokio::test]
    async fn serves_scripted_replies_over_tls() {
        let pki = TestPki::new();
        let name = "mta-sts.example.test";
        let server = PolicyServer::start(Ipv4Addr::new(127, 0, 0, 7), &pki.issue(&[name])).await;
        assert_eq!(server.addr().ip(), Ipv4Addr::new(127, 0, 0, 7));
        let response = get(&pki, &server, name).await;
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );
        server.set_policy("version: STSv1\n");
        server.push_reply(Reply::redirect(301, "https://elsewhere.test/"));
        let response = get(&pki, &server, name).await;
        assert!(
            response.contains("301") && response.contains("Location: https://elsewhere.test/"),
            "{response}"
        );
        let response = get(&pki, &server, name).await;
        assert!(
            response.contains("Content-Type: text/plain\r\n"),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\nversion: STSv1\n"), "{response}");
        assert_eq!(server.requests(), 3);
        let log = server.request_log();
        assert_eq!(log[0].path, "/.well-known/mta-sts.txt");
        assert_eq!(log[0].host.as_deref(), Some(name));
        assert_eq!(log[0].sni.as_deref(), Some(name));
    }

    #[tokio::test]
    async fn records_request_headers_and_body() {
        let pki = TestPki::new();
        let name = "auth.example.test";
        let server = PolicyServer::start(Ipv4Addr::LOCALHOST, &pki.issue(&[name])).await;
        server.set_reply(Reply::json("{}"));
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let connector = TlsConnector::from(pki.client_config());
        let mut tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        // The head and the body arrive in separate writes.
        tls.write_all(
            b"POST /introspect HTTP/1.1\r\nHost: auth.example.test\r\nContent-Length: 9\r\nX-Test:  a: b \r\n\r\ntoken",
        )
        .await
        .unwrap();
        tls.flush().await.unwrap();
        tls.write_all(b"=abc").await.unwrap();
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        assert!(
            response.contains("Content-Type: application/json\r\n"),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\n{}"), "{response}");
        let log = server.request_log();
        assert_eq!(log[0].method, "POST");
        assert_eq!(log[0].host.as_deref(), Some(name));
        assert_eq!(log[0].header("content-length"), Some("9"));
        assert_eq!(log[0].header("x-test"), Some("a: b"));
        assert_eq!(log[0].header("authorization"), None);
        assert_eq!(log[0].body, b"token=abc");
    }

    #[tokio::test]
    async fn body_without_content_length_ends_at_close() {
        let pki = TestPki::new();
        let name = "mta-sts.example.test";
        let server = PolicyServer::start(Ipv4Addr::LOCALHOST, &pki.issue(&[name])).await;
        server.set_reply(Reply::policy("abc").without_content_length());
        let response = get(&pki, &server, name).await;
        assert!(!response.contains("Content-Length"), "{response}");
        assert!(response.ends_with("\r\n\r\nabc"), "{response}");
    }
}
