//! The SMTP session as a sans-IO state machine: bytes in through
//! [`Session::feed`], replies out through [`Session::step`], and
//! [`Event`]s for what needs the outside world (STARTTLS, storing a message,
//! closing). One file per verb group.

mod arrival;
mod auth;
mod buffer;
mod config;
mod data;
pub mod dot;
mod ehlo;
mod mail;
mod rcpt;
mod sasl;
#[cfg(test)]
mod tests;

use crate::spooler::Spooler;
pub use arrival::Arrival;
use buffer::MessageBuffer;
pub use config::{ScreenScope, SessionConfig, VerifyScope};
use dot::DotScanner;
use portcullis_types::{
    Address, BodyType, Domain, DsnRet, QueueId, Recipient, Reply, ReversePath, TlsSummary,
};
use sasl::AuthStep;
pub use sasl::{AuthCheck, AuthOutcome, BearerMechanism};
use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};
use smtp_proto::{Error as ProtoError, Request};
use std::fmt::Display;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

/// What the driver must do next.
#[derive(Debug)]
pub enum Event {
    /// All buffered input is consumed: write the replies, read more.
    NeedInput,
    /// Write the replies, discard buffered input, run the TLS handshake,
    /// then call [`Session::tls_started`].
    StartTls,
    /// MAIL FROM was accepted syntactically and needs the driver before it
    /// is answered (an SPF check, the client's message rate, as
    /// [`SenderCheck`] says): run them, then call
    /// [`Session::sender_checked`]. Nothing more is read meanwhile.
    CheckSender(Box<SenderCheck>),
    /// RCPT TO passed anti-relay and the session's own checks and the
    /// screen is to decide it: ask it, then call
    /// [`Session::recipient_checked`]. Nothing more is read meanwhile, so
    /// pipelined RCPTs are checked one by one, in order.
    CheckRecipient(Box<RecipientCheck>),
    /// AUTH credentials to check (slow: argon2): check them off the
    /// session, then call [`Session::auth_checked`].
    CheckAuth(Box<AuthCheck>),
    /// A complete message: verify it when [`IncomingMessage::verify`] says
    /// so, store it durably, then call [`Session::message_stored`],
    /// [`Session::message_failed`] or [`Session::message_rejected`].
    Message(Box<IncomingMessage>),
    /// Write the replies and close the connection.
    Close,
}

/// What the driver does at MAIL FROM before it is answered, with the
/// identities an SPF check needs.
#[derive(Debug, Clone)]
pub struct SenderCheck {
    /// MAIL FROM (null: the HELO identity is checked).
    pub sender: ReversePath,
    /// The EHLO/HELO name.
    pub helo: String,
    /// The client.
    pub client_ip: IpAddr,
    /// Check SPF (to refuse a failing sender, or to learn the domain SPF
    /// passed for, which greylisting keys on).
    pub spf: bool,
    /// Count the message against the client's message rate (a screened
    /// client on an `smtp` listener); counted before SPF is checked.
    pub count_message: bool,
}

/// What the screen decides a RCPT with: facts the session recorded,
/// never bytes of the message.
#[derive(Debug, Clone)]
pub struct RecipientCheck {
    /// The client.
    pub client_ip: IpAddr,
    /// The client is in `trusted_networks`.
    pub trusted: bool,
    /// The user the client authenticated as.
    pub authenticated: Option<String>,
    /// MAIL FROM.
    pub sender: ReversePath,
    /// The domain SPF passed for at MAIL FROM (the MAIL FROM domain, or
    /// the HELO name for a null sender), when it was checked and passed.
    pub spf_pass: Option<Domain>,
    /// The recipient (anti-relay passed).
    pub recipient: Address,
}

