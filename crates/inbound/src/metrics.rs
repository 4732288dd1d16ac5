//! Counters of the inbound side, rendered in the Prometheus text format.
//! Plain atomics: incrementing one is a single instruction on the hot path.

use portcullis_auth::{AuthResult, Disposition, Method};
use portcullis_metrics::MetricsWriter;
use portcullis_submission::breaker::BreakerState;
use portcullis_submission::oauth::Introspector;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Why an AUTH attempt was answered 454 4.7.0 without a verdict on its
/// credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthUnchecked {
    /// No password-hashing slot came free within `auth_queue_wait`.
    HashBusy,
    /// Token introspection at its `max_in_flight`.
    IntrospectionBusy,
    /// The introspection circuit breaker is open.
    BreakerOpen,
    /// The introspection endpoint failed (transport, status, body).
    Endpoint,
}

impl AuthUnchecked {
    const ALL: [AuthUnchecked; 4] = [
        AuthUnchecked::HashBusy,
        AuthUnchecked::IntrospectionBusy,
        AuthUnchecked::BreakerOpen,
        AuthUnchecked::Endpoint,
    ];

    /// The metric label and log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthUnchecked::HashBusy => "hash_busy",
            AuthUnchecked::IntrospectionBusy => "introspection_busy",
            AuthUnchecked::BreakerOpen => "breaker_open",
            AuthUnchecked::Endpoint => "endpoint",
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The client sent QUIT.
    Quit,
    /// The client closed the connection without QUIT.
    Disconnect,
    /// A command or data timeout.
    Timeout,
    /// Too many errors, or a protocol violation.
    Errors,
    /// The server shut down.
    Shutdown,
    /// The TLS handshake failed.
    TlsFailed,
    /// An I/O error.
    IoError,
    /// Refused at connect (limits, talking before the greeting).
    Refused,
    /// Closed at `[limits] max_session_duration` (421 4.4.2).
    TooLong,
    /// Closed after `[limits] max_junk_commands` commands without progress
    /// (421 4.7.0).
    Junk,
}

impl SessionOutcome {
    const ALL: [SessionOutcome; 10] = [
        SessionOutcome::Quit,
        SessionOutcome::Disconnect,
        SessionOutcome::Timeout,
        SessionOutcome::Errors,
        SessionOutcome::Shutdown,
        SessionOutcome::TlsFailed,
        SessionOutcome::IoError,
        SessionOutcome::Refused,
        SessionOutcome::TooLong,
        SessionOutcome::Junk,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOutcome::Quit => "quit",
            SessionOutcome::Disconnect => "disconnect",
            SessionOutcome::Timeout => "timeout",
            SessionOutcome::Errors => "errors",
            SessionOutcome::Shutdown => "shutdown",
            SessionOutcome::TlsFailed => "tls_failed",
            SessionOutcome::IoError => "io_error",
            SessionOutcome::Refused => "refused",
            SessionOutcome::TooLong => "session_too_long",
            SessionOutcome::Junk => "junk_commands",
        }
    }
}

/// Why a message or recipient was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Over `limits.max_message_size`.
    Size,
    /// Bare CR/LF in data.
    BareNewline,
    /// Relay access denied (per recipient).
    Relay,
    /// Over `limits.max_recipients` (per recipient).
    TooManyRecipients,
    /// The store failed (451).
    Store,
    /// DMARC failure refused (550 5.7.1).
    Dmarc,
    /// SPF failure refused (550 5.7.23), at MAIL FROM or after data.
    Spf,
    /// Verification could not finish (DNS): 451 4.7.x.
    AuthTemporary,
    /// A mail loop: more than `limits.max_received_headers` (554 5.4.6).
    Loop,
    /// Refused by the screen: a recipient (DNS list, recipient rate,
    /// unknown recipient, greylisting) or a message (message rate). The
    /// screen's own families count them by check.
    Screen,
}

