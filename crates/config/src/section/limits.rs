//! `[limits]`: resource limits of the SMTP sessions, each answered with
//! the RFC's reply when reached.

use crate::check::Checker;
use serde::Deserialize;
use std::time::Duration;

/// `[limits]`: resource limits, each answered with the RFC's reply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// `max_connections`: open connections in total (default 1000).
    pub max_connections: Option<u32>,
    /// `max_connections_per_ip`: open connections from one IPv4 address or
    /// IPv6 /64, on each listener (default 20).
    pub max_connections_per_ip: Option<u32>,
    /// `max_session_duration`: how long one connection may last; then
    /// 421 4.4.2 at the next command (default `"1h"`).
    pub max_session_duration: Option<String>,
    /// `max_junk_commands`: commands that make no progress (NOOP, RSET,
    /// VRFY, EXPN, HELP, a repeated EHLO/HELO, any refused command) before
    /// the session is closed with 421 4.7.0; an accepted message starts the
    /// count again (default 100).
    pub max_junk_commands: Option<u32>,
    /// `max_line_length`: command line length with CRLF (default 2048).
    pub max_line_length: Option<u32>,
    /// `max_message_size`: octets, advertised with SIZE (default 26214400).
    pub max_message_size: Option<u64>,
    /// `max_recipients`: per message (default 100).
    pub max_recipients: Option<u32>,
    /// `max_errors`: error replies before the session is closed (default 10).
    pub max_errors: Option<u32>,
    /// `max_received_headers`: `Received:` fields a message may carry;
    /// more is a mail loop, refused with 554 5.4.6 (default 100).
    pub max_received_headers: Option<u32>,
    /// `command_timeout`: wait for a command (default `"5m"`).
    pub command_timeout: Option<String>,
    /// `data_timeout`: wait for each DATA/BDAT read (default `"10m"`).
    pub data_timeout: Option<String>,
    /// `tls_handshake_timeout`: default `"30s"`.
    pub tls_handshake_timeout: Option<String>,
    /// `greet_pause`: wait this long before the greeting and reject clients
    /// that talk first (default `"0s"`: only input already there is caught).
    pub greet_pause: Option<String>,
    /// `shutdown_grace`: how long open sessions may finish on shutdown (default `"30s"`).
    pub shutdown_grace: Option<String>,
    /// `spool_threshold`: octets of a message held in memory while it
    /// arrives; past them the rest of the message is written to its own
    /// file as it arrives, only its header section staying in memory
    /// (default 65536).
    pub spool_threshold: Option<u64>,
    /// `max_header_size`: octets the header section of a message may take;
    /// a larger one is refused with 552 5.3.4 (default 262144).
    pub max_header_size: Option<u64>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Open connections in total.
    pub max_connections: u32,
    /// Open connections per client IPv4 address or IPv6 /64, on each
    /// listener.
    pub max_connections_per_ip: u32,
    /// How long one connection may last before it is closed with 421 4.4.2
    /// (at the next command; data in progress may finish).
    pub max_session_duration: Duration,
    /// Commands that make no progress before the session is closed with
    /// 421 4.7.0 (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Longest command line accepted, CRLF included.
    pub max_line_length: u32,
    /// Largest message accepted, in octets.
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: u32,
    /// Error replies before disconnecting.
    pub max_errors: u32,
    /// `Received:` fields a message may carry before it is refused as a
    /// mail loop (RFC 5321 §6.3).
    pub max_received_headers: u32,
    /// Wait for a command line.
    pub command_timeout: Duration,
    /// Wait for message data (per read).
    pub data_timeout: Duration,
    /// TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Pause before the greeting to catch clients that talk first.
    pub greet_pause: Duration,
    /// Grace period for open sessions at shutdown.
    pub shutdown_grace: Duration,
    /// Octets of a message held in memory while it arrives; past them the
    /// data after the header section goes to the store as it arrives.
    pub spool_threshold: usize,
    /// Largest header section accepted, in octets (it is held in memory).
    pub max_header_size: usize,
}