/// A message received in full, with its envelope as the client gave it.
#[derive(Debug)]
pub struct IncomingMessage {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// Accepted recipients.
    pub recipients: Vec<Recipient>,
    /// RET.
    pub ret: Option<DsnRet>,
    /// ENVID.
    pub envid: Option<String>,
    /// BODY.
    pub body_type: BodyType,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// REQUIRETLS (RFC 8689), given on MAIL FROM over TLS.
    pub require_tls: bool,
    /// What the session recorded about the client and the session the
    /// message came in (its origin, TLS, the authenticated user).
    pub arrival: Arrival,
    /// The message exactly as received (dot-unstuffed, CRLF lines): all
    /// of it, or, when [`IncomingMessage::spooled`] is set, its header
    /// section (with the empty line that ends it).
    pub data: Vec<u8>,
    /// The rest of a large message, written to the store as it arrived
    /// (`[limits] spool_threshold`); committed with the record, removed
    /// when dropped.
    pub spooled: Option<portcullis_queue::Spool>,
    /// True when the message is to be verified (SPF, DKIM, DMARC, ARC)
    /// before it is stored.
    pub verify: bool,
}

/// The mail transaction in progress (after MAIL FROM).
#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    smtputf8: bool,
    require_tls: bool,
    body_type: BodyType,
    ret: Option<DsnRet>,
    envid: Option<String>,
    recipients: Vec<Recipient>,
    /// Octets received so far over BDAT.
    bdat_octets: u64,
    /// The domain SPF passed for at MAIL FROM, if it was checked.
    spf_pass: Option<Domain>,
}

/// Where the session is in the protocol.
enum State {
    /// Reading command lines.
    Command,
    /// Skipping the rest of an over-long command line.
    SkipLine,
    /// Receiving DATA into the body (or only read to its end once the
    /// message is refused).
    Data(DotScanner),
    /// Receiving a BDAT chunk into the body.
    Bdat { rcv: BdatReceiver, last: bool },
    /// Reading a BDAT chunk without keeping it.
    BdatDiscard(DummyDataReceiver, Rejection),
    /// Waiting for the driver to check the sender (SPF at MAIL FROM, the
    /// message rate).
    CheckingSender,
    /// Waiting for the driver (the screen) to decide this recipient.
    CheckingRecipient(Box<Recipient>),
    /// Reading an AUTH response line.
    Auth(AuthStep),
    /// Waiting for the driver to check AUTH credentials.
    CheckingAuth,
    /// Waiting for the driver to store the message.
    Storing,
    /// The connection is to be closed.
    Closed,
}

/// Why data was read without being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    TooBig,
    NoTransaction,
}

/// One SMTP session.
pub struct Session {
    cfg: Arc<SessionConfig>,
    peer: IpAddr,
    trusted: bool,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsSummary>,
    tx: Option<Transaction>,
    errors: u32,
    auth_user: Option<String>,
    auth_failures: u32,
    input: Vec<u8>,
    pos: usize,
    line: Vec<u8>,
    body: MessageBuffer,
    /// Where a large message's data goes while it arrives; `None`: held
    /// in memory (sessions without a store: tests, fuzzing).
    spooler: Option<Spooler>,
    shutting_down: bool,
    /// `[limits] max_session_duration` has passed (the driver said so).
    expired: bool,
    /// Commands without progress since the last accepted message.
    junk: u32,
    /// Why the session closed itself, when a limit closed it.
    closed_by: Option<crate::metrics::SessionOutcome>,
    quit: bool,
    stats: Stats,
    /// Messages the session itself refused since the driver last asked
    /// ([`Session::take_refusals`]), for one log line each.
    refusals: Vec<&'static str>,
}

/// Per-session counters the driver turns into metrics and log fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Recipients refused because relaying was denied.
    pub relay_denied: u32,
    /// Recipients refused by the recipient limit.
    pub too_many_recipients: u32,
    /// Messages refused as too big.
    pub too_big: u32,
    /// Messages refused for bare CR/LF.
    pub bare_newline: u32,
    /// Messages refused as looping (too many `Received:` fields).
    pub too_many_hops: u32,
    /// Command syntax errors.
    pub syntax_errors: u32,
    /// Octets discarded after STARTTLS.
    pub discarded_after_starttls: u64,
    /// AUTH attempts refused because of a lockout.
    pub auth_locked: u32,
    /// Messages refused by a user's hourly sending limit.
    pub user_rate_limited: u32,
    /// Recipients refused by a user's per-message limit.
    pub user_recipient_limited: u32,
    /// Recipients refused by the screen (DNS list, rate, unknown
    /// recipient, greylisting); the screen counts them by reason.
    pub screen_refused: u32,
}