impl RejectReason {
    const ALL: [RejectReason; 10] = [
        RejectReason::Size,
        RejectReason::BareNewline,
        RejectReason::Relay,
        RejectReason::TooManyRecipients,
        RejectReason::Store,
        RejectReason::Dmarc,
        RejectReason::Spf,
        RejectReason::AuthTemporary,
        RejectReason::Loop,
        RejectReason::Screen,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Size => "size",
            RejectReason::BareNewline => "bare_newline",
            RejectReason::Relay => "relay_denied",
            RejectReason::TooManyRecipients => "too_many_recipients",
            RejectReason::Store => "store_error",
            RejectReason::Dmarc => "dmarc",
            RejectReason::Spf => "spf",
            RejectReason::AuthTemporary => "auth_temperror",
            RejectReason::Loop => "mail_loop",
            RejectReason::Screen => "screen",
        }
    }
}

/// Why a connection was refused before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// Total connection limit (`[limits] max_connections`).
    LimitTotal,
    /// Per-address connection limit (`[limits] max_connections_per_ip`:
    /// an IPv4 address or an IPv6 /64, on one listener).
    LimitPerIp,
    /// The client talked before the greeting.
    Pregreet,
    /// The listener's own limit (`[[listen]] max_connections`).
    LimitListener,
    /// The client's connection rate (`[screen] connections_per_minute`).
    Rate,
}

impl ConnRefusal {
    const ALL: [ConnRefusal; 5] = [
        ConnRefusal::LimitTotal,
        ConnRefusal::LimitPerIp,
        ConnRefusal::Pregreet,
        ConnRefusal::LimitListener,
        ConnRefusal::Rate,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::LimitTotal => "limit_total",
            ConnRefusal::LimitPerIp => "limit_per_ip",
            ConnRefusal::Pregreet => "pregreet",
            ConnRefusal::LimitListener => "limit_listener",
            ConnRefusal::Rate => "rate",
        }
    }
}

/// The counters of one listener, labelled with its address and role.
#[derive(Debug)]
pub struct ListenerMetrics {
    address: String,
    role: &'static str,
    refused: [AtomicU64; 5],
    open: AtomicU64,
}

impl ListenerMetrics {
    /// A connection was refused on this listener before the greeting.
    pub fn refused(&self, why: ConnRefusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
    /// A connection took one of this listener's places.
    pub fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }
    /// A connection gave its place back.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

/// All inbound counters.
#[derive(Debug, Default)]
pub struct InboundMetrics {
    connections: AtomicU64,
    refused: [AtomicU64; 5],
    open: AtomicU64,
    sessions: [AtomicU64; 10],
    accepted: AtomicU64,
    accepted_bytes: AtomicU64,
    rejected: [AtomicU64; 10],
    auth_results: [[AtomicU64; AuthResult::ALL.len()]; Method::ALL.len()],
    auth_verdicts: [AtomicU64; 4],
    tls_ok: [AtomicU64; 2],
    tls_failed: AtomicU64,
    starttls_injection: AtomicU64,
    smtp_auth_success: AtomicU64,
    smtp_auth_failure: AtomicU64,
    smtp_auth_lockouts: [AtomicU64; 2],
    smtp_auth_locked: AtomicU64,
    smtp_auth_temporary: AtomicU64,
    smtp_auth_unchecked: [AtomicU64; 4],
    password_checks: AtomicU64,
    /// The token introspector whose breaker and requests are rendered.
    introspector: Mutex<Option<Arc<Introspector>>>,
    user_limited: [AtomicU64; 2],
    listeners: Mutex<Vec<Arc<ListenerMetrics>>>,
}

/// Which per-user sending limit refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLimit {
    /// `messages_per_hour` (a MAIL FROM refused).
    MessagesPerHour,
    /// `recipients_per_message` (a RCPT TO refused).
    RecipientsPerMessage,
}

