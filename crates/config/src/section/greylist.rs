//! `[greylist]`: a temporary refusal of mail from unknown senders, keyed
//! on the verified sender domain when SPF passes, else on the classic
//! triplet (client network, sender, recipient).

use crate::check::Checker;
use serde::Deserialize;
use std::time::Duration;

/// `[greylist]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistFile {
    /// `enabled`: greylist mail on `smtp` listeners (default false).
    pub enabled: Option<bool>,
    /// `delay`: how long after the first attempt a retry passes (default
    /// `"5m"`).
    pub delay: Option<String>,
    /// `retry_window`: how long after the first attempt a retry still
    /// counts (default `"1d"`); later, the entry starts again.
    pub retry_window: Option<String>,
    /// `pass_ttl`: how long a passed entry lets mail through without delay
    /// after its last use (default `"35d"`).
    pub pass_ttl: Option<String>,
    /// `trust_after`: passes after which an SPF-verified sender domain is
    /// let through for every recipient without delay (default 3; domains
    /// with DMARC `p=reject` after 1).
    pub trust_after: Option<u32>,
}

/// Greylisting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Greylist {
    /// On or off.
    pub enabled: bool,
    /// First attempt → earliest pass.
    pub delay: Duration,
    /// First attempt → latest pass.
    pub retry_window: Duration,
    /// Lifetime of a pass after its last use.
    pub pass_ttl: Duration,
    /// Passes that make a verified domain trusted.
    pub trust_after: u32,
}

impl Default for Greylist {
    /// Off; 5 minutes, 1 day, 35 days, trusted after 3 passes.
    fn default() -> Greylist {
        Greylist {
            enabled: false,
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(86_400),
            pass_ttl: Duration::from_secs(35 * 86_400),
            trust_after: 3,
        }
    }
}

/// `[greylist]`: the delay must be shorter than the retry window.
pub(crate) fn build(f: &GreylistFile, c: &mut Checker) -> Greylist {
    let d = Greylist::default();
    let g = Greylist {
        enabled: f.enabled.unwrap_or(d.enabled),
        delay: c.duration("greylist.delay", &f.delay, d.delay),
        retry_window: c.duration("greylist.retry_window", &f.retry_window, d.retry_window),
        pass_ttl: c.duration("greylist.pass_ttl", &f.pass_ttl, d.pass_ttl),
        trust_after: c.positive("greylist.trust_after", f.trust_after, d.trust_after),
    };
    if g.delay >= g.retry_window {
        c.fail(
            "greylist.retry_window",
            "must be longer than greylist.delay (no retry could ever pass)",
        );
    }
    g
}
