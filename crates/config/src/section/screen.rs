//! `[screen]`: what a client must stay under to be served: its DNS list
//! score and its rates (per IPv4 address, per IPv6 /64).

use crate::check::Checker;
use serde::Deserialize;

/// `[screen]`: the DNSBL threshold and the per-client rates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenFile {
    /// `dnsbl_threshold`: a client whose `[[dnsbl]]` score reaches this is
    /// refused at RCPT with 554 5.7.1 (default 1).
    pub dnsbl_threshold: Option<i32>,
    /// `connections_per_minute`: per IPv4 address / IPv6 /64; over it, 421
    /// 4.7.0 at connect (default 0: no limit).
    pub connections_per_minute: Option<u32>,
    /// `messages_per_minute`: MAIL commands per client; over it, 452 4.7.1
    /// (default 0: no limit).
    pub messages_per_minute: Option<u32>,
    /// `recipients_per_minute`: RCPT commands per client; over it, 451
    /// 4.7.1 (default 0: no limit).
    pub recipients_per_minute: Option<u32>,
}

/// The screen's thresholds. Trusted networks and authenticated sessions
/// are never screened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Screen {
    /// Score at which a client is refused.
    pub dnsbl_threshold: i32,
    /// Connections per minute per client; 0: no limit.
    pub connections_per_minute: u32,
    /// Messages (MAIL) per minute per client; 0: no limit.
    pub messages_per_minute: u32,
    /// Recipients (RCPT) per minute per client; 0: no limit.
    pub recipients_per_minute: u32,
}

impl Default for Screen {
    /// Threshold 1; no rate limits.
    fn default() -> Screen {
        Screen {
            dnsbl_threshold: 1,
            connections_per_minute: 0,
            messages_per_minute: 0,
            recipients_per_minute: 0,
        }
    }
}

impl Screen {
    /// True when any rate is limited.
    pub fn rates_limited(&self) -> bool {
        self.connections_per_minute > 0
            || self.messages_per_minute > 0
            || self.recipients_per_minute > 0
    }
}

/// `[screen]`: the threshold must be positive (a threshold of 0 or less
/// would refuse every client that is on no list).
pub(crate) fn build(f: &ScreenFile, c: &mut Checker) -> Screen {
    let d = Screen::default();
    let dnsbl_threshold = match f.dnsbl_threshold {
        Some(t) if t < 1 => {
            c.fail(
                "screen.dnsbl_threshold",
                "must be 1 or more (a lower threshold refuses clients on no list)",
            );
            d.dnsbl_threshold
        }
        Some(t) => t,
        None => d.dnsbl_threshold,
    };
    Screen {
        dnsbl_threshold,
        connections_per_minute: f.connections_per_minute.unwrap_or(0),
        messages_per_minute: f.messages_per_minute.unwrap_or(0),
        recipients_per_minute: f.recipients_per_minute.unwrap_or(0),
    }
}
