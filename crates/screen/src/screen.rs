//! The screen's decisions at connect, MAIL and RCPT, the operator's view
//! of one client (`screen show`) and its reset (`screen clear`).
//!
//! SKELETON: the signatures below are the contract the inbound side and
//! the binary code against; the bodies are being filled in.

use crate::ScreenDns;
use crate::dnsbl::ListsVerdict;
use crate::recipients::RecipientProbe;
use crate::state::{ScreenStore, StateError};
use portcullis_config::Config;
use portcullis_metrics::MetricsWriter;
use portcullis_types::{Address, Clock, Domain, Reply, ReversePath};
use std::net::IpAddr;
use std::sync::Arc;

/// Why the screen could not be built: a recipients file that does not
/// parse (its path and line), or the state store.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    /// A `[recipients] files` file is unreadable or has a bad line.
    #[error("{0}")]
    Recipients(#[from] crate::recipients::FileError),
}

/// Builds a [`Screen`]: the state store, then optionally the clock, the
/// DNS the lists are looked up through and the recipient probe.
pub struct ScreenBuilder {
    store: Arc<dyn ScreenStore>,
    clock: Arc<dyn Clock>,
    dns: Option<Arc<dyn ScreenDns>>,
    probe: Option<Arc<dyn RecipientProbe>>,
}

impl ScreenBuilder {
    /// A builder over `store`, with the system clock, no DNS (no list is
    /// looked up, no DMARC policy is known) and no probe (`verify =
    /// "route"` then verifies nothing).
    pub fn new(store: Arc<dyn ScreenStore>) -> ScreenBuilder {
        ScreenBuilder {
            store,
            clock: Arc::new(portcullis_types::SystemClock),
            dns: None,
            probe: None,
        }
    }

    /// The clock every expiry and rate window is measured on.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> ScreenBuilder {
        self.clock = clock;
        self
    }

    /// The DNS the lists and DMARC policies are looked up through.
    pub fn dns(mut self, dns: Arc<dyn ScreenDns>) -> ScreenBuilder {
        self.dns = Some(dns);
        self
    }

    /// The probe that asks a domain's route whether a recipient exists.
    pub fn probe(mut self, probe: Arc<dyn RecipientProbe>) -> ScreenBuilder {
        self.probe = Some(probe);
        self
    }

    /// The screen for `cfg` (`[recipients]`, `[[dnsbl]]`, `[screen]`,
    /// `[greylist]`, `[relay]`); the recipients files are read now.
    pub fn build(self, cfg: &Config) -> Result<Screen, ScreenError> {
        let _ = (self.store, self.clock, self.dns, self.probe, cfg);
        Ok(Screen {})
    }
}

/// The screen. Cheap to clone. Its state (rate table, DNS list cache,
/// store, counters) is shared by [`Screen::reload`]ed copies.
#[derive(Clone)]
pub struct Screen {}

/// What a RCPT is checked with: what the session knows, recorded by the
/// server (never taken from the message).
#[derive(Debug, Clone, Copy)]
pub struct RcptFacts<'a> {
    /// The client.
    pub ip: IpAddr,
    /// Trusted network or authenticated session: no DNS list, rate or
    /// greylisting; the recipient is still verified.
    pub exempt: bool,
    /// The client's DNS list verdict; `None` when it was not looked up.
    pub lists: Option<&'a ListsVerdict>,
    /// MAIL FROM.
    pub sender: &'a ReversePath,
    /// The MAIL FROM domain (or HELO name for a null sender) when SPF
    /// checked at MAIL FROM passed for it.
    pub spf_pass: Option<&'a Domain>,
    /// The recipient (anti-relay already passed).
    pub recipient: &'a Address,
}

/// What `screen show IP` reports about one client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScreenReport {
    /// The client.
    pub ip: IpAddr,
    /// The key its rates count under (`192.0.2.1`, `2001:db8::/64`).
    pub rate_key: String,
    /// True for a trusted network (never screened).
    pub trusted: bool,
    /// The DNS list score and threshold.
    pub dnsbl_score: i32,
    /// The threshold in force.
    pub dnsbl_threshold: i32,
    /// One line per list: zone, weight, listed or not (or the failure).
    pub lists: Vec<ListLine>,
    /// Counts in the current minute: connections, messages, recipients,
    /// each with its limit (0: none).
    pub rates: Vec<RateLine>,
    /// Greylist entries of the client's network.
    pub greylist: Vec<GreylistLine>,
    /// One sentence: what happens to this client now.
    pub summary: String,
}

