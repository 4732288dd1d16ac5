//! A scriptable SMTP sink on loopback: the far end for delivery tests.
//!
//! [`Sink::start`] binds (any `127.0.0.0/8` address works on Linux, so
//! several sinks can share the MX port) and serves on its own thread with its
//! own tokio runtime, so sync and async tests alike can use it, including
//! tests that pause tokio's clock. It speaks enough RFC 5321 for a client:
//! EHLO/HELO, STARTTLS (RFC 3207) with the certificate it was given (good,
//! wrong-name, expired or self-signed, see [`crate::pki`]), PIPELINING
//! (RFC 2920: commands are read as lines and answered in order), SIZE,
//! 8BITMIME, SMTPUTF8, DSN, DATA with dot-unstuffing, RSET, NOOP, QUIT. It
//! records every command line, every accepted message and every failed TLS
//! handshake, and can be scripted: refusing greeting, per-recipient replies,
//! MAIL and DATA replies, and a stall after DATA.
//!
//! Test code: failures to bind or to start panic with a message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::pki::Issued;

/// Longest command or data line the sink accepts before it hangs up.
const MAX_LINE: usize = 1024 * 1024;

/// What the sink offers for STARTTLS.
#[derive(Debug, Clone, Default)]
pub enum SinkTls {
    /// No STARTTLS in the EHLO reply.
    #[default]
    None,
    /// STARTTLS with this certificate (from [`crate::pki::TestPki`]).
    Cert(Issued),
}

/// How a [`Sink`] behaves. `Default` is a well-behaved modern MTA on
/// `127.0.0.1:0`: 220 greeting, PIPELINING, 8BITMIME, SMTPUTF8, DSN, no
/// SIZE limit, no STARTTLS, every command accepted.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to listen, e.g. `127.0.0.2:2525`; port 0 picks a free one.
    pub bind: SocketAddr,
    /// STARTTLS or not.
    pub tls: SinkTls,
    /// The greeting code: 220, or e.g. 421 (then the sink hangs up) or 554
    /// (then it answers 503 to everything but QUIT).
    pub greeting: u16,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Advertise `SIZE n` and refuse `MAIL ... SIZE=` above it with 552.
    pub size: Option<usize>,
    /// Advertise 8BITMIME.
    pub eightbitmime: bool,
    /// Advertise SMTPUTF8.
    pub smtputf8: bool,
    /// Advertise DSN.
    pub dsn: bool,
    /// Advertise REQUIRETLS (RFC 8689), over TLS only, as a real server
    /// does; `MAIL ... REQUIRETLS` is accepted either way (the MAIL line
    /// is recorded in [`ReceivedMail::raw_mail_line`]).
    pub requiretls: bool,
    /// Per-recipient replies: (address, whole reply line such as
    /// `"550 5.1.1 no such user"`); addresses compare case-insensitively.
    /// Other recipients get `250 2.1.5 Ok` (or see `known_users`); a
    /// reply starting with `2` accepts.
    pub rcpt_replies: Vec<(String, String)>,
    /// A mail store that knows its users: when set, a recipient neither
    /// listed here nor in `rcpt_replies` gets `550 5.1.1 <addr>: Recipient
    /// address rejected: User unknown` (compared case-insensitively).
    pub known_users: Option<Vec<String>>,
    /// Wait this long before answering each RCPT: keeps probes in flight.
    pub rcpt_delay: Option<Duration>,
    /// The reply line to every MAIL FROM (default `250 2.1.0 Ok`).
    pub mail_reply: Option<String>,
    /// The reply line after the data (default `250 2.0.0 Ok: queued as N`);
    /// the message is recorded only when it starts with `2`.
    pub data_reply: Option<String>,
    /// Read the data, then never answer (the connection stays open).
    pub stall_after_data: bool,
    /// Read the data, then wait this long before recording the message and
    /// answering: a slow far end, so deliveries stay in flight.
    pub data_delay: Option<Duration>,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: SinkTls::None,
            greeting: 220,
            pipelining: true,
            size: None,
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            requiretls: false,
            rcpt_replies: Vec::new(),
            known_users: None,
            rcpt_delay: None,
            mail_reply: None,
            data_reply: None,
            stall_after_data: false,
            data_delay: None,
            hostname: "sink.example.test".to_owned(),
        }
    }
}

