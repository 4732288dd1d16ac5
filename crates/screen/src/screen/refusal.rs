//! The screen's refusals: which check refused, the reply the client gets
//! (the texts administrators know from Postfix), one log line each, and a
//! counter per check.

use portcullis_metrics::MetricsWriter;
use portcullis_types::{Address, Reply};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The check that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Dnsbl,
    RateConnections,
    RateMessages,
    RateRecipients,
    RecipientUnknown,
    RecipientUnreachable,
    Greylist,
}

impl Check {
    const ALL: [Check; 7] = [
        Check::Dnsbl,
        Check::RateConnections,
        Check::RateMessages,
        Check::RateRecipients,
        Check::RecipientUnknown,
        Check::RecipientUnreachable,
        Check::Greylist,
    ];

    /// The reply code and enhanced status code (RFC 3463: 4.7.x/5.7.x
    /// security or policy, 5.1.1 bad mailbox, 4.4.3 routing failure).
    fn code(self) -> (u16, (u8, u16, u16)) {
        match self {
            Check::Dnsbl => (554, (5, 7, 1)),
            Check::RateConnections => (421, (4, 7, 0)),
            Check::RateMessages => (452, (4, 7, 1)),
            Check::RateRecipients | Check::Greylist => (451, (4, 7, 1)),
            Check::RecipientUnknown => (550, (5, 1, 1)),
            Check::RecipientUnreachable => (451, (4, 4, 3)),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Check::Dnsbl => "dnsbl",
            Check::RateConnections => "rate_connections",
            Check::RateMessages => "rate_messages",
            Check::RateRecipients => "rate_recipients",
            Check::RecipientUnknown => "recipient_unknown",
            Check::RecipientUnreachable => "recipient_unreachable",
            Check::Greylist => "greylist",
        }
    }
}

/// One refusal: the check, the client, the recipient (absent at connect
/// and MAIL), the detail (the zone, the route's reason, the outcome) and
/// how long until a retry may pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal<'a> {
    pub(crate) check: Check,
    pub(crate) ip: IpAddr,
    pub(crate) rcpt: Option<&'a Address>,
    pub(crate) detail: &'a str,
    pub(crate) wait: Duration,
}

/// What a refused client is told.
fn reply(r: &Refusal<'_>) -> Reply {
    let (check, ip, detail) = (r.check, r.ip, r.detail);
    let rcpt = r.rcpt.map(ToString::to_string).unwrap_or_default();
    let secs = r.wait.as_secs().max(1);
    let text = match check {
        Check::Dnsbl => format!("Service unavailable; client [{ip}] blocked using {detail}"),
        Check::RateConnections => format!("Too many connections from [{ip}], try again later"),
        Check::RateMessages => {
            format!("Too many messages from [{ip}]; try again in {secs} seconds")
        }
        Check::RateRecipients => {
            format!("Too many recipients from [{ip}]; try again in {secs} seconds")
        }
        Check::RecipientUnknown => format!("<{rcpt}>: Recipient address rejected: user unknown"),
        Check::RecipientUnreachable => {
            format!("<{rcpt}>: Recipient address verification failed: try again later")
        }
        Check::Greylist => format!("<{rcpt}>: Greylisted, try again in {secs} seconds"),
    };
    let (code, enhanced) = check.code();
    Reply::new(code, enhanced, text)
}

/// Refusals counted by check.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    counts: [AtomicU64; 7],
}

impl Refusals {
    /// Counts and logs one refusal and returns its reply.
    pub(crate) fn refuse(&self, r: Refusal<'_>) -> Reply {
        self.counts[r.check as usize].fetch_add(1, Ordering::Relaxed);
        let recipient = r.rcpt.map(ToString::to_string).unwrap_or_default();
        tracing::info!(client = %r.ip, %recipient, check = r.check.as_str(), detail = r.detail, "screen refused");
        reply(&r)
    }

    /// `portcullis_screen_refusals_total{check}`.
    pub(crate) fn render(&self, w: &mut MetricsWriter) {
        for check in Check::ALL {
            w.counter(
                "portcullis_screen_refusals_total",
                "Clients refused by the screen, by check.",
                &[("check", check.as_str())],
                self.counts[check as usize].load(Ordering::Relaxed),
            );
        }
    }
}