impl Default for Limits {
    /// The defaults of the reference configuration.
    fn default() -> Limits {
        Limits {
            max_connections: 1000,
            max_connections_per_ip: 20,
            // One hour: far longer than any honest client needs (a 25 MiB
            // message at 100 kbit/s takes 35 minutes, and MTAs reuse a
            // connection for minutes, not hours), short enough that a
            // client cannot hold a slot for ever with a trickle of commands.
            max_session_duration: Duration::from_secs(3600),
            // Postfix's smtpd_junk_command_limit default.
            max_junk_commands: 100,
            max_line_length: 2048,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_received_headers: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            tls_handshake_timeout: Duration::from_secs(30),
            greet_pause: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            // One store chunk: a larger body goes to its own file (see
            // queue/src/files.rs), so sled, which keeps what is written to
            // it in memory, holds only small messages (README, Benchmark).
            spool_threshold: 64 * 1024,
            max_header_size: 256 * 1024,
        }
    }
}

/// `[limits]`: counts must not be zero, and the RFC 5321 minimums hold.
pub(crate) fn build(l: &LimitsFile, c: &mut Checker) -> Limits {
    let d = Limits::default();
    let limits = Limits {
        max_connections: c.positive(
            "limits.max_connections",
            l.max_connections,
            d.max_connections,
        ),
        max_connections_per_ip: c.positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip,
            d.max_connections_per_ip,
        ),
        max_session_duration: c.duration(
            "limits.max_session_duration",
            &l.max_session_duration,
            d.max_session_duration,
        ),
        max_junk_commands: c.positive(
            "limits.max_junk_commands",
            l.max_junk_commands,
            d.max_junk_commands,
        ),
        max_line_length: c.positive(
            "limits.max_line_length",
            l.max_line_length,
            d.max_line_length,
        ),
        max_message_size: l.max_message_size.unwrap_or(d.max_message_size),
        max_recipients: c.positive("limits.max_recipients", l.max_recipients, d.max_recipients),
        max_errors: c.positive("limits.max_errors", l.max_errors, d.max_errors),
        max_received_headers: c.positive(
            "limits.max_received_headers",
            l.max_received_headers,
            d.max_received_headers,
        ),
        command_timeout: c.duration(
            "limits.command_timeout",
            &l.command_timeout,
            d.command_timeout,
        ),
        data_timeout: c.duration("limits.data_timeout", &l.data_timeout, d.data_timeout),
        tls_handshake_timeout: c.duration(
            "limits.tls_handshake_timeout",
            &l.tls_handshake_timeout,
            d.tls_handshake_timeout,
        ),
        greet_pause: c.duration("limits.greet_pause", &l.greet_pause, d.greet_pause),
        shutdown_grace: c.duration("limits.shutdown_grace", &l.shutdown_grace, d.shutdown_grace),
        spool_threshold: c.memory_size(
            "limits.spool_threshold",
            l.spool_threshold,
            d.spool_threshold,
        ),
        max_header_size: c.memory_size(
            "limits.max_header_size",
            l.max_header_size,
            d.max_header_size,
        ),
    };
    check_minimums(&limits, c);
    limits
}

/// The floors below which a limit would break honest clients.
fn check_minimums(limits: &Limits, c: &mut Checker) {
    if limits.max_session_duration.is_zero() {
        c.fail("limits.max_session_duration", "must be greater than zero");
    }
    if limits.max_line_length < 512 {
        // RFC 5321 §4.5.3.1.4: a command line may be 512 octets.
        c.fail(
            "limits.max_line_length",
            "must be at least 512 (RFC 5321 §4.5.3.1.4)",
        );
    }
    if limits.max_message_size < 65_536 {
        // RFC 5321 §4.5.3.1.7: at least 64K octets.
        c.fail(
            "limits.max_message_size",
            "must be at least 65536 (RFC 5321 §4.5.3.1.7)",
        );
    }
    if limits.max_recipients < 100 {
        // RFC 5321 §4.5.3.1.8: at least 100 recipients.
        c.fail(
            "limits.max_recipients",
            "must be at least 100 (RFC 5321 §4.5.3.1.8)",
        );
    }
}
