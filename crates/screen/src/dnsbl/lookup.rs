//! One zone's lookup of one client: the query under a timeout, what the
//! answer means, how long it may be kept, the count and the log line.

use super::answer::{Reading, read};
use super::cache::{Cached, ListCache};
use super::counters::{Counters, Outcome};
use super::name::query_name;
use super::shared::{SharedAnswer, SharedLists};
use crate::ScreenDns;
use portcullis_dns::TtlError;
use portcullis_types::{Clock, Domain};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{debug, info, warn};

/// A listing is kept at least this long, whatever its TTL (a list with
/// TTL 0 would otherwise be asked at every connection).
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// A listing (or an ignored answer) is kept at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// "Not listed" is kept this long when DNS gave no negative TTL.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// "Not listed" is kept at most this long, so a client listed meanwhile is
/// seen within the hour.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// What one list said about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ZoneResult {
    /// Listed, with the list's answers.
    Listed(Vec<Ipv4Addr>),
    /// Not listed.
    NotListed,
    /// The lookup failed: scores nothing, never cached.
    Failed,
}

impl From<Cached> for ZoneResult {
    fn from(cached: Cached) -> ZoneResult {
        match cached {
            Cached::Listed(answers) => ZoneResult::Listed(answers),
            Cached::NotListed => ZoneResult::NotListed,
        }
    }
}

