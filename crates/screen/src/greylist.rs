//! Greylisting keyed on verified identity.
//!
//! A first attempt is refused with a temporary error; a retry after
//! `delay` and within `retry_window` passes, and the pass then lets the
//! same key through without delay until `pass_ttl` after its last use.
//! What is keyed:
//!
//! - when SPF passed for the sender's domain at MAIL FROM, the pair
//!   (verified domain, recipient): a large sender retrying from another
//!   address of its pool is not delayed again;
//! - else the classic triplet (client /24 or /64, sender, recipient).
//!
//! A verified domain's passes are counted (one entry per domain); after
//! `trust_after` of them, or after one when its DMARC policy is
//! `p=reject`, it is trusted for every recipient. Only a completed delay
//! counts as a pass, not the mail that follows it: trust is earned by
//! retrying as real MTAs do, for several recipients or over time, which a
//! spam run that retries once does not do.
//!
//! Threat model: every key part is length-prefixed (see `key`), so no
//! sender or recipient bytes can forge another tuple's entry; trust is
//! granted only to a domain that SPF verified, never to a name taken from
//! the message. The caller skips what is never greylisted (exempt
//! sessions, allowlisted clients, `postmaster@`); a store failure is the
//! caller's to treat (the screen lets the mail through).

mod dmarc;
mod key;

use crate::ScreenDns;
use crate::state::{ScreenStore, StateError, Stored, Table};
use portcullis_config::Greylist as Settings;
use portcullis_metrics::MetricsWriter;
use portcullis_types::{Address, Clock, Domain, ReversePath};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A pass's (or a trust's) expiry is pushed back only once it has aged
/// this long, so a busy sender costs one write an hour, not one per RCPT.
const REFRESH_AFTER: u64 = 3600;

/// At most this many entries of one network are listed by `screen show`.
pub const MAX_LISTED: usize = 1000;

/// What greylisting made of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First sight: refused, the entry starts waiting.
    New,
    /// Retried before `delay`: refused again.
    Early,
    /// Retried after `delay` within `retry_window`: passes, and so will
    /// later mail with this key.
    Passed,
    /// A key that had passed before.
    PassHit,
    /// A trusted verified domain: no delay at all.
    Trusted,
}

impl Outcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [Outcome; 5] = [
        Outcome::New,
        Outcome::Early,
        Outcome::Passed,
        Outcome::PassHit,
        Outcome::Trusted,
    ];

    /// `new`, `early`, `passed`, `pass_hit` or `trusted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Early => "early",
            Outcome::Passed => "passed",
            Outcome::PassHit => "pass_hit",
            Outcome::Trusted => "trusted",
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::New => 0,
            Outcome::Early => 1,
            Outcome::Passed => 2,
            Outcome::PassHit => 3,
            Outcome::Trusted => 4,
        }
    }
}

/// The greylister's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through ([`Outcome::Passed`], [`Outcome::PassHit`] or
    /// [`Outcome::Trusted`]).
    Pass(Outcome),
    /// Refuse for now (451 4.7.1): [`Outcome::New`] or [`Outcome::Early`],
    /// and how long until a retry passes (at least one second).
    Wait {
        /// Why.
        outcome: Outcome,
        /// Until the retry passes.
        retry_in: Duration,
    },
}

impl Decision {
    /// The outcome, either way.
    pub fn outcome(&self) -> Outcome {
        match *self {
            Decision::Pass(o) | Decision::Wait { outcome: o, .. } => o,
        }
    }
}

/// One attempt, as the session recorded it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The client.
    pub ip: IpAddr,
    /// MAIL FROM.
    pub sender: &'a ReversePath,
    /// The domain SPF passed for at MAIL FROM, if it did.
    pub spf_pass: Option<&'a Domain>,
    /// The recipient.
    pub recipient: &'a Address,
}

/// One live entry, for `screen show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is keyed on (`192.0.2.0/24 <a@b.test> -> c@d.test`).
    pub key: String,
    /// True once passed.
    pub passed: bool,
    /// Unix seconds of the first attempt.
    pub first_seen: u64,
    /// Unix seconds when a waiting entry can pass (`first_seen + delay`
    /// at the time of writing; equal to `first_seen` for a pass).
    pub passes_at: u64,
    /// Unix seconds when the entry is gone.
    pub expires: u64,
}

/// A triplet's or pair's state: `[0 | 1] ‖ first_seen (u64 BE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting { first: u64 },
    Passed { first: u64 },
}

