//! Listeners and the connection driver (the mini-redis shape): accept with
//! backoff, a connection permit per task, every read under a timeout and
//! raced against shutdown, STARTTLS as a change of stream type.

use crate::accept::{AcceptPipeline, Answer};
use crate::conn_limit::{ConnLimit, ListenerSlots, Refusal};
use crate::live::{Live, LiveSlot, Stable};
use crate::metrics::{
    ConnRefusal, InboundMetrics, ListenerMetrics, RejectReason, SessionOutcome, UserLimit,
};
use crate::screening::ConnScreen;
use crate::session::{Event, IncomingMessage, Session, SessionConfig};
use portcullis_config::Role;
use portcullis_tls::{ServerTls, TlsInfo};
use portcullis_types::TlsSummary;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

/// A bound listener, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerHandle {
    /// The address actually bound (with the ephemeral port resolved).
    pub local_addr: SocketAddr,
    /// The listener's role.
    pub role: Role,
    /// Connections it takes at most (`[[listen]] max_connections` or its
    /// share of `[limits] max_connections`).
    pub max_connections: u32,
}

/// The inbound service: shared by all listeners and sessions. Built by
/// [`InboundBuilder`](crate::InboundBuilder).
pub struct Inbound {
    pub(crate) tls: Option<ServerTls>,
    pub(crate) metrics: Arc<InboundMetrics>,
    /// The total over all listeners.
    pub(crate) limits: ConnLimit,
    /// The settings, AUTH checker and accept pipeline in force: read once
    /// per connection, replaced by a reload.
    pub(crate) live: LiveSlot,
    /// What outlives a reload (lockouts, rates, the spooler, the clock).
    pub(crate) stable: Stable,
    pub(crate) session_ids: AtomicU64,
}

/// What every connection of one listener shares.
struct Listening {
    role: Role,
    slots: ListenerSlots,
    metrics: Arc<ListenerMetrics>,
}

enum Flow {
    Done(SessionOutcome),
    StartTls,
}

/// One connection's session as the driver carries it across STARTTLS:
/// the session, its pending replies, the server's shutdown and the
/// session's end (`[limits] max_session_duration` after the connection).
struct Conn<'a> {
    /// The settings generation the session started under.
    live: &'a Live,
    session: &'a mut Session,
    out: &'a mut Vec<u8>,
    shutdown: &'a CancellationToken,
    deadline: Instant,
    /// The screen as this connection meets it.
    screen: ConnScreen,
}

/// Why the driver closes a session while waiting for input.
enum Closing {
    /// The server is shutting down.
    Shutdown,
    /// The client said nothing within the timeout.
    Timeout,
}

impl Closing {
    /// The 421 reply that says so.
    fn line(&self, hostname: &str) -> String {
        match self {
            Closing::Shutdown => {
                format!("421 4.3.2 {hostname} Service shutting down, closing connection\r\n")
            }
            Closing::Timeout => {
                format!("421 4.4.2 {hostname} Timeout exceeded, closing connection\r\n")
            }
        }
    }

    /// How the session ended.
    fn outcome(&self) -> SessionOutcome {
        match self {
            Closing::Shutdown => SessionOutcome::Shutdown,
            Closing::Timeout => SessionOutcome::Timeout,
        }
    }
}

impl Inbound {
    /// The metrics of the inbound side.
    pub fn metrics(&self) -> &Arc<InboundMetrics> {
        &self.metrics
    }

    /// The screen in force (the generation new connections start under;
    /// its state is shared by every generation), for `screen show` and
    /// `screen clear`, its sweep and its metrics; `None` when the service
    /// was built without one.
    pub fn screen(&self) -> Option<portcullis_screen::Screen> {
        self.live.get().screen.clone()
    }

    /// The failed-AUTH accounting every generation shares, for cluster
    /// mode's exchange of failures and lockouts between nodes.
    pub fn auth_guard(&self) -> Arc<portcullis_submission::lockout::AuthGuard> {
        self.stable.guard.clone()
    }