/// What every lookup shares: the cache, the counters, the clock.
pub(crate) struct Shared {
    pub(crate) cache: Mutex<ListCache>,
    pub(crate) counters: Counters,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Shared {
    /// The cache, even after a panic elsewhere (it holds no invariant a
    /// panic could break half-way that matters more than serving).
    pub(crate) fn cache(&self) -> MutexGuard<'_, ListCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer of `zone` for `ip`, counted as a cache hit.
    pub(crate) fn cached(&self, ip: IpAddr, zone: &Domain) -> Option<ZoneResult> {
        let now = self.clock.unix_millis();
        let hit = self.cache().get(ip, zone, now)?;
        self.counters.count(zone, Outcome::Cached);
        debug!(client = %ip, %zone, answer = ?hit, "dnsbl answer from the cache");
        Some(hit.into())
    }

    /// Keeps `result` (never a failure) for `ttl`.
    fn keep(&self, ip: IpAddr, zone: &Domain, result: &ZoneResult, ttl: Duration) {
        let value = match result {
            ZoneResult::Listed(answers) => Cached::Listed(answers.clone()),
            ZoneResult::NotListed => Cached::NotListed,
            ZoneResult::Failed => return,
        };
        let now = self.clock.unix_millis();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.cache()
            .insert(ip, zone, value, now.saturating_add(ttl_ms), now);
    }
}

/// Looks `ip` up in `zone`: in `others` first (cluster mode: an answer
/// another node looked up, kept here for the rest of its TTL and counted
/// as cached), else through `dns` within `timeout`; caches, shares and
/// counts the answer and logs what matters (listed, failed, ignored).
pub(crate) async fn look_up(
    shared: Arc<Shared>,
    dns: Arc<dyn ScreenDns>,
    zone: Domain,
    ip: IpAddr,
    timeout: Duration,
    others: Option<Arc<dyn SharedLists>>,
) -> ZoneResult {
    if let Some(others) = &others
        && let Some(answer) = others.get(ip, &zone).await
        && !answer.remaining.is_zero()
    {
        let result = match answer.listed {
            Some(answers) => ZoneResult::Listed(answers),
            None => ZoneResult::NotListed,
        };
        debug!(client = %ip, %zone, answer = ?result, "dnsbl answer from another node");
        shared.counters.count(&zone, Outcome::Cached);
        shared.keep(ip, &zone, &result, answer.remaining);
        return result;
    }
    let name = query_name(ip, &zone);
    let answer = match tokio::time::timeout(timeout, dns.ipv4_cacheable(&name)).await {
        Ok(answer) => answer,
        Err(_) => Err(TtlError::from(portcullis_dns::DnsError::Temporary {
            name,
            reason: format!("no answer within {timeout:?}"),
        })),
    };
    let (result, outcome, keep_for) = interpret(ip, &zone, answer);
    shared.counters.count(&zone, outcome);
    if let Some(ttl) = keep_for {
        shared.keep(ip, &zone, &result, ttl);
        let listed = match &result {
            ZoneResult::Listed(answers) => Some(Some(answers.clone())),
            ZoneResult::NotListed => Some(None),
            ZoneResult::Failed => None,
        };
        if let (Some(others), Some(listed)) = (&others, listed) {
            let answer = SharedAnswer {
                listed,
                remaining: ttl,
            };
            others.put(ip, &zone, answer).await;
        }
    }
    result
}

/// What a list's answer means for `ip`, how it is counted and how long it
/// may be kept (`None`: not at all); logs it.
fn interpret(
    ip: IpAddr,
    zone: &Domain,
    answer: Result<(Vec<Ipv4Addr>, Duration), TtlError>,
) -> (ZoneResult, Outcome, Option<Duration>) {
    let failed = (ZoneResult::Failed, Outcome::Failed, None);
    let (records, ttl) = match answer {
        Ok(positive) => positive,
        // RFC 5782 §2.1: NXDOMAIN is "not listed" (no A records too).
        Err(e) if e.error.is_not_found() => {
            debug!(client = %ip, %zone, "dnsbl: not listed");
            let ttl = e.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL);
            let ttl = ttl.clamp(MIN_TTL, MAX_NEGATIVE_TTL);
            return (ZoneResult::NotListed, Outcome::NotListed, Some(ttl));
        }
        // A DNS failure never rejects mail: it scores nothing.
        Err(e) => {
            warn!(client = %ip, %zone, error = %e.error, "dnsbl lookup failed; scores nothing");
            return failed;
        }
    };
    let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
    match read(&records) {
        Reading::Listed { answers, ignored } => {
            info!(client = %ip, %zone, answers = ?answers, ignored, "dnsbl: client listed");
            (ZoneResult::Listed(answers), Outcome::Listed, Some(ttl))
        }
        Reading::ListError(code) => {
            warn!(client = %ip, %zone, %code, "dnsbl refused the query (list error code); scores nothing");
            failed
        }
        Reading::Bogus(answers) => {
            warn!(
                client = %ip, %zone, answers = ?answers,
                "dnsbl answer outside 127.0.0.0/8 ignored (a resolver rewriting answers?)"
            );
            (ZoneResult::NotListed, Outcome::Ignored, Some(ttl))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_dns::DnsError;

    fn run(
        answer: Result<(Vec<Ipv4Addr>, Duration), TtlError>,
    ) -> (ZoneResult, Outcome, Option<Duration>) {
        let zone = Domain::parse("bl.test").unwrap();
        interpret("192.0.2.1".parse().unwrap(), &zone, answer)
    }

    fn nx(negative_ttl: Option<Duration>) -> Result<(Vec<Ipv4Addr>, Duration), TtlError> {
        Err(TtlError {
            error: DnsError::NxDomain {
                name: "1.2.0.192.bl.test".into(),
            },
            negative_ttl,
        })
    }

    const L2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    /// TTLs are kept within their bounds; failures are never kept.
    #[test]
    fn ttls_are_clamped_and_failures_not_kept() {
        let secs = Duration::from_secs;
        assert_eq!(run(Ok((vec![L2], secs(0)))).2, Some(MIN_TTL));
        assert_eq!(run(Ok((vec![L2], secs(900)))).2, Some(secs(900)));
        assert_eq!(run(Ok((vec![L2], secs(10 * 86400)))).2, Some(MAX_TTL));
        assert_eq!(run(nx(None)).2, Some(DEFAULT_NEGATIVE_TTL));
        assert_eq!(run(nx(Some(secs(1)))).2, Some(MIN_TTL));
        assert_eq!(run(nx(Some(secs(600)))).2, Some(secs(600)));
        assert_eq!(run(nx(Some(secs(86400)))).2, Some(MAX_NEGATIVE_TTL));
        let temp = Err(TtlError::from(DnsError::Temporary {
            name: "x".into(),
            reason: "SERVFAIL".into(),
        }));
        assert_eq!(run(temp), (ZoneResult::Failed, Outcome::Failed, None));
        let refused = Ok((vec![Ipv4Addr::new(127, 255, 255, 254)], secs(60)));
        assert_eq!(run(refused), (ZoneResult::Failed, Outcome::Failed, None));
    }
}