impl Session {
    /// A new session for a client at `peer`.
    pub fn new(cfg: Arc<SessionConfig>, peer: IpAddr) -> Session {
        let trusted = cfg.relay.trusts(peer);
        Session {
            cfg,
            peer,
            trusted,
            state: State::Command,
            helo: None,
            esmtp: false,
            tls: None,
            tx: None,
            errors: 0,
            auth_user: None,
            auth_failures: 0,
            input: Vec::new(),
            pos: 0,
            line: Vec::new(),
            body: MessageBuffer::default(),
            spooler: None,
            shutting_down: false,
            expired: false,
            junk: 0,
            closed_by: None,
            quit: false,
            stats: Stats::default(),
            refusals: Vec::new(),
        }
    }

    /// Writes the data of messages larger than `[limits] spool_threshold`
    /// to `spooler` as it arrives, instead of holding it in memory.
    pub fn with_spooler(mut self, spooler: Spooler) -> Session {
        self.spooler = Some(spooler);
        self
    }

    /// Octets of memory held now for the message being received
    /// (allocated capacity, input buffer aside): at most `[limits]
    /// spool_threshold` (or the header section) plus one read plus one
    /// store chunk. A hook for tests of that bound.
    pub fn message_memory(&self) -> usize {
        self.body.held()
    }

    /// The most [`Session::message_memory`] held at once so far.
    pub fn message_memory_peak(&self) -> usize {
        self.body.peak()
    }