impl InboundMetrics {
    /// A connection was accepted by the listener.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
    /// A connection was refused before the greeting.
    pub fn refused(&self, why: ConnRefusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
    /// The counters of a listener bound at `address` with `role`, rendered
    /// with these labels from now on.
    pub fn listener(&self, address: SocketAddr, role: &'static str) -> Arc<ListenerMetrics> {
        let m = Arc::new(ListenerMetrics {
            address: address.to_string(),
            role,
            refused: Default::default(),
            open: AtomicU64::new(0),
        });
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(m.clone());
        m
    }
    /// A session started.
    pub fn session_open(&self) {
        self.open.fetch_add(1, Relaxed);
    }
    /// A session ended.
    pub fn session_closed(&self, outcome: SessionOutcome) {
        self.open.fetch_sub(1, Relaxed);
        self.sessions[outcome as usize].fetch_add(1, Relaxed);
    }
    /// Sessions open now.
    pub fn open_sessions(&self) -> u64 {
        self.open.load(Relaxed)
    }
    /// A message was accepted (stored and answered 250).
    pub fn accepted(&self, bytes: usize) {
        self.accepted.fetch_add(1, Relaxed);
        self.accepted_bytes.fetch_add(bytes as u64, Relaxed);
    }
    /// Messages accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Relaxed)
    }
    /// A message or recipient was refused, `n` times.
    pub fn rejected(&self, why: RejectReason, n: u64) {
        if n > 0 {
            self.rejected[why as usize].fetch_add(n, Relaxed);
        }
    }
    /// One verification result (DKIM: one per signature).
    pub fn auth_result(&self, method: Method, result: AuthResult) {
        self.auth_results[method as usize][result as usize].fetch_add(1, Relaxed);
    }
    /// The verdict on one verified message.
    pub fn auth_verdict(&self, disposition: &Disposition) {
        let i = match disposition {
            Disposition::Accept => 0,
            Disposition::Quarantine => 1,
            Disposition::Reject(_) => 2,
            Disposition::TempFail(_) => 3,
        };
        self.auth_verdicts[i].fetch_add(1, Relaxed);
    }
    /// Messages verified so far with result `result` for `method`.
    pub fn auth_results_total(&self, method: Method, result: AuthResult) -> u64 {
        self.auth_results[method as usize][result as usize].load(Relaxed)
    }
    /// A TLS handshake succeeded with this version ("TLSv1.2"/"TLSv1.3").
    pub fn tls_ok(&self, version: &str) {
        let i = usize::from(version != "TLSv1.2");
        self.tls_ok[i].fetch_add(1, Relaxed);
    }
    /// A TLS handshake failed.
    pub fn tls_failed(&self) {
        self.tls_failed.fetch_add(1, Relaxed);
    }
    /// Bytes were pipelined behind STARTTLS (and discarded).
    pub fn starttls_injection(&self) {
        self.starttls_injection.fetch_add(1, Relaxed);
    }

    /// An SMTP AUTH succeeded.
    pub fn smtp_auth_success(&self) {
        self.smtp_auth_success.fetch_add(1, Relaxed);
    }

    /// An SMTP AUTH failed (bad credentials).
    pub fn smtp_auth_failure(&self) {
        self.smtp_auth_failure.fetch_add(1, Relaxed);
    }

    /// A lockout began (`ip`: an address; otherwise a user).
    pub fn smtp_auth_lockout(&self, ip: bool) {
        self.smtp_auth_lockouts[usize::from(!ip)].fetch_add(1, Relaxed);
    }

    /// AUTH attempts refused because of a lockout.
    pub fn smtp_auth_locked(&self, n: u64) {
        self.smtp_auth_locked.fetch_add(n, Relaxed);
    }

    /// An AUTH could not be checked (introspection endpoint unreachable).
    pub fn smtp_auth_temporary(&self) {
        self.smtp_auth_temporary.fetch_add(1, Relaxed);
    }

    /// Refusals by a per-user sending limit.
    pub fn user_limited(&self, which: UserLimit, n: u64) {
        self.user_limited[which as usize].fetch_add(n, Relaxed);
    }

    /// An AUTH attempt was answered 454 without a verdict, for `why`.
    pub fn smtp_auth_unchecked(&self, why: AuthUnchecked) {
        self.smtp_auth_unchecked[why as usize].fetch_add(1, Relaxed);
    }