/// One message the sink accepted (its data reply was 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The EHLO/HELO argument of the session.
    pub helo: String,
    /// The reverse path, without angle brackets (`""` for the null sender).
    pub mail_from: String,
    /// The accepted recipients, without angle brackets.
    pub rcpts: Vec<String>,
    /// The content, dot-unstuffed, without the terminating `.` line.
    pub data: Vec<u8>,
    /// The TLS version of the session (`"TLSv1.3"`, `"TLSv1.2"`), `None` in clear.
    pub tls: Option<String>,
    /// The MAIL FROM command line as received, parameters included.
    pub raw_mail_line: String,
}

/// What the sink has seen, across all its connections.
#[derive(Debug, Default)]
struct Record {
    received: Vec<ReceivedMail>,
    commands: Vec<String>,
    pipelined: Vec<String>,
    tls_errors: Vec<String>,
    connections: usize,
    /// Sessions open now, and the most ever open at once.
    open: usize,
    max_open: usize,
    stalled: usize,
}

/// The configuration in force for new connections, with its TLS config built.
struct Live {
    cfg: SinkConfig,
    acceptor: Option<TlsAcceptor>,
    rcpt_replies: HashMap<String, String>,
}

impl Live {
    fn new(cfg: SinkConfig) -> Arc<Live> {
        let acceptor = match &cfg.tls {
            SinkTls::None => None,
            SinkTls::Cert(issued) => Some(TlsAcceptor::from(issued.server_config())),
        };
        let rcpt_replies = cfg
            .rcpt_replies
            .iter()
            .map(|(addr, reply)| (addr.to_ascii_lowercase(), reply.clone()))
            .collect();
        Arc::new(Live {
            cfg,
            acceptor,
            rcpt_replies,
        })
    }
}

