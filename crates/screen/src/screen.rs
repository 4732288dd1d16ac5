//! The screen's decisions at connect, MAIL and RCPT, the operator's view
//! of one client (`screen show`) and its reset (`screen clear`).
//!
//! A [`Screen`] is two halves: the state every session and every reload
//! shares (rate table, DNS list cache, recipient verifier, greylister,
//! store, counters) and the settings of one config generation (in an
//! `Arc`, replaced whole by [`Screen::reload`]), so a reload changes limits
//! without forgetting who was counted.

mod refusal;
mod report;

use crate::ScreenDns;
use crate::dnsbl::{DnsLists, ListsVerdict, SharedLists};
use crate::greylist::{Attempt, Decision, Greylister};
use crate::rates::{Kind, RateTable};
use crate::recipients::{Known, RecipientFiles, RecipientProbe, RecipientVerifier};
use crate::state::{ScreenStore, StateError};
use portcullis_config::Config;
use portcullis_metrics::MetricsWriter;
use portcullis_types::{AddrKey, Address, Clock, Domain, Reply, ReversePath};
use refusal::{Check, Refusal, Refusals};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    lists: Option<Arc<dyn SharedLists>>,
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
            lists: None,
        }
    }

    /// Cluster mode: DNS list answers shared with the other nodes.
    pub fn shared_lists(mut self, lists: Arc<dyn SharedLists>) -> ScreenBuilder {
        self.lists = Some(lists);
        self
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
        let settings = Settings::new(cfg)?;
        let clock = self.clock;
        let shared = Shared {
            rates: RateTable::new(crate::rates::DEFAULT_CAPACITY, clock.clone()),
            lists: match self.lists {
                Some(others) => DnsLists::new(self.dns.clone(), clock.clone()).with_shared(others),
                None => DnsLists::new(self.dns.clone(), clock.clone()),
            },
            verifier: RecipientVerifier::new(self.store.clone(), self.probe, clock.clone()),
            greylist: Greylister::new(self.store.clone(), clock.clone(), self.dns),
            refusals: Refusals::default(),
            store: self.store,
            clock,
        };
        Ok(Screen {
            shared: Arc::new(shared),
            settings: Arc::new(settings),
        })
    }
}

/// The screen. Cheap to clone. Its state (rate table, DNS list cache,
/// store, counters) is shared by [`Screen::reload`]ed copies.
#[derive(Clone)]
pub struct Screen {
    shared: Arc<Shared>,
    settings: Arc<Settings>,
}

/// What every generation shares.
struct Shared {
    store: Arc<dyn ScreenStore>,
    clock: Arc<dyn Clock>,
    rates: RateTable,
    lists: DnsLists,
    verifier: RecipientVerifier,
    greylist: Greylister,
    refusals: Refusals,
}

/// One config generation's settings.
struct Settings {
    recipients: portcullis_config::Recipients,
    files: RecipientFiles,
    dnsbl: Vec<portcullis_config::Dnsbl>,
    screen: portcullis_config::Screen,
    greylist: portcullis_config::Greylist,
    relay: portcullis_config::Relay,
    /// `[publish] tlsrpt_rua` mailboxes: read by the server itself, so
    /// there is no mailbox behind them for verification to find.
    report_mailboxes: Vec<Address>,
}

impl Settings {
    /// `cfg`'s screen settings; the recipients files are read now.
    fn new(cfg: &Config) -> Result<Settings, ScreenError> {
        Ok(Settings {
            files: RecipientFiles::load(&cfg.recipients.files)?,
            recipients: cfg.recipients.clone(),
            dnsbl: cfg.dnsbl.clone(),
            screen: cfg.screen.clone(),
            greylist: cfg.greylist.clone(),
            relay: cfg.relay.clone(),
            report_mailboxes: cfg.publish.report_mailboxes(),
        })
    }

    /// `postmaster@` (any case, RFC 5321 §4.5.1) of an accepted domain:
    /// never refused by a DNS list nor greylisted, so a listed client can
    /// still reach a person.
    fn is_postmaster(&self, rcpt: &Address) -> bool {
        rcpt.local.eq_ignore_ascii_case("postmaster") && self.relay.accepts(&rcpt.domain)
    }