    /// A password (argon2id) check ran.
    pub fn password_check(&self) {
        self.password_checks.fetch_add(1, Relaxed);
    }

    /// Renders the breaker state and requests in flight of `introspector`
    /// (none: no OAuth series).
    pub fn watch_introspector(&self, introspector: Option<Arc<Introspector>>) {
        *self.introspector.lock().unwrap_or_else(|e| e.into_inner()) = introspector;
    }

    /// Appends every counter to `w`, in a fixed order of families.
    pub fn render(&self, w: &mut MetricsWriter) {
        self.render_connections(w);
        self.render_messages(w);
        self.render_verification(w);
        self.render_tls(w);
        self.render_smtp_auth(w);
        self.render_oauth(w);
        self.render_user_limits(w);
    }

    /// Connections accepted and refused, overall and per listener.
    fn render_connections(&self, w: &mut MetricsWriter) {
        w.counter(
            "portcullis_connections_total",
            "Connections accepted by the listeners.",
            &[],
            self.connections.load(Relaxed),
        );
        for r in ConnRefusal::ALL {
            w.counter(
                "portcullis_connections_refused_total",
                "Connections refused before the greeting.",
                &[("reason", r.as_str())],
                self.refused[r as usize].load(Relaxed),
            );
        }
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in &listeners {
            for r in ConnRefusal::ALL {
                w.counter(
                    "portcullis_listener_connections_refused_total",
                    "Connections refused before the greeting, by listener and reason.",
                    &[
                        ("listener", &l.address),
                        ("role", l.role),
                        ("reason", r.as_str()),
                    ],
                    l.refused[r as usize].load(Relaxed),
                );
            }
        }
        for l in &listeners {
            w.gauge(
                "portcullis_listener_connections_open",
                "Connections holding a place on each listener now.",
                &[("listener", &l.address), ("role", l.role)],
                l.open.load(Relaxed),
            );
        }
    }

    /// Sessions, and the messages and recipients they brought.
    fn render_messages(&self, w: &mut MetricsWriter) {
        w.gauge(
            "portcullis_sessions_open",
            "SMTP sessions open now.",
            &[],
            self.open.load(Relaxed),
        );
        for o in SessionOutcome::ALL {
            w.counter(
                "portcullis_sessions_total",
                "SMTP sessions ended, by outcome.",
                &[("outcome", o.as_str())],
                self.sessions[o as usize].load(Relaxed),
            );
        }
        w.counter(
            "portcullis_messages_accepted_total",
            "Messages accepted and queued.",
            &[],
            self.accepted.load(Relaxed),
        );
        w.counter(
            "portcullis_messages_accepted_bytes_total",
            "Octets of messages accepted.",
            &[],
            self.accepted_bytes.load(Relaxed),
        );
        for r in RejectReason::ALL {
            w.counter(
                "portcullis_rejections_total",
                "Messages or recipients refused, by reason.",
                &[("reason", r.as_str())],
                self.rejected[r as usize].load(Relaxed),
            );
        }
    }

    /// Results and verdicts of sender verification.
    fn render_verification(&self, w: &mut MetricsWriter) {
        for m in Method::ALL {
            for r in AuthResult::ALL {
                w.counter(
                    "portcullis_auth_results_total",
                    "Verification results of inbound messages, by method and result (DKIM: per signature).",
                    &[("method", m.as_str()), ("result", r.as_str())],
                    self.auth_results[m as usize][r as usize].load(Relaxed),
                );
            }
        }
        for (i, v) in ["accept", "quarantine", "reject", "tempfail"]
            .iter()
            .enumerate()
        {
            w.counter(
                "portcullis_auth_verdicts_total",
                "Verified inbound messages, by verdict.",
                &[("verdict", v)],
                self.auth_verdicts[i].load(Relaxed),
            );
        }
    }