impl State {
    fn encode(self) -> Vec<u8> {
        let (tag, first) = match self {
            State::Waiting { first } => (0u8, first),
            State::Passed { first } => (1u8, first),
        };
        let mut out = vec![tag];
        out.extend_from_slice(&first.to_be_bytes());
        out
    }

    /// `None` for anything but the 9 octets `encode` writes (the entry is
    /// then treated as absent and overwritten).
    fn decode(raw: &[u8]) -> Option<State> {
        let (&tag, rest) = raw.split_first()?;
        let first = u64::from_be_bytes(rest.try_into().ok()?);
        match tag {
            0 => Some(State::Waiting { first }),
            1 => Some(State::Passed { first }),
            _ => None,
        }
    }
}

/// A verified domain's standing: `passes (u32 BE) ‖ reject (0 | 1)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Trust {
    passes: u32,
    /// Its DMARC policy said `p=reject` at one of its passes.
    reject: bool,
}

impl Trust {
    fn encode(self) -> Vec<u8> {
        let mut out = self.passes.to_be_bytes().to_vec();
        out.push(u8::from(self.reject));
        out
    }

    fn decode(raw: &[u8]) -> Option<Trust> {
        let (passes, reject) = raw.split_at_checked(4)?;
        Some(Trust {
            passes: u32::from_be_bytes(passes.try_into().ok()?),
            reject: match reject {
                [0] => false,
                [1] => true,
                _ => return None,
            },
        })
    }

    fn trusted(self, settings: &Settings) -> bool {
        self.passes >= settings.trust_after || (self.reject && self.passes >= 1)
    }
}

/// The greylister: its state in the screen's store, its time on the
/// injected clock, DMARC policies through the screen's DNS. Counts its
/// outcomes.
pub struct Greylister {
    store: Arc<dyn ScreenStore>,
    clock: Arc<dyn Clock>,
    dns: Option<Arc<dyn ScreenDns>>,
    counts: [AtomicU64; 5],
}

impl Greylister {
    /// A greylister on `store`, with time from `clock` and DMARC policies
    /// looked up through `dns` (absent: no domain is known to reject).
    pub fn new(
        store: Arc<dyn ScreenStore>,
        clock: Arc<dyn Clock>,
        dns: Option<Arc<dyn ScreenDns>>,
    ) -> Greylister {
        Greylister {
            store,
            clock,
            dns,
            counts: Default::default(),
        }
    }

    /// Decides `attempt` under `settings` and records it.
    pub async fn check(
        &self,
        settings: &Settings,
        attempt: &Attempt<'_>,
    ) -> Result<Decision, StateError> {
        let now = self.clock.unix_secs();
        let decision = self.decide(settings, attempt, now).await?;
        self.counts[decision.outcome().index()].fetch_add(1, Ordering::Relaxed);
        Ok(decision)
    }

    async fn decide(
        &self,
        settings: &Settings,
        attempt: &Attempt<'_>,
        now: u64,
    ) -> Result<Decision, StateError> {
        if let Some(domain) = attempt.spf_pass
            && self.trusted(settings, domain, now).await?
        {
            return Ok(Decision::Pass(Outcome::Trusted));
        }
        let key = match attempt.spf_pass {
            Some(domain) => key::pair(domain, attempt.recipient),
            None => key::triplet(attempt.ip, attempt.sender, attempt.recipient),
        };
        let delay = settings.delay.as_secs();
        let stored = self.store.get(Table::Greylist, &key, now).await?;
        match stored.as_ref().and_then(|s| State::decode(&s.value)) {
            None => {
                let state = State::Waiting { first: now };
                let expires = now.saturating_add(settings.retry_window.as_secs());
                self.put(&key, state.encode(), expires).await?;
                Ok(wait(Outcome::New, delay))
            }
            Some(State::Waiting { first }) if now < first.saturating_add(delay) => {
                Ok(wait(Outcome::Early, first.saturating_add(delay) - now))
            }
            Some(State::Waiting { first }) => {
                let state = State::Passed { first };
                let expires = now.saturating_add(settings.pass_ttl.as_secs());
                self.put(&key, state.encode(), expires).await?;
                if let Some(domain) = attempt.spf_pass {
                    self.count_pass(settings, domain, now).await?;
                }
                Ok(Decision::Pass(Outcome::Passed))
            }
            Some(State::Passed { .. }) => {
                if let Some(s) = stored {
                    self.refresh(&key, s, settings, now).await?;
                }
                Ok(Decision::Pass(Outcome::PassHit))
            }
        }
    }