struct Shared {
    record: Mutex<Record>,
    changed: Condvar,
    live: Mutex<Arc<Live>>,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.record());
        self.changed.notify_all();
    }

    fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A running SMTP sink; dropping it stops the thread and closes every connection.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Sink {
    /// Binds `cfg.bind` and starts serving; panics when the address cannot be bound.
    pub fn start(cfg: SinkConfig) -> Sink {
        let listener = std::net::TcpListener::bind(cfg.bind)
            .unwrap_or_else(|e| panic!("sink: cannot bind {}: {e}", cfg.bind));
        listener
            .set_nonblocking(true)
            .expect("sink: set_nonblocking");
        let addr = listener.local_addr().expect("sink: local_addr");
        let shared = Arc::new(Shared {
            record: Mutex::new(Record::default()),
            changed: Condvar::new(),
            live: Mutex::new(Live::new(cfg)),
        });
        let (stop, stopped) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("smtp-sink-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sink: tokio runtime");
                runtime.block_on(serve(listener, thread_shared, stopped));
            })
            .expect("sink: spawn thread");
        Sink {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the behaviour for connections accepted from now on (e.g. stop
    /// offering STARTTLS); `bind` cannot change.
    pub fn reconfigure(&self, f: impl FnOnce(&mut SinkConfig)) {
        let mut live = self
            .shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut cfg = live.cfg.clone();
        f(&mut cfg);
        *live = Live::new(cfg);
    }

    /// The messages accepted so far, in order.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.record().received.clone()
    }

    /// Waits until at least `n` messages were accepted and returns them all;
    /// panics with the commands seen so far when `timeout` passes first.
    /// (Blocks the calling thread: from an async test, call it once the
    /// client has finished, or from `spawn_blocking`.)
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let record = self.wait_until(timeout, |r| r.received.len() >= n, |r| {
            format!(
                "expected {n} message(s) within {timeout:?}, got {}; connections {}, commands {:?}, TLS errors {:?}",
                r.received.len(),
                r.connections,
                r.commands,
                r.tls_errors
            )
        });
        record.received.clone()
    }

    /// Waits until `done` holds for the record; panics with `describe`'s
    /// words when `timeout` passes first.
    fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Record) -> bool,
        describe: impl Fn(&Record) -> String,
    ) -> MutexGuard<'_, Record> {
        let deadline = Instant::now() + timeout;
        let mut record = self.shared.record();
        while !done(&record) {
            let now = Instant::now();
            assert!(now < deadline, "sink {}: {}", self.addr, describe(&record));
            record = self
                .shared
                .changed
                .wait_timeout(record, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        record
    }

    /// Every command line received, in order, across connections (data
    /// lines excluded), without CRLF: assert e.g. that no MAIL was sent.
    pub fn commands(&self) -> Vec<String> {
        self.shared.record().commands.clone()
    }

    /// The command lines that were already waiting in the sink's buffer when
    /// the previous reply was written: evidence of a pipelining client.
    pub fn pipelined_commands(&self) -> Vec<String> {
        self.shared.record().pipelined.clone()
    }

    /// Failed TLS handshakes (the server side's error), in order.
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.record().tls_errors.clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.record().connections
    }

    /// How many connections are open now (accepted and not yet ended by
    /// either side).
    pub fn open_connections(&self) -> usize {
        self.shared.record().open
    }

    /// The most connections that were ever open at once.
    pub fn max_open_connections(&self) -> usize {
        self.shared.record().max_open
    }

    /// Waits until exactly `n` connections are open; panics after `timeout`.
    pub fn wait_open(&self, n: usize, timeout: Duration) {
        drop(self.wait_until(
            timeout,
            |r| r.open == n,
            |r| format!("{} connection(s) open, expected {n}", r.open),
        ));
    }

    /// How many transactions had their data read and left unanswered
    /// because of [`SinkConfig::stall_after_data`].
    pub fn stalled(&self) -> usize {
        self.shared.record().stalled
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("sink: tokio listener");
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.update(|r| {
                        r.connections += 1;
                        r.open += 1;
                        r.max_open = r.max_open.max(r.open);
                    });
                    let live = shared.live();
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        session(Box::new(stream), live, Arc::clone(&shared)).await;
                        shared.update(|r| r.open -= 1);
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Any stream the session can run on (plain TCP, then TLS after STARTTLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection: the stream, unread bytes and the TLS version once upgraded.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    tls: Option<String>,
}

impl Conn {
    /// The next line including its LF, and whether it was already buffered
    /// (sent before our previous reply); `None` at EOF or for an over-long line.
    async fn read_line(&mut self) -> Option<(Vec<u8>, bool)> {
        let buffered = !self.buf.is_empty();
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some((line, buffered));
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn reply(&mut self, text: &str) -> Option<()> {
        self.io.write_all(text.as_bytes()).await.ok()?;
        self.io.write_all(b"\r\n").await.ok()?;
        self.io.flush().await.ok()
    }
}

/// The transaction in progress.
struct Tx {
    mail_from: String,
    raw_mail_line: String,
    rcpts: Vec<String>,
}

async fn session(io: Box<dyn Io>, live: Arc<Live>, shared: Arc<Shared>) {
    let cfg = &live.cfg;
    let mut conn = Conn {
        io,
        buf: Vec::new(),
        tls: None,
    };
    if cfg.greeting != 220 {
        refuse(conn, cfg, &shared).await;
        return;
    }
    if conn
        .reply(&format!("220 {} ESMTP Portcullis test sink", cfg.hostname))
        .await
        .is_none()
    {
        return;
    }
    let mut helo: Option<String> = None;
    let mut tx: Option<Tx> = None;
    let mut queued = 0usize;
    loop {
        let Some((line, buffered)) = conn.read_line().await else {
            return;
        };
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        shared.update(|r| {
            r.commands.push(text.clone());
            if buffered {
                r.pipelined.push(text.clone());
            }
        });
        let upper = text.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("");
        let arg = text.get(verb.len()..).unwrap_or("").trim().to_owned();
        let answer = match verb {
            "EHLO" => {
                helo = Some(arg);
                tx = None;
                ehlo_reply(&live, conn.tls.is_some())
            }
            "HELO" => {
                helo = Some(arg);
                tx = None;
                format!("250 {}", cfg.hostname)
            }
            "STARTTLS" => match (&live.acceptor, conn.tls.is_some()) {
                (Some(acceptor), false) => {
                    if conn.reply("220 2.0.0 Ready to start TLS").await.is_none() {
                        return;
                    }
                    // RFC 3207 §4.2: anything pipelined behind STARTTLS is discarded.
                    let Conn { io, .. } = conn;
                    match acceptor.accept(io).await {
                        Ok(tls) => {
                            let version = match tls.get_ref().1.protocol_version() {
                                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
                                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
                                other => format!("{other:?}"),
                            };
                            conn = Conn {
                                io: Box::new(tls),
                                buf: Vec::new(),
                                tls: Some(version),
                            };
                            helo = None;
                            tx = None;
                            continue;
                        }
                        Err(e) => {
                            shared.update(|r| r.tls_errors.push(e.to_string()));
                            return;
                        }
                    }
                }
                (Some(_), true) => "503 5.5.1 TLS already active".to_owned(),
                (None, _) => "502 5.5.1 STARTTLS not offered".to_owned(),
            },
            "MAIL" => {
                if helo.is_none() {
                    "503 5.5.1 EHLO first".to_owned()
                } else if tx.is_some() {
                    "503 5.5.1 nested MAIL".to_owned()
                } else {
                    match path_after(&text, "FROM:") {
                        None => "501 5.5.4 syntax: MAIL FROM:<address>".to_owned(),
                        Some((path, params)) => {
                            let declared =
                                param(&params, "SIZE").and_then(|v| v.parse::<usize>().ok());
                            let too_big = matches!((cfg.size, declared), (Some(max), Some(n)) if max > 0 && n > max);
                            if too_big {
                                "552 5.3.4 message size exceeds fixed maximum message size"
                                    .to_owned()
                            } else {
                                let reply = cfg
                                    .mail_reply
                                    .clone()
                                    .unwrap_or_else(|| "250 2.1.0 Ok".to_owned());
                                if reply.starts_with('2') {
                                    tx = Some(Tx {
                                        mail_from: path,
                                        raw_mail_line: text.clone(),
                                        rcpts: Vec::new(),
                                    });
                                }
                                reply
                            }
                        }
                    }
                }
            }
            "RCPT" => match (&mut tx, path_after(&text, "TO:")) {
                (None, _) => "503 5.5.1 MAIL first".to_owned(),
                (Some(_), None) => "501 5.5.4 syntax: RCPT TO:<address>".to_owned(),
                (Some(tx), Some((path, _))) => {
                    if let Some(delay) = cfg.rcpt_delay {
                        tokio::time::sleep(delay).await;
                    }
                    let reply = rcpt_reply(&live, &path);
                    if reply.starts_with('2') {
                        tx.rcpts.push(path);
                    }
                    reply
                }
            },
            "DATA" => match tx.take() {
                None => "503 5.5.1 MAIL first".to_owned(),
                Some(t) if t.rcpts.is_empty() => {
                    tx = Some(t);
                    "554 5.5.1 no valid recipients".to_owned()
                }
                Some(t) => {
                    if conn
                        .reply("354 End data with <CR><LF>.<CR><LF>")
                        .await
                        .is_none()
                    {
                        return;
                    }
                    let Some(data) = read_data(&mut conn).await else {
                        return;
                    };
                    if cfg.stall_after_data {
                        shared.update(|r| r.stalled += 1);
                        while conn.read_line().await.is_some() {}
                        return;
                    }
                    if let Some(delay) = cfg.data_delay {
                        tokio::time::sleep(delay).await;
                    }
                    queued += 1;
                    let reply = cfg
                        .data_reply
                        .clone()
                        .unwrap_or_else(|| format!("250 2.0.0 Ok: queued as SINK{queued}"));
                    if reply.starts_with('2') {
                        let mail = ReceivedMail {
                            helo: helo.clone().unwrap_or_default(),
                            mail_from: t.mail_from,
                            rcpts: t.rcpts,
                            data,
                            tls: conn.tls.clone(),
                            raw_mail_line: t.raw_mail_line,
                        };
                        // Record before answering, so that a client that has
                        // its 250 finds the message already there.
                        shared.update(|r| r.received.push(mail));
                    }
                    reply
                }
            },
            "RSET" => {
                tx = None;
                "250 2.0.0 Ok".to_owned()
            }
            "NOOP" => "250 2.0.0 Ok".to_owned(),
            "QUIT" => {
                let _ = conn.reply("221 2.0.0 Bye").await;
                let _ = conn.io.shutdown().await;
                return;
            }
            "VRFY" | "EXPN" | "HELP" | "BDAT" | "AUTH" => {
                "502 5.5.1 command not implemented".to_owned()
            }
            _ => "500 5.5.2 command not recognized".to_owned(),
        };
        if conn.reply(&answer).await.is_none() {
            return;
        }
    }
}

/// A non-220 greeting: 421 hangs up (RFC 5321 §3.1); anything else waits
/// for QUIT and answers 503 meanwhile.
async fn refuse(mut conn: Conn, cfg: &SinkConfig, shared: &Shared) {
    let code = cfg.greeting;
    let class = code / 100;
    let text = format!("{code} {class}.3.2 {} no service for you", cfg.hostname);
    if conn.reply(&text).await.is_none() || code == 421 {
        return;
    }
    while let Some((line, _)) = conn.read_line().await {
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        shared.update(|r| r.commands.push(text.clone()));
        if text.eq_ignore_ascii_case("QUIT") {
            let _ = conn.reply("221 2.0.0 Bye").await;
            return;
        }
        if conn.reply("503 5.5.1 no service").await.is_none() {
            return;
        }
    }
}

/// The reply to `RCPT TO:<path>`: scripted, else as a store that knows
/// `known_users` (when set) would answer, else 250.
fn rcpt_reply(live: &Live, path: &str) -> String {
    let lower = path.to_ascii_lowercase();
    if let Some(reply) = live.rcpt_replies.get(&lower) {
        return reply.clone();
    }
    match &live.cfg.known_users {
        Some(users) if !users.iter().any(|u| u.eq_ignore_ascii_case(path)) => {
            format!("550 5.1.1 <{path}>: Recipient address rejected: User unknown")
        }
        _ => "250 2.1.5 Ok".to_owned(),
    }
}

fn ehlo_reply(live: &Live, in_tls: bool) -> String {
    let cfg = &live.cfg;
    let mut lines = vec![cfg.hostname.clone()];
    if cfg.pipelining {
        lines.push("PIPELINING".into());
    }
    if let Some(size) = cfg.size {
        lines.push(format!("SIZE {size}"));
    }
    if cfg.eightbitmime {
        lines.push("8BITMIME".into());
    }
    if cfg.smtputf8 {
        lines.push("SMTPUTF8".into());
    }
    if cfg.dsn {
        lines.push("DSN".into());
    }
    if live.acceptor.is_some() && !in_tls {
        lines.push("STARTTLS".into());
    }
    if cfg.requiretls && in_tls {
        lines.push("REQUIRETLS".into());
    }
    lines.push("ENHANCEDSTATUSCODES".into());
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}", if i == last { ' ' } else { '-' }))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Reads data lines up to `.` CRLF, removing one leading dot from each
/// (RFC 5321 §4.5.2). Lines end at LF, so a bare LF also starts a line.
async fn read_data(conn: &mut Conn) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let (line, _) = conn.read_line().await?;
        if line == b".\r\n" {
            return Some(data);
        }
        match line.strip_prefix(b".") {
            Some(rest) => data.extend_from_slice(rest),
            None => data.extend_from_slice(&line),
        }
    }
}