    /// Writes the 220 greeting.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "220 {} {}\r\n", self.cfg.hostname, self.cfg.banner);
    }

    /// Appends bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.input.extend_from_slice(bytes);
    }

    /// The input buffer, for reading straight into it (`read_buf`): avoids
    /// a copy per read. Compacts first.
    pub fn input_buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        &mut self.input
    }

    fn compact(&mut self) {
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.input.len() / 2 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Octets buffered and not yet processed.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// True while message data is being read (the driver uses the data
    /// timeout then).
    pub fn in_data(&self) -> bool {
        matches!(
            self.state,
            State::Data(_) | State::Bdat { .. } | State::BdatDiscard(..)
        )
    }

    /// True when the connection should be closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The shared configuration of this session's listener.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// How the session ended, once [`Event::Close`] was returned.
    pub fn close_outcome(&self) -> crate::metrics::SessionOutcome {
        use crate::metrics::SessionOutcome;
        if self.quit {
            SessionOutcome::Quit
        } else if let Some(outcome) = self.closed_by {
            outcome
        } else if self.shutting_down {
            SessionOutcome::Shutdown
        } else {
            SessionOutcome::Errors
        }
    }

    /// The reasons (`message_too_big`, `bare_newline`, `mail_loop`) of the
    /// messages this session refused at the end of their data since the
    /// last call, oldest first. The driver logs each: the session is
    /// sans-IO and does not log.
    pub fn take_refusals(&mut self) -> std::vec::Drain<'_, &'static str> {
        self.refusals.drain(..)
    }

    /// Per-session counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Marks the server as shutting down: the next command is answered
    /// 421 4.3.2 and the session closes. Data in progress may finish.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// The session has lasted `[limits] max_session_duration`: the next
    /// command is answered 421 4.4.2 and the session closes. Data in
    /// progress may finish (the driver bounds how long).
    pub fn expire(&mut self) {
        self.expired = true;
    }

    /// True once [`Session::expire`] was called.
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// The session is past its end with no command to answer (idle, or
    /// its data took too long): answer 421 4.4.2 now and close. RFC 5321
    /// §4.3.2 lets a server send 421 at any time when it must close.
    pub fn close_expired(&mut self, out: &mut Vec<u8>) {
        self.expired = true;
        self.expired_reply(out);
    }

    fn expired_reply(&mut self, out: &mut Vec<u8>) {
        reply(
            out,
            421,
            (4, 4, 2),
            format_args!("{} Session too long, closing connection", self.cfg.hostname),
        );
        self.closed_by = Some(crate::metrics::SessionOutcome::TooLong);
        self.state = State::Closed;
    }

    /// The TLS handshake after STARTTLS succeeded: RFC 3207 §4.2 — forget
    /// everything, including what the client sent before the handshake.
    pub fn tls_started(&mut self, tls: TlsSummary) {
        self.tls = Some(tls);
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth_user = None;
        self.discard_input();
    }

    /// Drops every buffered byte (they were sent before the TLS handshake).
    pub fn discard_input(&mut self) {
        let n = self.buffered() as u64;
        self.stats.discarded_after_starttls += n;
        self.input.clear();
        self.pos = 0;
    }

    /// The TLS state (for listeners with implicit TLS, set before greeting).
    pub fn set_tls(&mut self, tls: TlsSummary) {
        self.tls = Some(tls);
    }

    /// The message was stored under `id`: reply 250 and end the transaction.
    pub fn message_stored(&mut self, id: QueueId, out: &mut Vec<u8>) {
        self.tx = None;
        // An accepted message is progress: the junk count starts again
        // (as Postfix resets its junk count when mail is delivered).
        self.junk = 0;
        if let Some(user) = &self.auth_user {
            let per_hour = self.cfg.submission.limits_for(user).messages_per_hour;
            self.cfg
                .rate
                .record(user, per_hour, std::time::Instant::now());
        }
        self.state = State::Command;
        reply(out, 250, (2, 0, 0), format_args!("Ok: queued as {id}"));
    }

    /// True when this client's mail is verified (SPF, DKIM, DMARC, ARC).
    pub fn verifies(&self) -> bool {
        let v = &self.cfg.verify;
        // Authenticated submission is our users' mail, not verified.
        v.enabled && !(v.skip_trusted && self.trusted) && self.auth_user.is_none()
    }

    /// The checks of MAIL FROM are done: `refusal` is the reply that
    /// refuses the sender (SPF: 550 5.7.23, or 451 4.7.24 for now; the
    /// message rate: 452 4.7.1), `None` to accept it; `spf_pass` the
    /// domain SPF passed for, which the transaction keeps for the
    /// screen's RCPT checks.
    pub fn sender_checked(
        &mut self,
        refusal: Option<&Reply>,
        spf_pass: Option<Domain>,
        out: &mut Vec<u8>,
    ) {
        if matches!(self.state, State::CheckingSender) {
            self.state = State::Command;
        }
        match refusal {
            None => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.spf_pass = spf_pass;
                }
                reply(out, 250, (2, 1, 0), "Sender OK")
            }
            Some(r) => {
                self.tx = None;
                r.write_to(out);
                self.count_junk(out);
            }
        }
    }

    /// Verification refused the message (5xx for good, 4xx for now): answer
    /// with `refusal` and end the transaction; nothing was stored.
    pub fn message_rejected(&mut self, refusal: &Reply, out: &mut Vec<u8>) {
        self.tx = None;
        self.state = State::Command;
        refusal.write_to(out);
        self.count_junk(out);
    }

    /// The message could not be stored: a temporary failure, so the client
    /// keeps it and tries again.
    pub fn message_failed(&mut self, out: &mut Vec<u8>) {
        self.tx = None;
        self.state = State::Command;
        reply(
            out,
            451,
            (4, 3, 0),
            "Local error in processing, try again later",
        );
    }

    /// Processes buffered input, appending replies to `out`, until input
    /// runs out or something needs the driver.
    pub fn step(&mut self, out: &mut Vec<u8>) -> Event {
        loop {
            match &mut self.state {
                State::Closed => return Event::Close,
                State::Storing
                | State::CheckingSender
                | State::CheckingRecipient(_)
                | State::CheckingAuth => {
                    return Event::NeedInput;
                }
                State::Command | State::Auth(_) => {
                    let rest = &self.input[self.pos..];
                    let limit = self.line_limit();
                    match memchr::memchr(b'\n', rest) {
                        Some(nl) if nl < limit => {
                            self.line.clear();
                            self.line.extend_from_slice(&rest[..=nl]);
                            self.pos += nl + 1;
                            if let Some(event) = self.command(out) {
                                return event;
                            }
                        }
                        Some(nl) => {
                            self.pos += nl + 1;
                            self.line_too_long(out);
                        }
                        None if rest.len() >= limit => {
                            self.pos = self.input.len();
                            self.state = State::SkipLine;
                            self.line_too_long(out);
                        }
                        None => return Event::NeedInput,
                    }
                }
                State::SkipLine => {
                    let rest = &self.input[self.pos..];
                    match memchr::memchr(b'\n', rest) {
                        Some(nl) => {
                            self.pos += nl + 1;
                            if !self.is_closed() {
                                self.state = State::Command;
                            }
                        }
                        None => {
                            self.pos = self.input.len();
                            return Event::NeedInput;
                        }
                    }
                }
                State::Data(_) | State::Bdat { .. } | State::BdatDiscard(..) => {
                    if self.pos == self.input.len() {
                        return Event::NeedInput;
                    }
                    if let Some(event) = self.data_step(out) {
                        return event;
                    }
                }
            }
        }
    }

    /// The longest command line: `[limits] max_line_length`, but at least
    /// the 12,288 octets RFC 4954 §4 allows AUTH lines once AUTH is offered
    /// (OAuth tokens are long).
    fn line_limit(&self) -> usize {
        let limit = self.cfg.limits.max_line_length as usize;
        if self.auth_offered() {
            limit.max(12_288)
        } else {
            limit
        }
    }

    fn line_too_long(&mut self, out: &mut Vec<u8>) {
        self.stats.syntax_errors += 1;
        self.error(out, 500, (5, 5, 2), "Line too long");
        self.count_junk(out);
    }

    /// One complete command line is in `self.line`.
    fn command(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        if self.shutting_down {
            reply(
                out,
                421,
                (4, 3, 2),
                format_args!(
                    "{} Service shutting down, closing connection",
                    self.cfg.hostname
                ),
            );
            self.state = State::Closed;
            return Some(Event::Close);
        }
        if self.expired {
            self.expired_reply(out);
            return Some(Event::Close);
        }
        // A CR anywhere but before the final LF is not a line ending we
        // accept: refusing it keeps command framing unambiguous.
        let body_len = self.line.len() - 1 - usize::from(self.line.ends_with(b"\r\n"));
        if memchr::memchr(b'\r', &self.line[..body_len]).is_some() {
            self.stats.syntax_errors += 1;
            self.error(out, 500, (5, 5, 2), "Bare CR in command line");
            self.count_junk(out);
            return self.closed_event();
        }
        if let State::Auth(step) = &self.state {
            let step = step.clone();
            let text = String::from_utf8_lossy(&self.line[..body_len]).into_owned();
            return self.auth_response(step, &text, out);
        }
        let line = std::mem::take(&mut self.line);
        let start = out.len();
        let event = match Request::parse(&mut line.iter()) {
            Ok(request) => {
                let junk = self.is_junk_request(&request);
                let event = self.dispatch(request, out);
                if junk || refused(&out[start..]) {
                    self.count_junk(out);
                }
                event.or_else(|| self.closed_event())
            }
            Err(e) => {
                self.protocol_error(e, out);
                self.count_junk(out);
                self.closed_event()
            }
        };
        self.line = line;
        event
    }

    /// Commands that make no progress whatever their reply: NOOP, RSET,
    /// VRFY, EXPN, HELP (Postfix's junk commands), EHLO/HELO once the
    /// client has greeted (one greeting before and one after STARTTLS is
    /// what the protocol needs) and an empty BDAT chunk that is not LAST. A refused command of any kind is junk too
    /// ([`refused`]); a successful MAIL, RCPT, DATA, BDAT, AUTH or STARTTLS
    /// is not, and an accepted message sets the count back to zero.
    fn is_junk_request(&self, request: &Request<std::borrow::Cow<'_, str>>) -> bool {
        match request {
            Request::Noop { .. }
            | Request::Rset
            | Request::Vrfy { .. }
            | Request::Expn { .. }
            | Request::Help { .. } => true,
            Request::Ehlo { .. } | Request::Helo { .. } => self.helo.is_some(),
            // An empty chunk that is not the last adds nothing.
            Request::Bdat {
                chunk_size: 0,
                is_last: false,
            } => true,
            _ => false,
        }
    }

    /// Counts one command without progress; at `[limits] max_junk_commands`
    /// the session ends with 421 4.7.0, as Postfix's
    /// `smtpd_junk_command_limit` ends a client that holds a connection
    /// with commands that do nothing (RFC 5321 §4.3.2 allows the 421).
    fn count_junk(&mut self, out: &mut Vec<u8>) {
        self.junk += 1;
        if self.junk >= self.cfg.limits.max_junk_commands && !self.is_closed() {
            reply(
                out,
                421,
                (4, 7, 0),
                format_args!(
                    "{} Too many commands without progress, closing connection",
                    self.cfg.hostname
                ),
            );
            self.closed_by = Some(crate::metrics::SessionOutcome::Junk);
            self.state = State::Closed;
        }
    }

    fn dispatch(
        &mut self,
        request: Request<std::borrow::Cow<'_, str>>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        match request {
            Request::Ehlo { host } => self.ehlo(&host, true, out),
            Request::Helo { host } => self.ehlo(&host, false, out),
            Request::Mail { from } => {
                if let Some(event) = self.mail(from, out) {
                    return Some(event);
                }
            }
            Request::Rcpt { to } => {
                if let Some(event) = self.rcpt(to, out) {
                    return Some(event);
                }
            }
            Request::Data => return self.data(out),
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last, out),
            Request::Rset => self.rset(out),
            Request::Noop { .. } => reply(out, 250, (2, 0, 0), "OK"),
            Request::Vrfy { .. } => reply(
                out,
                252,
                (2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::Expn { .. } => self.error(out, 502, (5, 5, 1), "EXPN not supported"),
            Request::Help { .. } => reply(
                out,
                214,
                (2, 0, 0),
                "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)",
            ),
            Request::Quit => {
                reply(
                    out,
                    221,
                    (2, 0, 0),
                    format_args!("{} closing connection", self.cfg.hostname),
                );
                self.quit = true;
                self.state = State::Closed;
            }
            Request::StartTls => return self.starttls(out),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, &initial_response, out),
            Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(out, 502, (5, 5, 1), "Command not implemented"),
        }
        self.closed_event()
    }

    fn closed_event(&self) -> Option<Event> {
        self.is_closed().then_some(Event::Close)
    }

    fn protocol_error(&mut self, e: ProtoError, out: &mut Vec<u8>) {
        self.stats.syntax_errors += 1;
        match e {
            ProtoError::UnknownCommand => self.error(out, 500, (5, 5, 1), "Command unrecognized"),
            ProtoError::InvalidSenderAddress => {
                self.error(out, 501, (5, 1, 7), "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.error(out, 501, (5, 1, 3), "Bad recipient address syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                self.error(out, 501, (5, 5, 4), format_args!("Syntax: {syntax}"))
            }
            ProtoError::InvalidParameter { param } => self.error(
                out,
                501,
                (5, 5, 4),
                format_args!("Invalid {param} parameter"),
            ),
            ProtoError::UnsupportedParameter { param } => {
                let shown: String = param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect();
                self.error(
                    out,
                    555,
                    (5, 5, 4),
                    format_args!("Unsupported parameter {shown}"),
                )
            }
            ProtoError::ResponseTooLong => self.error(out, 500, (5, 5, 2), "Line too long"),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                self.error(out, 500, (5, 5, 2), "Syntax error")
            }
        }
    }

    /// An error reply that counts towards `limits.max_errors`; past it, the
    /// session ends with 421 (RFC 5321 §4.3.2 lets a server close then).
    fn error(
        &mut self,
        out: &mut Vec<u8>,
        code: u16,
        enhanced: (u8, u16, u16),
        text: impl Display,
    ) {
        reply(out, code, enhanced, text);
        self.count_error(out);
    }

    /// Counts one error reply (already written); past `limits.max_errors`
    /// the session ends with 421.
    fn count_error(&mut self, out: &mut Vec<u8>) {
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors && !self.is_closed() {
            reply(
                out,
                421,
                (4, 7, 0),
                format_args!("{} Too many errors, closing connection", self.cfg.hostname),
            );
            self.state = State::Closed;
        }
    }

    fn rset(&mut self, out: &mut Vec<u8>) {
        self.tx = None;
        reply(out, 250, (2, 0, 0), "Reset OK");
    }
}

/// True when `written` (the replies to one command) starts with a 4xx or
/// 5xx reply: the command was refused.
fn refused(written: &[u8]) -> bool {
    matches!(written.first(), Some(b'4' | b'5'))
}

/// Writes one reply line straight into the output buffer (no allocation).
fn reply(out: &mut Vec<u8>, code: u16, (c, s, d): (u8, u16, u16), text: impl Display) {
    let _ = write!(out, "{code} {c}.{s}.{d} {text}\r\n");
}
