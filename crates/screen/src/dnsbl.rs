//! DNS block and allow lists (RFC 5782): the query name (`4.3.2.1.zone`,
//! IPv6 in nibbles), the lookups of one client in every zone at once, the
//! score, and a cache that keeps each answer for its TTL.
//!
//! Threat model: the answers come from DNS, which the client does not
//! control but an on-path attacker, a hijacking resolver or a list's own
//! error replies can shape. So only answers inside 127.0.0.0/8 are
//! listings; error codes (127.255.255.0/24) and failures (timeout,
//! SERVFAIL) score nothing, are logged and are not cached: a DNS failure
//! never rejects mail. The cache is keyed on addresses clients choose, so
//! it is bounded ([`DEFAULT_CAPACITY`]) and evicts what expires soonest.

mod answer;
mod cache;
mod counters;
mod lookup;
mod name;
mod resolver_dns;
mod shared;
#[cfg(test)]
mod tests;

pub use answer::MAX_ANSWERS;
pub use lookup::{DEFAULT_NEGATIVE_TTL, MAX_NEGATIVE_TTL, MAX_TTL, MIN_TTL};
pub use name::{canonical_ip, query_name};
pub use resolver_dns::ResolverDns;
pub use shared::{SharedAnswer, SharedLists};

use cache::ListCache;
use counters::Counters;
use lookup::{Shared, ZoneResult, look_up};
use portcullis_types::{Clock, Domain};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// How many answers (client, zone) the cache holds at most by default:
/// about 10 MB at worst.
pub const DEFAULT_CAPACITY: usize = 50_000;

/// How long one zone's lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A client's standing on the configured lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListsVerdict {
    /// The sum of the weights of the lists it is on.
    pub score: i32,
    /// The lists it is on.
    pub hits: Vec<ListHit>,
    /// Lists whose lookup failed (timeout, SERVFAIL): they score nothing.
    pub failed: Vec<Domain>,
}

/// One list a client is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHit {
    /// The zone.
    pub zone: Domain,
    /// Its weight (negative: an allow list).
    pub weight: i32,
    /// The A records the list answered (`127.0.0.2`, ...).
    pub answers: Vec<Ipv4Addr>,
}

impl ListsVerdict {
    /// True when the client is on an allow list (never greylisted).
    pub fn allowlisted(&self) -> bool {
        self.hits.iter().any(|h| h.weight < 0)
    }

    /// The block list to name in the refusal when the score reaches
    /// `threshold` (the listed zone with the largest weight).
    pub fn blocked_by(&self, threshold: i32) -> Option<&Domain> {
        if self.score < threshold {
            return None;
        }
        self.hits
            .iter()
            .filter(|h| h.weight > 0)
            .max_by_key(|h| h.weight)
            .map(|h| &h.zone)
    }
}

/// The lookups of clients in the lists, with the cache shared by every
/// session (and kept across reloads: the lists to look up are passed per
/// call). Counts lookups by zone and outcome.
pub struct DnsLists {
    dns: Option<Arc<dyn crate::ScreenDns>>,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Cluster mode: the answers other nodes looked up.
    others: Option<Arc<dyn SharedLists>>,
}

impl DnsLists {
    /// Lookups through `dns` (absent: nothing is looked up, every verdict
    /// is empty), cache expiry on `clock`.
    pub fn new(dns: Option<Arc<dyn crate::ScreenDns>>, clock: Arc<dyn Clock>) -> DnsLists {
        DnsLists {
            dns,
            shared: Arc::new(Shared {
                cache: Mutex::new(ListCache::new(DEFAULT_CAPACITY)),
                counters: Counters::default(),
                clock,
            }),
            timeout: LOOKUP_TIMEOUT,
            others: None,
        }
    }

    /// Answers shared with the other nodes of a cluster: asked before a
    /// DNS query, given every answer kept.
    pub fn with_shared(self, others: Arc<dyn SharedLists>) -> DnsLists {
        DnsLists {
            others: Some(others),
            ..self
        }
    }

    /// At most `capacity` cached answers (default [`DEFAULT_CAPACITY`]).
    pub fn with_capacity(self, capacity: usize) -> DnsLists {
        self.shared.cache().set_capacity(capacity);
        self
    }

    /// Each zone's lookup bounded by `timeout` (default
    /// [`LOOKUP_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> DnsLists {
        DnsLists { timeout, ..self }
    }

    /// How many answers are cached now.
    pub fn cached(&self) -> usize {
        self.shared.cache().len()
    }

    /// `ip`'s verdict on `lists`, every zone looked up at once (answers
    /// cached for their TTL; a failure scores nothing and is logged).
    pub async fn verdict(&self, lists: &[portcullis_config::Dnsbl], ip: IpAddr) -> ListsVerdict {
        let Some(dns) = &self.dns else {
            return ListsVerdict::default();
        };
        let ip = canonical_ip(ip);
        let mut results: Vec<Option<ZoneResult>> = lists
            .iter()
            .map(|list| self.shared.cached(ip, &list.zone))
            .collect();
        // Dropping the verdict (the client went away) aborts the lookups.
        let mut tasks = JoinSet::new();
        for (i, list) in lists.iter().enumerate() {
            if results[i].is_none() {
                let lookup = look_up(
                    self.shared.clone(),
                    dns.clone(),
                    list.zone.clone(),
                    ip,
                    self.timeout,
                    self.others.clone(),
                );
                tasks.spawn(async move { (i, lookup.await) });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, result)) => results[i] = Some(result),
                // Left `None`: counted as failed below.
                Err(error) => tracing::warn!(client = %ip, %error, "dnsbl lookup task failed"),
            }
        }
        assemble(lists, results)
    }

    /// Forgets the cached answers for `ip`; how many.
    pub fn forget(&self, ip: IpAddr) -> u64 {
        self.shared.cache().forget(canonical_ip(ip))
    }

    /// In a cluster, removes the answers about `ip` the nodes share too
    /// (so the next lookup asks DNS); how many. 0 on a single node.
    pub async fn forget_shared(&self, ip: IpAddr) -> u64 {
        match &self.others {
            Some(others) => others.forget(canonical_ip(ip)).await,
            None => 0,
        }
    }

    /// `portcullis_dnsbl_lookups_total{zone,outcome}` (outcome `listed`,
    /// `not_listed`, `failed`, `ignored`, `cached`) and
    /// `portcullis_dnsbl_cache_entries`.
    pub fn render_metrics(&self, w: &mut portcullis_metrics::MetricsWriter) {
        let entries = self.cached();
        self.shared.counters.render(entries, w);
    }
}

/// The verdict from each list's result (in `lists`' order); a missing
/// result is a failure.
fn assemble(lists: &[portcullis_config::Dnsbl], results: Vec<Option<ZoneResult>>) -> ListsVerdict {
    let mut verdict = ListsVerdict::default();
    for (list, result) in lists.iter().zip(results) {
        match result {
            Some(ZoneResult::Listed(answers)) => {
                verdict.score = verdict.score.saturating_add(list.weight);
                verdict.hits.push(ListHit {
                    zone: list.zone.clone(),
                    weight: list.weight,
                    answers,
                });
            }
            Some(ZoneResult::NotListed) => {}
            Some(ZoneResult::Failed) | None => verdict.failed.push(list.zone.clone()),
        }
    }
    verdict
}
