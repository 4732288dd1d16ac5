//! The bodies of `screen show` and `screen clear`: what the screen in
//! front of the queue knows about one client (DNS lists, rates, greylist
//! entries) and what a reset removed.
//!
//! These mirror the screen crate's report types field for field (the JSON
//! is the same), as the other answers mirror the policy and TLS-RPT
//! types: this crate carries the operator's view and decides nothing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// What `screen clear` resets: a client or a sender domain. The CLI decides
/// which (an argument that parses as an IP address is one, anything else
/// must be a domain); the request says it explicitly, so the server never
/// guesses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScreenTarget {
    /// A client: its rates, its cached DNS list answers, the greylist
    /// entries of its network.
    Ip(IpAddr),
    /// A sender domain (as the CLI normalised it): its verified greylist
    /// entries and the trust it earned.
    Domain(String),
}

impl fmt::Display for ScreenTarget {
    /// The address or the domain, as the operator wrote it (normalised).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScreenTarget::Ip(ip) => ip.fmt(f),
            ScreenTarget::Domain(d) => f.write_str(d),
        }
    }
}

/// `portcullis screen show IP`: why this client is treated as it is.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScreenShow {
    /// The client asked about.
    pub ip: IpAddr,
    /// The key its rates count under (`192.0.2.1`, `2001:db8::/64`).
    pub rate_key: String,
    /// True when it is in `trusted_networks` (never screened).
    pub trusted: bool,
    /// Its DNS list score (the sum of the weights of the lists it is on).
    pub dnsbl_score: i32,
    /// The score at which it is refused (`[screen] dnsbl_threshold`).
    pub dnsbl_threshold: i32,
    /// One line per configured `[[dnsbl]]` zone.
    pub lists: Vec<ScreenListLine>,
    /// Its counts in the current minute, each with its limit.
    pub rates: Vec<ScreenRateLine>,
    /// The greylist entries of its network.
    pub greylist: Vec<ScreenGreylistLine>,
    /// One sentence: what happens to this client now.
    pub summary: String,
}

/// One DNS list in a [`ScreenShow`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScreenListLine {
    /// The zone.
    pub zone: String,
    /// Its weight (negative: an allow list).
    pub weight: i32,
    /// `listed`, `not listed` or `lookup failed: ...`.
    pub outcome: String,
    /// The A records of a listing (`127.0.0.2`).
    pub answers: Vec<String>,
}

/// One rate in a [`ScreenShow`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScreenRateLine {
    /// `connections`, `messages` or `recipients`.
    pub kind: String,
    /// Counted in the last minute.
    pub count: u32,
    /// Per minute; 0: no limit.
    pub limit: u32,
}

/// One greylist entry in a [`ScreenShow`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScreenGreylistLine {
    /// What the entry is keyed on (`192.0.2.0/24 a@b.test -> c@d.test`,
    /// `domain b.test -> c@d.test`); sender-written text.
    pub key: String,
    /// `waiting` (with when it passes) or `passed`.
    pub state: String,
    /// Unix seconds of the first attempt.
    pub first_seen: u64,
    /// Unix seconds when the entry is gone.
    pub expires: u64,
}

/// What `portcullis screen clear` removed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScreenCleared {
    /// What was reset.
    pub target: ScreenTarget,
    /// Rate entries removed.
    pub rates: u64,
    /// Cached DNS list answers removed.
    pub lists: u64,
    /// Greylist entries removed.
    pub greylist: u64,
}
