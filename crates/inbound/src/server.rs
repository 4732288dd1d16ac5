//! Listeners and the connection driver (the mini-redis shape): accept with
//! backoff, a connection permit per task, every read under a timeout and
//! raced against shutdown, STARTTLS as a change of stream type.

use crate::conn_limit::{ConnLimit, ListenerSlots, Refusal};
use crate::dkim::DkimSigners;
use crate::metrics::{
    AuthUnchecked, ConnRefusal, InboundMetrics, ListenerMetrics, RejectReason, SessionOutcome,
    UserLimit,
};
use crate::received::{TraceInfo, received_header};
use crate::session::{AuthCheck, AuthOutcome};
use crate::session::{Event, IncomingMessage, SenderCheck, Session, SessionConfig, VerifyScope};
use crate::spooler::{ReadBudget, Spooler};
use portcullis_auth::{Disposition, Envelope as AuthEnvelope, Verifier};
use portcullis_config::{Config, Role, SpfFail};
use portcullis_queue::Queue;
use portcullis_submission::hashing::{HashError, HashGate};
use portcullis_submission::lockout::{Attempt, AuthGuard, Failure, Lock, Scope};
use portcullis_submission::oauth::{self, Introspector};
use portcullis_submission::rate::SendRate;
use portcullis_submission::scram::{ClientFirst, ScramSecret};
use portcullis_submission::{Credential, UsersDb};
use portcullis_tls::{ServerTls, TlsInfo};
use portcullis_types::{Clock, Envelope, TlsSummary};
use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

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

/// The inbound service: shared by all listeners and sessions.
pub struct Inbound {
    queue: Queue,
    tls: Option<ServerTls>,
    metrics: Arc<InboundMetrics>,
    clock: Arc<dyn Clock>,
    /// The total over all listeners.
    limits: ConnLimit,
    max_per_addr: u32,
    configs: Vec<(Role, Arc<SessionConfig>)>,
    verifier: Option<Arc<Verifier>>,
    dkim: DkimSigners,
    users: Arc<UsersDb>,
    guard: Arc<AuthGuard>,
    /// Password checks (argon2id) at most one per core at a time.
    hashing: HashGate,
    oauth: Option<Arc<Introspector>>,
    /// Keys the fake SCRAM salts of unknown users (random per process).
    scram_key: [u8; 32],
    /// Draws queue ids; writes large messages to the store as they arrive.
    spooler: Spooler,
    /// Octets of spooled messages read back whole (for verification and
    /// signing) at once.
    read_budget: ReadBudget,
    session_ids: AtomicU64,
}

/// What every connection of one listener shares.
struct Listening {
    cfg: Arc<SessionConfig>,
    slots: ListenerSlots,
    metrics: Arc<ListenerMetrics>,
}

enum Flow {
    Done(SessionOutcome),
    StartTls,
}