/// For `MAIL FROM:<a> P=V` (keyword case-insensitive): the path between the
/// angle brackets and the parameters after them.
fn path_after(line: &str, keyword: &str) -> Option<(String, String)> {
    let upper = line.to_ascii_uppercase();
    let start = upper.find(keyword)? + keyword.len();
    let rest = line.get(start..)?.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((rest[..end].to_owned(), rest[end + 1..].trim().to_owned()))
}

/// The value of `NAME=value` among space-separated parameters.
fn param(params: &str, name: &str) -> Option<String> {
    params.split_ascii_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.eq_ignore_ascii_case(name).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Client;

    #[test]
    fn accepts_a_message_and_records_everything() {
        let sink = Sink::start(SinkConfig {
            rcpt_replies: vec![(
                "nobody@example.test".into(),
                "550 5.1.1 no such user".into(),
            )],
            size: Some(1000),
            ..SinkConfig::default()
        });
        let mut c = Client::connect(sink.addr());
        let ehlo = c.ehlo("client.example.test");
        assert!(ehlo.text.contains("PIPELINING"), "{}", ehlo.text);
        assert!(ehlo.text.contains("SIZE 1000"), "{}", ehlo.text);
        assert!(!ehlo.text.contains("STARTTLS"), "{}", ehlo.text);
        c.cmd("MAIL FROM:<a@example.test> SIZE=20000", 552);
        c.cmd("MAIL FROM:<a@example.test> SIZE=20", 250);
        c.cmd("RCPT TO:<b@example.test>", 250);
        c.cmd("RCPT TO:<NOBODY@example.test>", 550);
        let r = c.data(b"Subject: x\r\n\r\n..dot\r\nbody");
        assert_eq!(r.code, 250, "{}", r.text);
        c.cmd("QUIT", 221);
        let got = sink.wait_for(1, Duration::from_secs(5));
        assert_eq!(got[0].helo, "client.example.test");
        assert_eq!(got[0].mail_from, "a@example.test");
        assert_eq!(got[0].rcpts, vec!["b@example.test".to_owned()]);
        assert_eq!(got[0].data, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(got[0].raw_mail_line, "MAIL FROM:<a@example.test> SIZE=20");
        assert_eq!(got[0].tls, None);
        assert_eq!(sink.connections(), 1);
        assert!(sink.commands().iter().any(|c| c == "QUIT"));
        assert!(sink.pipelined_commands().is_empty());
    }

    #[test]
    fn pipelined_commands_are_answered_in_order() {
        let sink = Sink::start(SinkConfig::default());
        let mut c = Client::connect(sink.addr());
        c.ehlo("c.example.test");
        c.send(b"MAIL FROM:<>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n");
        assert_eq!(c.read_reply().code, 250);
        assert_eq!(c.read_reply().code, 250);
        assert_eq!(c.read_reply().code, 354);
        c.send(b"hi\r\n.\r\n");
        assert_eq!(c.read_reply().code, 250);
        let got = sink.wait_for(1, Duration::from_secs(5));
        assert_eq!(got[0].mail_from, "");
        assert_eq!(
            sink.pipelined_commands(),
            vec!["RCPT TO:<x@example.test>".to_owned(), "DATA".to_owned()]
        );
    }

    #[test]
    fn starttls_with_the_given_certificate() {
        let pki = crate::pki::TestPki::new();
        let sink = Sink::start(SinkConfig {
            tls: SinkTls::Cert(pki.issue(&["mx.example.test"])),
            ..SinkConfig::default()
        });
        let mut c = Client::connect(sink.addr());
        assert!(c.ehlo("c.example.test").text.contains("STARTTLS"));
        let mut t = c.starttls(pki.client_config(), "mx.example.test");
        assert!(!t.ehlo("c.example.test").text.contains("STARTTLS"));
        t.cmd("MAIL FROM:<a@example.test>", 250);
        t.cmd("RCPT TO:<b@example.test>", 250);
        assert_eq!(t.data(b"x").code, 250);
        let got = sink.wait_for(1, Duration::from_secs(5));
        assert!(
            got[0]
                .tls
                .as_deref()
                .is_some_and(|v| v.starts_with("TLSv1."))
        );
    }

    #[test]
    fn refusing_greeting_and_reconfiguration() {
        let sink = Sink::start(SinkConfig {
            greeting: 554,
            ..SinkConfig::default()
        });
        let mut c = Client::connect_raw(sink.addr());
        assert_eq!(c.read_reply().code, 554);
        c.cmd("EHLO x", 503);
        c.cmd("QUIT", 221);
        sink.reconfigure(|cfg| cfg.greeting = 421);
        let mut c = Client::connect_raw(sink.addr());
        assert_eq!(c.read_reply().code, 421);
        assert!(c.is_closed());
        sink.reconfigure(|cfg| cfg.greeting = 220);
        let _ = Client::connect(sink.addr());
        assert_eq!(sink.connections(), 3);
    }

    #[test]
    fn a_store_that_knows_its_users_and_counts_open_connections() {
        let sink = Sink::start(SinkConfig {
            known_users: Some(vec!["Alice@example.test".into()]),
            rcpt_replies: vec![("busy@example.test".into(), "450 4.2.1 busy".into())],
            ..SinkConfig::default()
        });
        let mut c = Client::connect(sink.addr());
        c.ehlo("c");
        c.cmd("MAIL FROM:<>", 250);
        c.cmd("RCPT TO:<alice@example.test>", 250);
        let r = c.cmd("RCPT TO:<bob@example.test>", 550);
        assert!(r.text.contains("5.1.1 <bob@example.test>"), "{}", r.text);
        c.cmd("RCPT TO:<busy@example.test>", 450);
        let second = Client::connect(sink.addr());
        sink.wait_open(2, Duration::from_secs(5));
        drop(second);
        sink.wait_open(1, Duration::from_secs(5));
        assert_eq!(sink.max_open_connections(), 2);
    }

    #[test]
    fn stall_after_data_never_answers() {
        let sink = Sink::start(SinkConfig {
            stall_after_data: true,
            ..SinkConfig::default()
        });
        let mut c = Client::connect(sink.addr());
        c.ehlo("c");
        c.cmd("MAIL FROM:<a@example.test>", 250);
        c.cmd("RCPT TO:<b@example.test>", 250);
        c.cmd("DATA", 354);
        c.send(b"x\r\n.\r\n");
        c.socket()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(c.try_read_reply().is_none());
        assert_eq!(sink.stalled(), 1);
        assert!(sink.received().is_empty());
    }

    #[test]
    fn path_and_param_parsing() {
        assert_eq!(
            path_after("MAIL FROM:<a@b> SIZE=5 BODY=8BITMIME", "FROM:"),
            Some(("a@b".into(), "SIZE=5 BODY=8BITMIME".into()))
        );
        assert_eq!(
            path_after("rcpt to: <x@y>", "TO:"),
            Some(("x@y".into(), "".into()))
        );
        assert_eq!(path_after("MAIL FROM:a@b", "FROM:"), None);
        assert_eq!(param("SIZE=5 BODY=8BITMIME", "size"), Some("5".into()));
        assert_eq!(param("BODY=8BITMIME", "SIZE"), None);
    }
}