    /// True when `domain` is trusted (its expiry pushed back if so).
    async fn trusted(
        &self,
        settings: &Settings,
        domain: &Domain,
        now: u64,
    ) -> Result<bool, StateError> {
        let key = key::trust(domain);
        let Some(stored) = self.store.get(Table::Greylist, &key, now).await? else {
            return Ok(false);
        };
        if !Trust::decode(&stored.value).is_some_and(|t| t.trusted(settings)) {
            return Ok(false);
        }
        self.refresh(&key, stored, settings, now).await?;
        Ok(true)
    }

    /// Counts a pass of `domain`, and asks its DMARC policy until it is
    /// known to be `p=reject` (a failed lookup is asked again next pass).
    async fn count_pass(
        &self,
        settings: &Settings,
        domain: &Domain,
        now: u64,
    ) -> Result<(), StateError> {
        let key = key::trust(domain);
        let stored = self.store.get(Table::Greylist, &key, now).await?;
        let mut trust = stored
            .and_then(|s| Trust::decode(&s.value))
            .unwrap_or_default();
        trust.passes = trust.passes.saturating_add(1);
        if !trust.reject && !trust.trusted(settings) {
            trust.reject = dmarc::domain_rejects(self.dns.as_deref(), domain.as_str()).await;
        }
        let expires = now.saturating_add(settings.pass_ttl.as_secs());
        self.put(&key, trust.encode(), expires).await
    }

    /// Pushes a pass's expiry back to `pass_ttl` from now, at most once
    /// per [`REFRESH_AFTER`].
    async fn refresh(
        &self,
        key: &[u8],
        stored: Stored,
        settings: &Settings,
        now: u64,
    ) -> Result<(), StateError> {
        let fresh = now.saturating_add(settings.pass_ttl.as_secs());
        if stored.expires.saturating_add(REFRESH_AFTER) > fresh {
            return Ok(());
        }
        self.put(key, stored.value, fresh).await
    }

    async fn put(&self, key: &[u8], value: Vec<u8>, expires: u64) -> Result<(), StateError> {
        self.store
            .put(Table::Greylist, key, Stored { value, expires })
            .await
    }

    /// The live triplets of `ip`'s network (its /24 or /64), at most
    /// [`MAX_LISTED`]; `delay` says when waiting entries pass.
    pub async fn entries(&self, ip: IpAddr, delay: Duration) -> Result<Vec<Entry>, StateError> {
        let now = self.clock.unix_secs();
        let prefix = key::network_prefix(ip);
        let found = self
            .store
            .scan_prefix(Table::Greylist, &prefix, now, MAX_LISTED)
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(k, stored)| {
                let state = State::decode(&stored.value)?;
                let (passed, first, passes_at) = match state {
                    State::Waiting { first } => {
                        (false, first, first.saturating_add(delay.as_secs()))
                    }
                    State::Passed { first } => (true, first, first),
                };
                Some(Entry {
                    key: key::describe(&k)?,
                    passed,
                    first_seen: first,
                    passes_at,
                    expires: stored.expires,
                })
            })
            .collect())
    }

    /// Removes the triplets of `ip`'s network (its /24 or /64); how many.
    pub async fn clear_network(&self, ip: IpAddr) -> Result<u64, StateError> {
        self.store
            .remove_prefix(Table::Greylist, &key::network_prefix(ip))
            .await
    }

    /// Removes `domain`'s verified pairs and its trust; how many entries.
    pub async fn clear_domain(&self, domain: &Domain) -> Result<u64, StateError> {
        let pairs = self
            .store
            .remove_prefix(Table::Greylist, &key::pair_prefix(domain))
            .await?;
        let trust = self
            .store
            .remove_prefix(Table::Greylist, &key::trust(domain))
            .await?;
        Ok(pairs + trust)
    }

    /// `portcullis_greylist_total{outcome}`.
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        for outcome in Outcome::ALL {
            w.counter(
                "portcullis_greylist_total",
                "Greylisting decisions by outcome (new and early were refused with 451 4.7.1).",
                &[("outcome", outcome.as_str())],
                self.counts[outcome.index()].load(Ordering::Relaxed),
            );
        }
    }
}

/// A refusal, retried in `secs` (at least one).
fn wait(outcome: Outcome, secs: u64) -> Decision {
    Decision::Wait {
        outcome,
        retry_in: Duration::from_secs(secs.max(1)),
    }
}

#[cfg(test)]
mod tests;