impl Inbound {
    /// Builds the service from the runtime config. With a `verifier`, mail
    /// on `smtp` listeners is verified as `[verify]` says; without one it
    /// is not verified at all. Mail from authenticated users is signed
    /// with the `dkim` key of its From domain (see [`DkimSigners`]). With
    /// `oauth`, OAUTHBEARER and XOAUTH2 are offered and checked by it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        queue: Queue,
        tls: Option<ServerTls>,
        metrics: Arc<InboundMetrics>,
        clock: Arc<dyn Clock>,
        verifier: Option<Arc<Verifier>>,
        dkim: DkimSigners,
        oauth: Option<Arc<Introspector>>,
    ) -> Arc<Inbound> {
        let guard = Arc::new(AuthGuard::new(config.submission.lockout.clone()));
        let spooler = Spooler::new(queue.clone(), clock.clone(), rand::random());
        // As many largest messages as there are cores (verification is CPU
        // work: more at once would not finish sooner), and 32 MiB at least.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
        let read_budget =
            ReadBudget::new((config.limits.max_message_size * cores).max(32 * 1024 * 1024));
        let rate = Arc::new(SendRate::new());
        metrics.watch_introspector(oauth.clone());
        let configs = [Role::Smtp, Role::Submission, Role::Submissions]
            .into_iter()
            .map(|role| {
                (
                    role,
                    Arc::new(SessionConfig {
                        hostname: config.hostname.clone(),
                        banner: config.banner.clone(),
                        role,
                        limits: config.limits.clone(),
                        relay: config.relay.clone(),
                        bare_newline: config.bare_newline,
                        tls_available: tls.is_some(),
                        // AUTH needs a users file or token introspection;
                        // on port 25 it is off unless
                        // `[submission] auth_on_smtp`.
                        auth: (config.users_file.is_some() || config.submission.oauth.is_some())
                            && (role != Role::Smtp || config.submission.auth_on_smtp),
                        submission: config.submission.clone(),
                        oauth: oauth.is_some(),
                        guard: guard.clone(),
                        rate: rate.clone(),
                        verify: match role {
                            // Submission is authenticated mail from our own
                            // users: only port 25 is verified.
                            Role::Smtp if verifier.is_some() && config.verify.enabled => {
                                VerifyScope {
                                    enabled: true,
                                    skip_trusted: config.verify.skip_trusted,
                                    spf_at_mail: config.verify.spf_fail == SpfFail::Reject,
                                }
                            }
                            _ => VerifyScope::default(),
                        },
                    }),
                )
            })
            .collect();
        Arc::new(Inbound {
            queue,
            tls,
            metrics,
            clock,
            limits: ConnLimit::new(config.limits.max_connections),
            max_per_addr: config.limits.max_connections_per_ip,
            configs,
            verifier,
            dkim,
            users: Arc::new(UsersDb::new(config.users_file.clone())),
            guard,
            hashing: HashGate::per_core(config.submission.auth_queue_wait),
            oauth,
            scram_key: rand::random(),
            spooler,
            read_budget,
            session_ids: AtomicU64::new(rand::random::<u32>() as u64),
        })
    }

    /// The metrics of the inbound side.
    pub fn metrics(&self) -> &Arc<InboundMetrics> {
        &self.metrics
    }

    fn session_config(&self, role: Role) -> Option<Arc<SessionConfig>> {
        self.configs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, c)| c.clone())
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
        let Some(cfg) = self.session_config(handle.role) else {
            return;
        };
        let listening = Arc::new(Listening {
            cfg,
            slots: ListenerSlots::new(
                self.limits.clone(),
                handle.max_connections,
                self.max_per_addr,
            ),
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
        // The session's end is counted from the connection, before any
        // handshake: RFC 5321 §4.5.3.2 timeouts bound each wait, this
        // bounds the whole.
        let deadline = tokio::time::Instant::now() + listening.cfg.limits.max_session_duration;
        let cfg = listening.cfg.clone();
        self.metrics.connection();
        let ip = canonical_ip(peer.ip());
        let _guard = match listening.slots.acquire(ip) {
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
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), tcp.write_all(line.as_bytes()))
                        .await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        debug!("connected");
        listening.metrics.opened();
        self.metrics.session_open();
        let outcome = self.session(tcp, ip, cfg, &shutdown, deadline).await;
        self.metrics.session_closed(outcome);
        listening.metrics.closed();
        debug!(outcome = outcome.as_str(), "disconnected");
    }

    async fn session(
        &self,
        mut tcp: TcpStream,
        ip: IpAddr,
        cfg: Arc<SessionConfig>,
        shutdown: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> SessionOutcome {
        let mut session = Session::new(cfg.clone(), ip).with_spooler(self.spooler.clone());
        let mut out = Vec::with_capacity(256);
        if cfg.role == Role::Submissions {
            // RFC 8314 §3.3: TLS from the first byte; the greeting follows
            // the handshake.
            let Some(mut tls) = self.handshake(tcp, &cfg, &mut session).await else {
                return SessionOutcome::TlsFailed;
            };
            session.greeting(&mut out);
            let outcome = match self
                .drive(&mut tls, &mut session, &mut out, shutdown, deadline)
                .await
            {
                Flow::Done(o) => o,
                Flow::StartTls => SessionOutcome::Errors,
            };
            self.finish(&session, &mut tls).await;
            return outcome;
        }
        if let Some(outcome) = self.pregreet(&mut tcp, &cfg).await {
            return outcome;
        }
        if shutdown.is_cancelled() {
            let line = format!("421 4.3.2 {} Service shutting down\r\n", cfg.hostname);
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tcp.write_all(line.as_bytes())).await;
            return SessionOutcome::Shutdown;
        }
        session.greeting(&mut out);
        match self
            .drive(&mut tcp, &mut session, &mut out, shutdown, deadline)
            .await
        {
            Flow::Done(o) => {
                self.finish(&session, &mut tcp).await;
                o
            }
            Flow::StartTls => {
                let Some(mut tls) = self.handshake(tcp, &cfg, &mut session).await else {
                    return SessionOutcome::TlsFailed;
                };
                let outcome = match self
                    .drive(&mut tls, &mut session, &mut out, shutdown, deadline)
                    .await
                {
                    Flow::Done(o) => o,
                    Flow::StartTls => SessionOutcome::Errors,
                };
                self.finish(&session, &mut tls).await;
                outcome
            }
        }
    }

    /// Catches clients that talk before the greeting (spam bots that do not
    /// wait; RFC 5321 §4.3.1 says the client waits for the 220).
    async fn pregreet(&self, tcp: &mut TcpStream, cfg: &SessionConfig) -> Option<SessionOutcome> {
        let pause = cfg.limits.greet_pause;
        let deadline = tokio::time::Instant::now() + pause;
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
        cfg: &SessionConfig,
        session: &mut Session,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let tls = self.tls.as_ref()?;
        match tokio::time::timeout(cfg.limits.tls_handshake_timeout, tls.acceptor().accept(tcp))
            .await
        {
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
        session: &mut Session,
        out: &mut Vec<u8>,
        shutdown: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Flow {
        let limits = session_limits(session);
        // Data under way at the deadline may finish within one data timeout.
        let data_deadline = deadline + limits.1;
        loop {
            if shutdown.is_cancelled() {
                session.begin_shutdown();
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                session.expire();
            }
            let event = session.step(out);
            for reason in session.take_refusals() {
                info!(reason, "message refused at the end of its data");
            }
            if let Event::Close = event {
                log_limit_close(session);
            }
            match event {
                Event::NeedInput => {
                    let in_data = session.in_data();
                    if session.is_expired() && (!in_data || now >= data_deadline) {
                        // Idle at the end of its time, or data that outlived
                        // its grace: say so now rather than at a command
                        // that may never come.
                        session.close_expired(out);
                        log_limit_close(session);
                        let _ = self.write(stream, out, limits.0).await;
                        return Flow::Done(SessionOutcome::TooLong);
                    }
                    if !out.is_empty() && !self.write(stream, out, limits.0).await {
                        return Flow::Done(SessionOutcome::IoError);
                    }
                    // Each wait stops at the session's end too, so an idle
                    // client is told at the deadline, not a timeout later.
                    let (timeout, end) = if in_data {
                        (limits.1, data_deadline)
                    } else {
                        (limits.0, deadline)
                    };
                    let until_end = end.saturating_duration_since(tokio::time::Instant::now());
                    let wait = timeout.min(until_end);
                    let ends_session = until_end <= timeout;
                    let buf = session.input_buffer();
                    buf.reserve(if in_data { 64 * 1024 } else { 1024 });
                    let read = tokio::select! {
                        // Data in progress may finish within the grace period.
                        _ = shutdown.cancelled(), if !in_data => None,
                        r = tokio::time::timeout(wait, stream.read_buf(buf)) => Some(r),
                    };
                    match read {
                        None => {
                            session.begin_shutdown();
                            let line = format!(
                                "421 4.3.2 {} Service shutting down, closing connection\r\n",
                                session_hostname(session)
                            );
                            out.extend_from_slice(line.as_bytes());
                            let _ = self.write(stream, out, limits.0).await;
                            return Flow::Done(SessionOutcome::Shutdown);
                        }
                        // The wait ran into the session's end: the next
                        // turn of the loop closes it with 421 4.4.2.
                        Some(Err(_)) if ends_session => {}
                        Some(Err(_)) => {
                            // RFC 5321 §4.5.3.2: the server may close after its timeout.
                            info!(in_data, "timeout");
                            let line = format!(
                                "421 4.4.2 {} Timeout exceeded, closing connection\r\n",
                                session_hostname(session)
                            );
                            out.extend_from_slice(line.as_bytes());
                            let _ = self.write(stream, out, limits.0).await;
                            return Flow::Done(SessionOutcome::Timeout);
                        }
                        Some(Ok(Ok(0))) => return Flow::Done(SessionOutcome::Disconnect),
                        Some(Ok(Ok(_))) => {}
                        Some(Ok(Err(e))) => {
                            debug!(error = %e, "read failed");
                            return Flow::Done(SessionOutcome::IoError);
                        }
                    }
                }
                Event::StartTls => {
                    if !self.write(stream, out, limits.0).await {
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
                    return Flow::StartTls;
                }
                Event::CheckSender(check) => self.check_sender(*check, session, out).await,
                Event::CheckAuth(check) => self.check_auth(*check, session, out).await,
                Event::Message(msg) => self.store(*msg, session, out).await,
                Event::Close => {
                    let _ = self.write(stream, out, limits.0).await;
                    return Flow::Done(session.close_outcome());
                }
            }
        }
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
        self.metrics.smtp_auth_locked(stats.auth_locked.into());
        self.metrics
            .user_limited(UserLimit::MessagesPerHour, stats.user_rate_limited.into());
        self.metrics.user_limited(
            UserLimit::RecipientsPerMessage,
            stats.user_recipient_limited.into(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    }

    /// SMTP AUTH: lockouts first (a locked address or user costs no
    /// argon2 and no HTTP request), then the attempt is counted against
    /// the address and the user BEFORE the check, so concurrent guesses
    /// from one address stop at its limit without each costing a hash;
    /// then the mechanism's check: argon2 through the per-core
    /// [`HashGate`] for passwords (the users file reloaded first when it
    /// changed), the SCRAM proof, or token introspection. The outcome
    /// settles the count: a success takes it back, a failure keeps it and
    /// is delayed, a check that could not be made (454: hashing saturated,
    /// introspection busy, its breaker open or the endpoint failing) keeps
    /// it against the address only. Everything is logged with the user
    /// (never the secret) and counted.
    async fn check_auth(&self, check: AuthCheck, session: &mut Session, out: &mut Vec<u8>) {
        let ip = session.peer();
        let mechanism = check.mechanism();
        let claimed = check.user().to_string();
        let check = match check {
            AuthCheck::ScramStart(first) => {
                // Not a credential yet: nothing to count, only the lockouts.
                let named = (!claimed.is_empty()).then_some(claimed.as_str());
                let outcome = match self.guard.locked(ip, named, Instant::now()) {
                    Some(lock) => {
                        warn!(user = %claimed, mechanism, scope = lock.scope.as_str(), remaining_secs = lock.remaining.as_secs(), "AUTH refused: locked out");
                        AuthOutcome::Locked(lock)
                    }
                    None => self.scram_start(*first, ip, mechanism).await,
                };
                session.auth_checked(outcome, out);
                return;
            }
            other => other,
        };
        let attempt = match self.guard.attempt(ip, &claimed, Instant::now()) {
            Ok(attempt) => attempt,
            Err(lock) => {
                warn!(user = %claimed, mechanism, scope = lock.scope.as_str(), remaining_secs = lock.remaining.as_secs(), "AUTH refused: locked out");
                session.auth_checked(AuthOutcome::Locked(lock), out);
                return;
            }
        };
        let outcome = match check {
            AuthCheck::Password { user, password } => {
                let users = self.users.clone();
                let name = user.clone();
                let checked = self
                    .hashing
                    .run(move |memory| users.current().verify_in(&name, &password, memory))
                    .await;
                match checked {
                    Ok(Some(credential)) => {
                        self.metrics.password_check();
                        let via = match &credential {
                            Credential::Password => "password".to_string(),
                            Credential::App(label) => format!("app password {label}"),
                        };
                        self.auth_success(attempt, ip, user, mechanism, &via)
                    }
                    Ok(None) => {
                        self.metrics.password_check();
                        self.auth_failure(attempt, &user, mechanism, None).await
                    }
                    Err(e) => {
                        if e != HashError::Busy {
                            error!(user = %user, error = %e, "password check failed");
                        }
                        self.auth_unchecked(attempt, &user, mechanism, AuthUnchecked::HashBusy)
                            .await
                    }
                }
            }
            AuthCheck::ScramFinal { server, message } => {
                let user = server.username().to_string();
                // The proof is a few SHA-256 operations against the stored
                // secret: no PBKDF2 per attempt, so no gate is needed.
                match server.client_final(&message) {
                    Ok(server_final) => {
                        match self.auth_success(attempt, ip, user, mechanism, "password") {
                            AuthOutcome::Success { user } => {
                                AuthOutcome::ScramSuccess { user, server_final }
                            }
                            other => other,
                        }
                    }
                    Err(e) => {
                        debug!(user = %user, error = %e, "SCRAM exchange failed");
                        self.auth_failure(attempt, &user, mechanism, None).await
                    }
                }
            }
            AuthCheck::Bearer { response, .. } => {
                let challenge = |i: &Introspector| {
                    Some(oauth::error_challenge(
                        i.settings().required_scope.as_deref(),
                    ))
                };
                match &self.oauth {
                    None => self.auth_failure(attempt, &claimed, mechanism, None).await,
                    Some(introspector) => match introspector.check(&response.token).await {
                        Ok(owner) => {
                            if response
                                .user
                                .as_deref()
                                .is_some_and(|asked| !asked.eq_ignore_ascii_case(&owner))
                            {
                                info!(user = %claimed, token_user = %owner, "bearer token belongs to another user");
                                self.auth_failure(
                                    attempt,
                                    &claimed,
                                    mechanism,
                                    challenge(introspector),
                                )
                                .await
                            } else {
                                self.auth_success(attempt, ip, owner, mechanism, "bearer token")
                            }
                        }
                        Err(e) if e.is_temporary() => {
                            let why = match e {
                                oauth::OAuthError::Busy => AuthUnchecked::IntrospectionBusy,
                                oauth::OAuthError::CircuitOpen => AuthUnchecked::BreakerOpen,
                                _ => AuthUnchecked::Endpoint,
                            };
                            warn!(user = %claimed, mechanism, error = %e, "token introspection failed");
                            self.auth_unchecked(attempt, &claimed, mechanism, why).await
                        }
                        Err(e) => {
                            info!(user = %claimed, mechanism, error = %e, "bearer token refused");
                            self.auth_failure(attempt, &claimed, mechanism, challenge(introspector))
                                .await
                        }
                    },
                }
            }
            // Answered above, before anything was counted.
            AuthCheck::ScramStart(_) => return,
        };
        session.auth_checked(outcome, out);
    }

    /// SCRAM client-first: the user's secret (a fake one for an unknown
    /// user, so the exchange does not tell who exists) and the
    /// server-first-message. Acting as another user is a failure.
    async fn scram_start(&self, first: ClientFirst, ip: IpAddr, mechanism: &str) -> AuthOutcome {
        let user = first.username().to_string();
        if first.authzid().is_some_and(|a| a != user) {
            let failure = self.guard.failure(ip, &user, Instant::now());
            return self.failed(failure, &user, mechanism, None).await;
        }
        let users = self.users.current();
        let secret = users.scram_secret(&user).unwrap_or_else(|| {
            if users.contains(&user) {
                warn!(user = %user, "user has no SCRAM-SHA-256 secret; `portcullis user passwd` makes one");
            }
            ScramSecret::fake(&user, &self.scram_key)
        });
        let (server, server_first) = first.server_first(&secret);
        AuthOutcome::ScramChallenge {
            server: Box::new(server),
            server_first,
        }
    }

    fn auth_success(
        &self,
        attempt: Attempt,
        ip: IpAddr,
        user: String,
        mechanism: &str,
        via: &str,
    ) -> AuthOutcome {
        self.guard.succeeded(attempt, &user, ip, Instant::now());
        self.metrics.smtp_auth_success();
        info!(user = %user, mechanism, via, "authenticated");
        AuthOutcome::Success { user }
    }

    /// Settles `attempt` as a failure: waits its delay, logs and counts it
    /// (and the lockout it may start).
    async fn auth_failure(
        &self,
        attempt: Attempt,
        user: &str,
        mechanism: &str,
        challenge: Option<String>,
    ) -> AuthOutcome {
        let failure = self.guard.failed(attempt);
        self.failed(failure, user, mechanism, challenge).await
    }

    /// Logs and counts a failure, waits its delay: 535 follows.
    async fn failed(
        &self,
        failure: Failure,
        user: &str,
        mechanism: &str,
        challenge: Option<String>,
    ) -> AuthOutcome {
        self.metrics.smtp_auth_failure();
        warn!(
            user = %user,
            mechanism,
            delay_ms = failure.delay.as_millis() as u64,
            "authentication failed"
        );
        self.lockout_began(failure.locked, user);
        if !failure.delay.is_zero() {
            tokio::time::sleep(failure.delay).await;
        }
        AuthOutcome::Failed {
            challenge,
            lockout: failure.locked,
        }
    }

    /// Settles `attempt` as a check that could not be made: 454 4.7.0
    /// (RFC 4954 §6), counted against the address (and the session) but
    /// not the user, after the failure delay.
    async fn auth_unchecked(
        &self,
        attempt: Attempt,
        user: &str,
        mechanism: &str,
        why: AuthUnchecked,
    ) -> AuthOutcome {
        let failure = self.guard.unchecked(attempt);
        self.metrics.smtp_auth_temporary();
        self.metrics.smtp_auth_unchecked(why);
        warn!(
            user = %user,
            mechanism,
            reason = why.as_str(),
            delay_ms = failure.delay.as_millis() as u64,
            "AUTH not checked; answered 454"
        );
        self.lockout_began(failure.locked, user);
        if !failure.delay.is_zero() {
            tokio::time::sleep(failure.delay).await;
        }
        AuthOutcome::Temporary {
            lockout: failure.locked,
        }
    }

    /// Logs and counts the lockout a failure started, if any.
    fn lockout_began(&self, locked: Option<Lock>, user: &str) {
        if let Some(Lock { scope, remaining }) = locked {
            self.metrics.smtp_auth_lockout(scope == Scope::Ip);
            warn!(
                user = %user,
                scope = scope.as_str(),
                lockout_secs = remaining.as_secs(),
                "too many failed authentication attempts; lockout begins"
            );
        }
    }

    /// SPF at MAIL FROM (`[verify] spf_fail = "reject"`): refuse a failing
    /// sender before any data is sent.
    async fn check_sender(&self, check: SenderCheck, session: &mut Session, out: &mut Vec<u8>) {
        let Some(verifier) = &self.verifier else {
            session.sender_checked(None, out);
            return;
        };
        let envelope = AuthEnvelope {
            client_ip: check.client_ip,
            helo: &check.helo,
            sender: &check.sender,
        };
        let verdict = verifier.check_sender(&envelope).await;
        match &verdict.reply {
            Some(reply) => {
                let reason = if reply.is_permanent() {
                    RejectReason::Spf
                } else {
                    RejectReason::AuthTemporary
                };
                self.metrics.rejected(reason, 1);
                info!(from = %format_args!("<{}>", check.sender), spf = %verdict.spf.result, reply = %reply, "sender refused by SPF");
            }
            None => {
                if let Some(exception) = &verdict.exception {
                    info!(from = %format_args!("<{}>", check.sender), spf = %verdict.spf.result, %exception, "SPF result excused by an exception");
                }
            }
        }
        session.sender_checked(verdict.reply.as_ref(), out);
    }

    /// Verifies (when the session says so), stores a complete message and
    /// answers: 250 only after the fsync; a refusal from verification
    /// before anything is stored.
    async fn store(&self, mut msg: IncomingMessage, session: &mut Session, out: &mut Vec<u8>) {
        let now = self.clock.now();
        // A spooled message already has its id: its chunks are filed under it.
        let id = msg
            .spooled
            .as_ref()
            .map_or_else(|| self.spooler.new_id(), |s| s.id());
        let hostname = session_hostname(session);
        // A spooled message is read back whole only for what needs it as
        // one slice (verification now, DKIM signing below), within the
        // read budget; a small one is all in `msg.data` already.
        let mut whole = match (msg.spooled.as_mut(), msg.verify && self.verifier.is_some()) {
            (Some(spool), true) => match self.read_whole(&msg.data, spool).await {
                Ok(whole) => Some(whole),
                Err(e) => {
                    self.metrics.rejected(RejectReason::Store, 1);
                    error!(queue_id = %id, error = %e, "could not read the spooled message back; answered 451");
                    session.message_failed(out);
                    return;
                }
            },
            _ => None,
        };
        // The message is verified exactly as received: before our Received
        // header and before anything is removed from it.
        let verdict = match (&self.verifier, msg.verify) {
            (Some(verifier), true) => {
                let envelope = AuthEnvelope {
                    client_ip: msg.client_ip,
                    helo: &msg.helo,
                    sender: &msg.sender,
                };
                // The checks run on the verification runtime and share the
                // bytes: a spooled message's read-back copy (its budget
                // permit held until the checks end), or the message itself,
                // which comes back when the checks are done (a copy only if
                // a check is still busy after its timeout).
                match whole.take() {
                    Some((copy, _permit)) => Some(verifier.verify(&envelope, Arc::new(copy)).await),
                    None => {
                        let shared = Arc::new(std::mem::take(&mut msg.data));
                        let verdict = verifier.verify(&envelope, Arc::clone(&shared)).await;
                        msg.data = Arc::try_unwrap(shared).unwrap_or_else(|s| s.as_ref().clone());
                        Some(verdict)
                    }
                }
            }
            _ => None,
        };
        // Verified: the whole copy and its share of the budget go now.
        drop(whole);
        if let Some(v) = &verdict {
            for (method, result) in v.results.each() {
                self.metrics.auth_result(method, result);
            }
            self.metrics.auth_verdict(&v.disposition);
            // One line per message with every verdict.
            info!(
                queue_id = %id,
                from = %format_args!("<{}>", msg.sender),
                spf = %v.results.spf.result,
                dkim = %v.results.dkim_summary(),
                dmarc = %v.results.dmarc.result,
                dmarc_policy = v.results.dmarc.policy.map(|p| p.as_str()),
                header_from = %v.results.dmarc.from_domain,
                arc = %v.results.arc.result,
                verdict = v.disposition.as_str(),
                exception = v.exception.as_deref(),
                reply = v.disposition.reply().map(tracing::field::display),
                "message verified"
            );
            if let Some(reply) = v.disposition.reply() {
                let reason = match &v.disposition {
                    Disposition::TempFail(_) => RejectReason::AuthTemporary,
                    // RFC 7372: 5.7.23 is SPF's; every other refusal is DMARC's.
                    Disposition::Reject(r) if r.enhanced == Some((5, 7, 23)) => RejectReason::Spf,
                    _ => RejectReason::Dmarc,
                };
                self.metrics.rejected(reason, 1);
                session.message_rejected(reply, out);
                return;
            }
        }
        // RFC 8601 §5: results that claim to be ours but come from outside
        // the trust boundary are removed before ours are added, and so is
        // our quarantine tag. On every path: verified, authenticated and
        // trusted mail alike (a submitting user or a trusted application
        // is still outside the boundary of what we vouch for).
        let data = match portcullis_auth::strip_forged(&msg.data, &hostname) {
            Some(stripped) => {
                debug!(queue_id = %id, "removed Authentication-Results or X-Portcullis-Quarantine claiming to be ours");
                Cow::Owned(stripped)
            }
            None => Cow::Borrowed(msg.data.as_slice()),
        };
        let auth_headers = verdict.map(|v| v.headers).unwrap_or_default();
        let header = received_header(&TraceInfo {
            helo: &msg.helo,
            client_ip: msg.client_ip,
            hostname: &hostname,
            esmtp: msg.esmtp,
            tls: msg.tls.as_ref(),
            authenticated: msg.authenticated.is_some(),
            smtputf8: msg.smtputf8,
            id,
            recipients: &msg.recipients,
            now,
        });
        // Submitted mail of our own domains is DKIM-signed as it was
        // received (never lost: a failure leaves it unsigned).
        let signature = match &msg.authenticated {
            Some(user) if !self.dkim.is_empty() => match self.dkim.signer_for(&data, &msg.sender) {
                Some(signer) => match self.sign_whole(signer, &data, msg.spooled.as_mut()).await {
                    Ok(sig) => {
                        debug!(queue_id = %id, user = %user, domain = signer.domain(), selector = signer.selector(), "DKIM-signed");
                        sig
                    }
                    Err(e) => {
                        error!(queue_id = %id, user = %user, domain = signer.domain(), error = %e, "DKIM signing failed; accepting the message unsigned");
                        String::new()
                    }
                },
                None => String::new(),
            },
            _ => String::new(),
        };
        let spooled_len = msg.spooled.as_ref().map_or(0, |s| s.len());
        let size =
            signature.len() + header.len() + auth_headers.len() + data.len() + spooled_len as usize;
        let envelope = Envelope {
            id,
            sender: msg.sender,
            recipients: msg.recipients,
            ret: msg.ret,
            envid: msg.envid,
            body: msg.body_type,
            smtputf8: msg.smtputf8,
            received_at: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_ip: msg.client_ip,
            helo: msg.helo,
            tls: msg.tls,
            // Recorded where it is known, never guessed later (STYLE 8a).
            origin: if msg.authenticated.is_some() {
                portcullis_types::Origin::Submission
            } else {
                portcullis_types::Origin::Relay
            },
            authenticated: msg.authenticated,
            size: size as u64,
        };
        let sender = envelope.sender.to_string();
        let rcpts = envelope.recipients.len();
        let parts: [&[u8]; 4] = [
            signature.as_bytes(),
            header.as_bytes(),
            auth_headers.as_bytes(),
            &data,
        ];
        let stored = match msg.spooled {
            // The spooled chunks become the end of the body, where they are.
            Some(spool) => spool.commit(envelope, &parts).await,
            None => self.queue.enqueue_parts(envelope, &parts).await,
        };
        match stored {
            Ok(()) => {
                self.metrics.accepted(size);
                info!(queue_id = %id, from = %format_args!("<{sender}>"), rcpts, size, "message accepted");
                session.message_stored(id, out);
            }
            Err(e) => {
                self.metrics.rejected(RejectReason::Store, 1);
                error!(queue_id = %id, error = %e, "could not store message; answered 451");
                session.message_failed(out);
            }
        }
    }
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

impl Inbound {
    /// A spooled message in one piece, `head` then the spooled octets,
    /// with its share of the read budget (waiting for it when other large
    /// messages are in memory): the verifier and the DKIM signer need one
    /// slice.
    async fn read_whole(
        &self,
        head: &[u8],
        spool: &mut portcullis_queue::Spool,
    ) -> Result<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>), portcullis_queue::QueueError>
    {
        let len = head.len() as u64 + spool.len();
        // The budget's semaphore is never closed; `None` cannot happen.
        let permit = self.read_budget.acquire(len).await;
        let mut whole = Vec::with_capacity(len as usize);
        whole.extend_from_slice(head);
        spool.read_into(&mut whole)?;
        Ok((whole, permit))
    }

    /// The DKIM signature of the message whose header section (and, when
    /// not spooled, everything) is `data`.
    async fn sign_whole(
        &self,
        signer: &portcullis_auth::DkimSigner,
        data: &[u8],
        spool: Option<&mut portcullis_queue::Spool>,
    ) -> Result<String, String> {
        match spool {
            None => signer.signature_header(data).map_err(|e| e.to_string()),
            Some(spool) => {
                let (whole, _permit) = self
                    .read_whole(data, spool)
                    .await
                    .map_err(|e| e.to_string())?;
                signer.signature_header(&whole).map_err(|e| e.to_string())
            }
        }
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