    /// Serves one listener until `shutdown`; each connection runs in a task
    /// tracked by `tracker` so shutdown can wait for them. The listener
    /// takes at most `handle.max_connections` connections (and its
    /// per-address share), whatever the other listeners carry.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        handle: ListenerHandle,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        if self.live.get().session_config(handle.role).is_none() {
            return;
        }
        let listening = Arc::new(Listening {
            role: handle.role,
            slots: ListenerSlots::new(self.limits.clone(), handle.max_connections),
            metrics: self
                .metrics
                .listener(handle.local_addr, handle.role.as_str()),
        });
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    let this = self.clone();
                    let listening = listening.clone();
                    let shutdown = shutdown.clone();
                    let sid = this.session_ids.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("session", session = %format_args!("{sid:08x}"), %peer, tls = tracing::field::Empty);
                    tracker.spawn(
                        async move { this.connection(stream, peer, listening, shutdown).await }
                            .instrument(span),
                    );
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer: SocketAddr,
        listening: Arc<Listening>,
        shutdown: CancellationToken,
    ) {
        // Read once: the session runs under these settings to its end,
        // whatever a reload puts in force meanwhile.
        let live = self.live.get();
        let Some(cfg) = live.session_config(listening.role) else {
            return;
        };
        // The session's end is counted from the connection, before any
        // handshake: RFC 5321 §4.5.3.2 timeouts bound each wait, this
        // bounds the whole.
        let deadline = Instant::now() + cfg.limits.max_session_duration;
        self.metrics.connection();
        let ip = canonical_ip(peer.ip());
        let _guard = match listening.slots.acquire(ip, live.max_per_addr) {
            Ok(g) => g,
            Err(why) => {
                let metric = match why {
                    Refusal::Total => ConnRefusal::LimitTotal,
                    Refusal::Listener => ConnRefusal::LimitListener,
                    Refusal::PerAddress => ConnRefusal::LimitPerIp,
                };
                self.metrics.refused(metric);
                listening.metrics.refused(metric);
                info!(
                    reason = metric.as_str(),
                    address = %crate::conn_limit::AddrKey::of(ip),
                    "connection refused: too many connections"
                );
                let line = format!(
                    "421 4.7.0 {} Too many connections, try again later\r\n",
                    cfg.hostname
                );
                refuse(&mut tcp, line.as_bytes()).await;
                return;
            }
        };
        let trusted = cfg.relay.trusts(ip);
        let screen = match ConnScreen::connect(live.screen.as_ref(), listening.role, ip, trusted) {
            Ok(screen) => screen,
            Err(reply) => {
                self.metrics.refused(ConnRefusal::Rate);
                listening.metrics.refused(ConnRefusal::Rate);
                // The screen logged it ("screen refused", check
                // rate_connections).
                let mut line = Vec::new();
                reply.write_to(&mut line);
                refuse(&mut tcp, &line).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        debug!("connected");
        listening.metrics.opened();
        self.metrics.session_open();
        let session = Session::new(cfg, ip).with_spooler(self.stable.spooler.clone());
        let outcome = self
            .session(tcp, session, &live, &shutdown, deadline, screen)
            .await;
        self.metrics.session_closed(outcome);
        listening.metrics.closed();
        debug!(outcome = outcome.as_str(), "disconnected");
    }

    /// Runs `session` (its listener's settings in it) on `tcp` to its end:
    /// the greeting pause, the greeting, the commands, STARTTLS.
    async fn session(
        &self,
        mut tcp: TcpStream,
        mut session: Session,
        live: &Live,
        shutdown: &CancellationToken,
        deadline: Instant,
        screen: ConnScreen,
    ) -> SessionOutcome {
        // RFC 8314 §3.3: implicit TLS from the first byte; the greeting
        // follows the handshake.
        let implicit_tls = session.config().role == Role::Submissions;
        if !implicit_tls {
            if let Some(outcome) = self.pregreet(&mut tcp, session.config()).await {
                return outcome;
            }
            if shutdown.is_cancelled() {
                let line = format!(
                    "421 4.3.2 {} Service shutting down\r\n",
                    session.config().hostname
                );
                refuse(&mut tcp, line.as_bytes()).await;
                return SessionOutcome::Shutdown;
            }
        }
        let mut out = Vec::with_capacity(256);
        let mut conn = Conn {
            live,
            session: &mut session,
            out: &mut out,
            shutdown,
            deadline,
            screen,
        };
        if implicit_tls {
            return self.over_tls(tcp, &mut conn, true).await;
        }
        conn.session.greeting(conn.out);
        match self.drive(&mut tcp, &mut conn).await {
            Flow::Done(o) => {
                self.finish(conn.session, &mut tcp).await;
                o
            }
            Flow::StartTls => self.over_tls(tcp, &mut conn, false).await,
        }
    }

    /// The rest of the session over TLS: the handshake, the greeting when
    /// `greet` (implicit TLS), then the session until it ends.
    async fn over_tls(&self, tcp: TcpStream, conn: &mut Conn<'_>, greet: bool) -> SessionOutcome {
        let Some(mut tls) = self.handshake(tcp, conn.session).await else {
            return SessionOutcome::TlsFailed;
        };
        if greet {
            conn.session.greeting(conn.out);
        }
        let outcome = match self.drive(&mut tls, conn).await {
            Flow::Done(o) => o,
            Flow::StartTls => SessionOutcome::Errors,
        };
        self.finish(conn.session, &mut tls).await;
        outcome
    }

    /// Catches clients that talk before the greeting (spam bots that do not
    /// wait; RFC 5321 §4.3.1 says the client waits for the 220).
    async fn pregreet(&self, tcp: &mut TcpStream, cfg: &SessionConfig) -> Option<SessionOutcome> {
        let pause = cfg.limits.greet_pause;
        let deadline = Instant::now() + pause;
        loop {
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    r = tcp.readable() => if r.is_err() { return Some(SessionOutcome::IoError) },
                }
            }
            // A non-blocking peek asks the kernel directly: with no pause,
            // tokio's readiness may not have seen input that arrived with
            // the connection. After `readable()`, go through `try_io` so a
            // spurious wake-up clears tokio's readiness instead of spinning.
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            let mut peek = || socket2::SockRef::from(&*tcp).peek(&mut probe);
            let peeked = if pause.is_zero() {
                peek()
            } else {
                tcp.try_io(tokio::io::Interest::READABLE, peek)
            };
            match peeked {
                Ok(0) => return Some(SessionOutcome::Disconnect),
                Ok(n) => {
                    self.metrics.refused(ConnRefusal::Pregreet);
                    warn!(octets = n, "client talked before the greeting; rejected");
                    let line = format!(
                        "554 5.5.1 {} Protocol error: talking before the greeting\r\n",
                        cfg.hostname
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        tcp.write_all(line.as_bytes()),
                    )
                    .await;
                    return Some(SessionOutcome::Refused);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !pause.is_zero() => {}
                Err(_) => return None,
            }
        }
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        session: &mut Session,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let tls = self.tls.as_ref()?;
        let timeout = session.config().limits.tls_handshake_timeout;
        match tokio::time::timeout(timeout, tls.acceptor().accept(tcp)).await {
            Ok(Ok(stream)) => {
                let (_, conn) = stream.get_ref();
                let info = TlsInfo::from_connection(conn).unwrap_or(TlsInfo {
                    version: "unknown".into(),
                    cipher: "unknown".into(),
                });
                self.metrics.tls_ok(&info.version);
                tracing::Span::current().record("tls", tracing::field::display(&info.version));
                debug!(version = %info.version, cipher = %info.cipher, "tls established");
                session.tls_started(TlsSummary {
                    version: info.version,
                    cipher: info.cipher,
                });
                Some(stream)
            }
            Ok(Err(e)) => {
                self.metrics.tls_failed();
                info!(error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                self.metrics.tls_failed();
                info!("tls handshake timed out");
                None
            }
        }
    }

    /// Runs the session over one stream until it ends or asks for TLS.
    /// At `deadline` (`[limits] max_session_duration` after the connection)
    /// the session ends with 421 4.4.2: at once when it waits for a
    /// command, after the message when data is arriving, but no later than
    /// one data timeout past the deadline.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        conn: &mut Conn<'_>,
    ) -> Flow {
        let command_timeout = conn.session.config().limits.command_timeout;
        loop {
            let session = &mut *conn.session;
            if conn.shutdown.is_cancelled() {
                session.begin_shutdown();
            }
            let now = Instant::now();
            if now >= conn.deadline {
                session.expire();
            }
            let event = session.step(conn.out);
            for reason in session.take_refusals() {
                info!(reason, "message refused at the end of its data");
            }
            if let Event::Close = event {
                log_limit_close(session);
            }
            match event {
                Event::NeedInput => {
                    if let Some(flow) = self.read_more(stream, conn, now).await {
                        return flow;
                    }
                }
                Event::StartTls => return self.start_tls(stream, conn).await,
                Event::CheckSender(check) => {
                    let answer = conn
                        .screen
                        .sender(&conn.live.pipeline, &check, &self.metrics)
                        .await;
                    session.sender_checked(answer.refusal.as_ref(), answer.spf_pass, conn.out);
                }
                Event::CheckRecipient(check) => {
                    let refusal = conn.screen.recipient(&check).await;
                    session.recipient_checked(refusal.as_ref(), conn.out);
                }
                Event::CheckAuth(check) => {
                    let outcome = conn.live.auth.check(*check, session.peer()).await;
                    session.auth_checked(outcome, conn.out);
                }
                Event::Message(msg) => store(&conn.live.pipeline, *msg, session, conn.out).await,
                Event::Close => {
                    let _ = self.write(stream, conn.out, command_timeout).await;
                    return Flow::Done(session.close_outcome());
                }
            }
        }
    }

    /// Writes the replies and waits for more input (the command or data
    /// timeout, and the session's end, bound the wait); a [`Flow`] when
    /// the session ends instead. `now` is when the session last stepped.
    async fn read_more<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        conn: &mut Conn<'_>,
        now: Instant,
    ) -> Option<Flow> {
        let session = &mut *conn.session;
        let (command_timeout, data_timeout) = session_limits(session);
        // Data under way at the deadline may finish within one data timeout.
        let data_deadline = conn.deadline + data_timeout;
        let in_data = session.in_data();
        if session.is_expired() && (!in_data || now >= data_deadline) {
            // Idle at the end of its time, or data that outlived its
            // grace: say so now rather than at a command that may never
            // come.
            session.close_expired(conn.out);
            log_limit_close(session);
            let _ = self.write(stream, conn.out, command_timeout).await;
            return Some(Flow::Done(SessionOutcome::TooLong));
        }
        if !conn.out.is_empty() && !self.write(stream, conn.out, command_timeout).await {
            return Some(Flow::Done(SessionOutcome::IoError));
        }
        // Each wait stops at the session's end too, so an idle client is
        // told at the deadline, not a timeout later.
        let (timeout, end) = if in_data {
            (data_timeout, data_deadline)
        } else {
            (command_timeout, conn.deadline)
        };
        let until_end = end.saturating_duration_since(Instant::now());
        let wait = timeout.min(until_end);
        let ends_session = until_end <= timeout;
        let buf = session.input_buffer();
        buf.reserve(if in_data { 64 * 1024 } else { 1024 });
        let read = tokio::select! {
            // Data in progress may finish within the grace period.
            _ = conn.shutdown.cancelled(), if !in_data => None,
            r = tokio::time::timeout(wait, stream.read_buf(buf)) => Some(r),
        };
        let closing = match read {
            None => {
                session.begin_shutdown();
                Closing::Shutdown
            }
            // The wait ran into the session's end: the next turn of the
            // loop closes it with 421 4.4.2.
            Some(Err(_)) if ends_session => return None,
            Some(Err(_)) => {
                // RFC 5321 §4.5.3.2: the server may close after its timeout.
                info!(in_data, "timeout");
                Closing::Timeout
            }
            Some(Ok(Ok(0))) => return Some(Flow::Done(SessionOutcome::Disconnect)),
            Some(Ok(Ok(_))) => return None,
            Some(Ok(Err(e))) => {
                debug!(error = %e, "read failed");
                return Some(Flow::Done(SessionOutcome::IoError));
            }
        };
        let line = closing.line(&session_hostname(session));
        conn.out.extend_from_slice(line.as_bytes());
        let _ = self.write(stream, conn.out, command_timeout).await;
        Some(Flow::Done(closing.outcome()))
    }

    /// STARTTLS: the 220 goes out, and whatever the client pipelined
    /// behind the command is discarded before the handshake.
    async fn start_tls<S: AsyncWrite + Unpin>(&self, stream: &mut S, conn: &mut Conn<'_>) -> Flow {
        let session = &mut *conn.session;
        let (command_timeout, _) = session_limits(session);
        if !self.write(stream, conn.out, command_timeout).await {
            return Flow::Done(SessionOutcome::IoError);
        }
        let pipelined = session.buffered();
        if pipelined > 0 {
            // RFC 3207 §4.2 / CVE-2011-0411: never execute these.
            self.metrics.starttls_injection();
            warn!(
                octets = pipelined,
                "discarded bytes pipelined behind STARTTLS"
            );
        }
        session.discard_input();
        Flow::StartTls
    }

    async fn write<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        out: &mut Vec<u8>,
        wait: Duration,
    ) -> bool {
        let result = tokio::time::timeout(wait, async {
            stream.write_all(out).await?;
            stream.flush().await
        })
        .await;
        out.clear();
        matches!(result, Ok(Ok(())))
    }

    async fn finish<S: AsyncWrite + Unpin>(&self, session: &Session, stream: &mut S) {
        let stats = session.stats();
        self.metrics
            .rejected(RejectReason::Relay, stats.relay_denied.into());
        self.metrics.rejected(
            RejectReason::TooManyRecipients,
            stats.too_many_recipients.into(),
        );
        self.metrics
            .rejected(RejectReason::Size, stats.too_big.into());
        self.metrics
            .rejected(RejectReason::BareNewline, stats.bare_newline.into());
        self.metrics
            .rejected(RejectReason::Loop, stats.too_many_hops.into());
        self.metrics
            .rejected(RejectReason::Screen, stats.screen_refused.into());
        self.metrics.smtp_auth_locked(stats.auth_locked.into());
        self.metrics
            .user_limited(UserLimit::MessagesPerHour, stats.user_rate_limited.into());
        self.metrics.user_limited(
            UserLimit::RecipientsPerMessage,
            stats.user_recipient_limited.into(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    }
}

/// Hands a complete message to the accept `pipeline` the session started
/// under and tells the session its answer.
async fn store(
    pipeline: &AcceptPipeline,
    msg: IncomingMessage,
    session: &mut Session,
    out: &mut Vec<u8>,
) {
    let hostname = session_hostname(session);
    match pipeline.accept(msg, &hostname).await {
        Answer::Stored(id) => session.message_stored(id, out),
        Answer::Rejected(reply) => session.message_rejected(&reply, out),
        Answer::Failed => session.message_failed(out),
    }
}

/// Sends a refusal to a connection that is not served, and gives up
/// after a few seconds (a client that does not read cannot hold it).
async fn refuse(tcp: &mut TcpStream, line: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(line)).await;
}

/// One log line when a session limit (not the client) ended the session.
fn log_limit_close(session: &Session) {
    match session.close_outcome() {
        SessionOutcome::TooLong => info!(
            max_session_duration_secs = session.config().limits.max_session_duration.as_secs(),
            "session too long; closed"
        ),
        SessionOutcome::Junk => info!(
            max_junk_commands = session.config().limits.max_junk_commands,
            "too many commands without progress; closed"
        ),
        _ => {}
    }
}

fn session_limits(session: &Session) -> (Duration, Duration) {
    let l = &session.config().limits;
    (l.command_timeout, l.data_timeout)
}

fn session_hostname(session: &Session) -> String {
    session.config().hostname.clone()
}

/// IPv4-mapped IPv6 peers count as their IPv4 address (limits, relay checks).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Binds a listener socket (with SO_REUSEADDR, as tokio does by default).
pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(address).await
}