    /// Inbound TLS handshakes, and bytes pipelined behind STARTTLS.
    fn render_tls(&self, w: &mut MetricsWriter) {
        for (i, v) in ["TLSv1.2", "TLSv1.3"].iter().enumerate() {
            w.counter(
                "portcullis_tls_handshakes_total",
                "Inbound TLS handshakes completed, by version.",
                &[("version", v)],
                self.tls_ok[i].load(Relaxed),
            );
        }
        w.counter(
            "portcullis_tls_handshake_failures_total",
            "Inbound TLS handshakes that failed.",
            &[],
            self.tls_failed.load(Relaxed),
        );
        w.counter(
            "portcullis_starttls_pipelined_total",
            "Sessions that pipelined bytes behind STARTTLS (discarded).",
            &[],
            self.starttls_injection.load(Relaxed),
        );
    }

    /// SMTP AUTH outcomes, lockouts and the password checks run.
    fn render_smtp_auth(&self, w: &mut MetricsWriter) {
        w.counter(
            "portcullis_smtp_auth_success_total",
            "SMTP AUTH attempts that succeeded.",
            &[],
            self.smtp_auth_success.load(Relaxed),
        );
        w.counter(
            "portcullis_smtp_auth_failure_total",
            "SMTP AUTH attempts with bad credentials.",
            &[],
            self.smtp_auth_failure.load(Relaxed),
        );
        for (i, scope) in ["ip", "user"].into_iter().enumerate() {
            w.counter(
                "portcullis_smtp_auth_lockouts_total",
                "Lockouts begun by the brute-force defence, by what was locked out.",
                &[("scope", scope)],
                self.smtp_auth_lockouts[i].load(Relaxed),
            );
        }
        w.counter(
            "portcullis_smtp_auth_locked_total",
            "SMTP AUTH attempts refused (421) during a lockout.",
            &[],
            self.smtp_auth_locked.load(Relaxed),
        );
        w.counter(
            "portcullis_smtp_auth_temporary_total",
            "SMTP AUTH attempts answered 454 (credentials not checked; see portcullis_smtp_auth_unchecked_total).",
            &[],
            self.smtp_auth_temporary.load(Relaxed),
        );
        for why in AuthUnchecked::ALL {
            w.counter(
                "portcullis_smtp_auth_unchecked_total",
                "SMTP AUTH attempts answered 454 without checking the credentials, by reason.",
                &[("reason", why.as_str())],
                self.smtp_auth_unchecked[why as usize].load(Relaxed),
            );
        }
        w.counter(
            "portcullis_password_checks_total",
            "Password (argon2id) checks run for SMTP AUTH PLAIN/LOGIN.",
            &[],
            self.password_checks.load(Relaxed),
        );
    }

    /// The token introspection breaker and requests in flight (only with
    /// `[submission.oauth]`).
    fn render_oauth(&self, w: &mut MetricsWriter) {
        let introspector = self
            .introspector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(introspector) = introspector {
            let stats = introspector.stats();
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::Probing,
            ] {
                w.gauge(
                    "portcullis_oauth_breaker_state",
                    "The token introspection circuit breaker: 1 for its current state.",
                    &[("state", state.as_str())],
                    u64::from(stats.breaker == state),
                );
            }
            w.counter(
                "portcullis_oauth_breaker_opened_total",
                "Times the token introspection circuit breaker opened.",
                &[],
                stats.breaker_opened,
            );
            w.gauge(
                "portcullis_oauth_requests_in_flight",
                "Token introspection requests waiting for the endpoint now.",
                &[],
                stats.in_flight as u64,
            );
        }
    }

    /// Commands refused by a per-user sending limit.
    fn render_user_limits(&self, w: &mut MetricsWriter) {
        for (i, limit) in ["messages_per_hour", "recipients_per_message"]
            .into_iter()
            .enumerate()
        {
            w.counter(
                "portcullis_user_limit_refusals_total",
                "Commands of authenticated users refused (452) by a per-user sending limit.",
                &[("limit", limit)],
                self.user_limited[i].load(Relaxed),
            );
        }
    }
}
