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

/// What a refused client is told.
pub(crate) fn reply(
    check: Check,
    ip: IpAddr,
    rcpt: Option<&Address>,
    detail: &str,
    wait: Duration,
) -> Reply {
    let rcpt = rcpt.map(ToString::to_string).unwrap_or_default();
    let secs = wait.as_secs().max(1);
    match check {
        Check::Dnsbl => Reply::new(
            554,
            (5, 7, 1),
            format!("Service unavailable; client [{ip}] blocked using {detail}"),
        ),
        Check::RateConnections => Reply::new(
            421,
            (4, 7, 0),
            format!("Too many connections from [{ip}], try again later"),
        ),
        Check::RateMessages => Reply::new(
            452,
            (4, 7, 1),
            format!("Too many messages from [{ip}]; try again in {secs} seconds"),
        ),
        Check::RateRecipients => Reply::new(
            451,
            (4, 7, 1),
            format!("Too many recipients from [{ip}]; try again in {secs} seconds"),
        ),
        Check::RecipientUnknown => Reply::new(
            550,
            (5, 1, 1),
            format!("<{rcpt}>: Recipient address rejected: user unknown"),
        ),
        Check::RecipientUnreachable => Reply::new(
            451,
            (4, 4, 3),
            format!("<{rcpt}>: Recipient address verification failed: try again later"),
        ),
        Check::Greylist => Reply::new(
            451,
            (4, 7, 1),
            format!("<{rcpt}>: Greylisted, try again in {secs} seconds"),
        ),
    }
}

/// Refusals counted by check.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    counts: [AtomicU64; 7],
}

impl Refusals {
    /// Counts and logs one refusal (`detail`: the zone, the route's
    /// reason, the wait) and returns its reply.
    pub(crate) fn refuse(
        &self,
        check: Check,
        ip: IpAddr,
        rcpt: Option<&Address>,
        detail: &str,
        wait: Duration,
    ) -> Reply {
        self.counts[check as usize].fetch_add(1, Ordering::Relaxed);
        let recipient = rcpt.map(ToString::to_string).unwrap_or_default();
        tracing::info!(client = %ip, %recipient, check = check.as_str(), detail, "screen refused");
        reply(check, ip, rcpt, detail, wait)
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
