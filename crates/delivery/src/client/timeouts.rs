//! Stages of a client session and their timeouts (RFC 5321 §4.5.3.2).

use std::fmt;
use std::time::Duration;

/// A stage of a client session: where a timeout, an I/O error or a
/// protocol error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO (or the HELO fallback) and its reply.
    Ehlo,
    /// The STARTTLS command and its reply.
    StartTls,
    /// The TLS handshake after a 220 to STARTTLS.
    TlsHandshake,
    /// MAIL FROM (and, when pipelining, the write of the whole command group).
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (or BDAT) and its 354.
    DataInit,
    /// Sending the message content.
    DataBlock,
    /// The reply after the final `.` (or the last BDAT chunk).
    DataEnd,
    /// RSET after a transaction in which no recipient was accepted.
    Rset,
    /// QUIT.
    Quit,
}

impl Stage {
    /// A short lower-case name for logs, e.g. `"data-end"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::TlsHandshake => "tls-handshake",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::DataInit => "data-init",
            Stage::DataBlock => "data-block",
            Stage::DataEnd => "data-end",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long the client waits at each stage.
///
/// The defaults are RFC 5321 §4.5.3.2's minimums: 5 minutes for the
/// greeting, MAIL and RCPT (and, by extension, EHLO and STARTTLS), 2 minutes
/// for the DATA command, 3 minutes per block of content and 10 minutes for
/// the reply after the final dot. The TLS handshake gets 5 minutes (Postfix's
/// `smtp_starttls_timeout`) and QUIT 5 seconds: its reply changes nothing.
/// Override single fields with struct update syntax:
/// `Timeouts { data_end: Duration::from_secs(60), ..Timeouts::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The 220 greeting (§4.5.3.2.1).
    pub greeting: Duration,
    /// The reply to EHLO or HELO.
    pub ehlo: Duration,
    /// The reply to STARTTLS.
    pub starttls: Duration,
    /// The TLS handshake after STARTTLS.
    pub tls_handshake: Duration,
    /// The reply to MAIL FROM (§4.5.3.2.2).
    pub mail: Duration,
    /// The reply to each RCPT TO (§4.5.3.2.3).
    pub rcpt: Duration,
    /// The 354 reply to DATA (§4.5.3.2.4).
    pub data_init: Duration,
    /// Each write of message content (§4.5.3.2.5).
    pub data_block: Duration,
    /// The reply after the final dot (§4.5.3.2.6).
    pub data_end: Duration,
    /// The reply to QUIT (not waited for long).
    pub quit: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            greeting: 5 * MINUTE,
            ehlo: 5 * MINUTE,
            starttls: 5 * MINUTE,
            tls_handshake: 5 * MINUTE,
            mail: 5 * MINUTE,
            rcpt: 5 * MINUTE,
            data_init: 2 * MINUTE,
            data_block: 3 * MINUTE,
            data_end: 10 * MINUTE,
            quit: Duration::from_secs(5),
        }
    }
}

impl Timeouts {
    /// The same timeout at every stage (handy in tests).
    pub fn uniform(limit: Duration) -> Timeouts {
        Timeouts {
            greeting: limit,
            ehlo: limit,
            starttls: limit,
            tls_handshake: limit,
            mail: limit,
            rcpt: limit,
            data_init: limit,
            data_block: limit,
            data_end: limit,
            quit: limit,
        }
    }

    /// The timeout that applies at `stage` (RSET shares MAIL's).
    pub fn for_stage(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Greeting => self.greeting,
            Stage::Ehlo => self.ehlo,
            Stage::StartTls => self.starttls,
            Stage::TlsHandshake => self.tls_handshake,
            Stage::Mail | Stage::Rset => self.mail,
            Stage::Rcpt => self.rcpt,
            Stage::DataInit => self.data_init,
            Stage::DataBlock => self.data_block,
            Stage::DataEnd => self.data_end,
            Stage::Quit => self.quit,
        }
    }
}