    /// A `[publish] tlsrpt_rua` mailbox (local part in any case, as the
    /// server reads it: `tlsrpt::received::Ours::is_mailbox`).
    fn is_report_mailbox(&self, rcpt: &Address) -> bool {
        self.report_mailboxes
            .iter()
            .any(|m| m.domain == rcpt.domain && m.local.eq_ignore_ascii_case(&rcpt.local))
    }
}

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
        Ok(Screen {
            shared: self.shared.clone(),
            settings: Arc::new(Settings::new(cfg)?),
        })
    }

    /// Counts a connection of `ip` (the caller skips exempt clients); the
    /// 421 4.7.0 to send before closing when it is over
    /// `connections_per_minute`.
    pub fn connect(&self, ip: IpAddr) -> Result<(), Reply> {
        let limit = self.settings.screen.connections_per_minute;
        self.rate(ip, None, Kind::Connections, limit)
    }

    /// The per-client rate table every generation shares: cluster mode
    /// exchanges its counts with the other nodes through it
    /// ([`RateTable::changed`], [`RateTable::set_remote`]).
    pub fn rates(&self) -> &RateTable {
        &self.shared.rates
    }

    /// True when clients are looked up in DNS lists (any `[[dnsbl]]`).
    pub fn looks_up_lists(&self) -> bool {
        !self.settings.dnsbl.is_empty()
    }

    /// The client's DNS list verdict (cached by TTL; a failed lookup scores
    /// nothing and is logged). Run while the greeting is sent.
    pub async fn lists(&self, ip: IpAddr) -> ListsVerdict {
        self.shared.lists.verdict(&self.settings.dnsbl, ip).await
    }

    /// True when a RCPT needs [`Screen::rcpt`] (recipients verified, lists,
    /// a recipient rate or greylisting).
    pub fn checks_rcpt(&self) -> bool {
        let s = &self.settings;
        s.recipients.enabled()
            || !s.dnsbl.is_empty()
            || s.screen.recipients_per_minute > 0
            || s.greylist.enabled
    }

    /// Counts a MAIL of `ip` (the caller skips exempt clients); the 452
    /// 4.7.1 when it is over `messages_per_minute`.
    pub fn mail(&self, ip: IpAddr) -> Result<(), Reply> {
        let limit = self.settings.screen.messages_per_minute;
        self.rate(ip, None, Kind::Messages, limit)
    }

    /// Counts one `kind` event of `ip` against `limit`; the refusal when
    /// it is over.
    fn rate(
        &self,
        ip: IpAddr,
        rcpt: Option<&Address>,
        kind: Kind,
        limit: u32,
    ) -> Result<(), Reply> {
        let wait = match self.shared.rates.check(AddrKey::of(ip), kind, limit) {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        let check = match kind {
            Kind::Connections => Check::RateConnections,
            Kind::Messages => Check::RateMessages,
            Kind::Recipients => Check::RateRecipients,
        };
        let detail = format!("over {limit} {} per minute", kind.as_str());
        Err(self.shared.refusals.refuse(Refusal {
            check,
            ip,
            rcpt,
            detail: &detail,
            wait,
        }))
    }

    /// Decides one RCPT after anti-relay, in order: the DNS list verdict
    /// (554 5.7.1 naming the zone; `postmaster@` of an accepted domain
    /// passes), the recipient rate (451 4.7.1), recipient verification
    /// (550 5.1.1 / 451 4.4.3), greylisting (451 4.7.1). Exempt clients
    /// get only the verification. Logs one line per refusal.
    pub async fn rcpt(&self, facts: &RcptFacts<'_>) -> Result<(), Reply> {
        let s = &self.settings;
        let postmaster = s.is_postmaster(facts.recipient);
        if !facts.exempt {
            let threshold = s.screen.dnsbl_threshold;
            let blocked = facts.lists.and_then(|v| v.blocked_by(threshold));
            if let Some(zone) = blocked.filter(|_| !postmaster) {
                let zone = zone.to_string();
                return Err(self.refuse_rcpt(facts, Check::Dnsbl, &zone, Duration::ZERO));
            }
            let limit = s.screen.recipients_per_minute;
            self.rate(facts.ip, Some(facts.recipient), Kind::Recipients, limit)?;
        }
        self.verify(facts).await?;
        let allowlisted = facts.lists.is_some_and(ListsVerdict::allowlisted);
        if facts.exempt || !s.greylist.enabled || postmaster || allowlisted {
            return Ok(());
        }
        self.greylist(facts).await
    }

    /// Counts, logs and words the refusal of `facts`' recipient.
    fn refuse_rcpt(
        &self,
        facts: &RcptFacts<'_>,
        check: Check,
        detail: &str,
        wait: Duration,
    ) -> Reply {
        self.shared.refusals.refuse(Refusal {
            check,
            ip: facts.ip,
            rcpt: Some(facts.recipient),
            detail,
            wait,
        })
    }

    /// Recipient verification, for recipients at accepted domains when
    /// `[recipients]` verifies any; our TLS report mailboxes always exist.
    async fn verify(&self, facts: &RcptFacts<'_>) -> Result<(), Reply> {
        let s = &self.settings;
        let rcpt = facts.recipient;
        if !s.recipients.enabled() || !s.relay.accepts(&rcpt.domain) || s.is_report_mailbox(rcpt) {
            return Ok(());
        }
        let tempfail = s.recipients.unreachable == portcullis_config::Unreachable::Tempfail;
        let verifier = &self.shared.verifier;
        match verifier.check(&s.recipients, &s.files, rcpt).await {
            Known::Unknown => Err(self.refuse_rcpt(
                facts,
                Check::RecipientUnknown,
                "user unknown",
                Duration::ZERO,
            )),
            Known::Unreachable(why) if tempfail => {
                Err(self.refuse_rcpt(facts, Check::RecipientUnreachable, &why, Duration::ZERO))
            }
            Known::Unreachable(why) => {
                tracing::info!(client = %facts.ip, recipient = %rcpt, reason = %why, "recipient not verified (route unreachable): accepted as configured");
                Ok(())
            }
            Known::Exists | Known::Unverified => Ok(()),
        }
    }

    /// Greylisting; a store failure lets the recipient through (logged):
    /// losing a delay never loses mail.
    async fn greylist(&self, facts: &RcptFacts<'_>) -> Result<(), Reply> {
        let attempt = Attempt {
            ip: facts.ip,
            sender: facts.sender,
            spf_pass: facts.spf_pass,
            recipient: facts.recipient,
        };
        let greylist = &self.shared.greylist;
        match greylist.check(&self.settings.greylist, &attempt).await {
            Ok(Decision::Pass(_)) => Ok(()),
            Ok(Decision::Wait { outcome, retry_in }) => {
                Err(self.refuse_rcpt(facts, Check::Greylist, outcome.as_str(), retry_in))
            }
            Err(e) => {
                tracing::warn!(client = %facts.ip, recipient = %facts.recipient, error = %e, "greylist state unavailable: recipient let through");
                Ok(())
            }
        }
    }

    /// Why `ip` is treated as it is (a fresh list lookup when none is
    /// cached).
    pub async fn show(&self, ip: IpAddr) -> ScreenReport {
        let s = &self.settings;
        let key = AddrKey::of(ip);
        let verdict = self.lists(ip).await;
        let rates = report::rate_lines(self.shared.rates.count(key), &s.screen);
        let greylist = match self.shared.greylist.entries(ip, s.greylist.delay).await {
            Ok(entries) => entries.into_iter().map(report::greylist_line).collect(),
            Err(e) => {
                tracing::warn!(client = %ip, error = %e, "screen show: greylist state unavailable");
                Vec::new()
            }
        };
        let trusted = s.relay.trusts(ip);
        let summary = report::summary(&report::Standing {
            trusted,
            verdict: &verdict,
            threshold: s.screen.dnsbl_threshold,
            rates: &rates,
            greylisting: s.greylist.enabled,
            greylist: &greylist,
        });
        ScreenReport {
            ip,
            rate_key: key.to_string(),
            trusted,
            dnsbl_score: verdict.score,
            dnsbl_threshold: s.screen.dnsbl_threshold,
            lists: report::list_lines(&s.dnsbl, &verdict),
            rates,
            greylist,
            summary,
        }
    }

    /// Forgets what the screen holds about `target`.
    pub async fn clear(&self, target: &ClearTarget) -> Result<Cleared, StateError> {
        let g = &self.shared.greylist;
        let cleared = match target {
            ClearTarget::Ip(ip) => Cleared {
                rates: u64::from(self.shared.rates.forget(AddrKey::of(*ip))),
                lists: self.shared.lists.forget(*ip) + self.shared.lists.forget_shared(*ip).await,
                greylist: g.clear_network(*ip).await?,
            },
            ClearTarget::Domain(domain) => Cleared {
                greylist: g.clear_domain(domain).await?,
                ..Cleared::default()
            },
        };
        tracing::info!(target = ?target, ?cleared, "screen state cleared");
        Ok(cleared)
    }

    /// Removes expired state (greylist entries, probe answers); run
    /// periodically by the server.
    pub async fn sweep(&self) -> Result<u64, StateError> {
        self.shared.store.sweep(self.shared.clock.unix_secs()).await
    }

    /// The screen's metric families (lists by zone and outcome, rate
    /// refusals, recipient verification, greylisting).
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        self.shared.refusals.render(w);
        self.shared.greylist.render_metrics(w);
        w.gauge(
            "portcullis_screen_rate_clients",
            "Clients (IPv4 addresses, IPv6 /64s) the rate table holds now.",
            &[],
            self.shared.rates.len() as u64,
        );
        self.shared.lists.render_metrics(w);
        self.shared.verifier.render_metrics(w);
    }
}

#[cfg(test)]
mod tests;