/// One list in a [`ScreenReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListLine {
    /// The zone.
    pub zone: String,
    /// Its weight.
    pub weight: i32,
    /// `listed`, `not listed` or `lookup failed: ...`.
    pub outcome: String,
    /// The A records of a listing (`127.0.0.2`).
    pub answers: Vec<String>,
}

/// One rate in a [`ScreenReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLine {
    /// `connections`, `messages` or `recipients`.
    pub kind: String,
    /// Counted in the last minute.
    pub count: u32,
    /// Per minute; 0: no limit.
    pub limit: u32,
}

/// One greylist entry in a [`ScreenReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GreylistLine {
    /// What the entry is keyed on (`192.0.2.0/24 a@b.test -> c@d.test`,
    /// or `domain b.test -> c@d.test`).
    pub key: String,
    /// `waiting` (with when it passes) or `passed`.
    pub state: String,
    /// Unix seconds of the first attempt.
    pub first_seen: u64,
    /// Unix seconds when the entry is gone.
    pub expires: u64,
}

/// What `screen clear` removes the state of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearTarget {
    /// A client: its rates, its cached list verdict, its greylist entries.
    Ip(IpAddr),
    /// A sender domain: its verified greylist entries and its trust.
    Domain(Domain),
}

/// What `screen clear` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cleared {
    /// Rate entries.
    pub rates: u64,
    /// Cached DNS list verdicts.
    pub lists: u64,
    /// Greylist entries.
    pub greylist: u64,
}

impl Screen {
    /// A screen with `cfg`'s settings (a reload) sharing this one's state;
    /// the recipients files are read again.
    pub fn reload(&self, cfg: &Config) -> Result<Screen, ScreenError> {
        let _ = cfg;
        Ok(self.clone())
    }

    /// Counts a connection of `ip` (the caller skips exempt clients); the
    /// 421 4.7.0 to send before closing when it is over
    /// `connections_per_minute`.
    pub fn connect(&self, ip: IpAddr) -> Result<(), Reply> {
        let _ = ip;
        Ok(())
    }

    /// True when clients are looked up in DNS lists (any `[[dnsbl]]`).
    pub fn looks_up_lists(&self) -> bool {
        false
    }

    /// The client's DNS list verdict (cached by TTL; a failed lookup scores
    /// nothing and is logged). Run while the greeting is sent.
    pub async fn lists(&self, ip: IpAddr) -> ListsVerdict {
        let _ = ip;
        ListsVerdict::default()
    }

    /// True when a RCPT needs [`Screen::rcpt`] (recipients verified, lists,
    /// a recipient rate or greylisting).
    pub fn checks_rcpt(&self) -> bool {
        false
    }

    /// Counts a MAIL of `ip` (the caller skips exempt clients); the 452
    /// 4.7.1 when it is over `messages_per_minute`.
    pub fn mail(&self, ip: IpAddr) -> Result<(), Reply> {
        let _ = ip;
        Ok(())
    }

    /// Decides one RCPT after anti-relay, in order: the DNS list verdict
    /// (554 5.7.1 naming the zone; `postmaster@` of an accepted domain
    /// passes), the recipient rate (451 4.7.1), recipient verification
    /// (550 5.1.1 / 451 4.4.3), greylisting (451 4.7.1). Exempt clients
    /// get only the verification. Logs one line per refusal.
    pub async fn rcpt(&self, facts: &RcptFacts<'_>) -> Result<(), Reply> {
        let _ = facts;
        Ok(())
    }

    /// Why `ip` is treated as it is (a fresh list lookup when none is
    /// cached).
    pub async fn show(&self, ip: IpAddr) -> ScreenReport {
        ScreenReport {
            ip,
            rate_key: portcullis_types::AddrKey::of(ip).to_string(),
            trusted: false,
            dnsbl_score: 0,
            dnsbl_threshold: 1,
            lists: Vec::new(),
            rates: Vec::new(),
            greylist: Vec::new(),
            summary: String::new(),
        }
    }

    /// Forgets what the screen holds about `target`.
    pub async fn clear(&self, target: &ClearTarget) -> Result<Cleared, StateError> {
        let _ = target;
        Ok(Cleared::default())
    }

    /// Removes expired state (greylist entries, probe answers); run
    /// periodically by the server.
    pub async fn sweep(&self) -> Result<u64, StateError> {
        Ok(0)
    }

    /// The screen's metric families (lists by zone and outcome, rate
    /// refusals, recipient verification, greylisting).
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        let _ = w;
    }
}
